#!/usr/bin/env python3
"""The acceptance loop of Stratus, run by `acceptance/run` inside acceptance/.work/venv.

1. find the stratus binary ($STRATUS_BIN, target/release/stratus, target/debug/stratus; built only if none);
2. start `stratus up` on a fresh data directory and a free loopback port, wait until /identity/v3 answers;
3. run the CLI scenarios (pytest, acceptance/scenarios/) against it with the real `openstack` CLI;
4. run Tempest: a workspace under .work/tempest, tempest.conf generated from the running cloud, tests selected
   from the interop list (restricted to the services in the catalog) or by --tempest-regex;
5. print pass/fail/skip per service, save failing ids to .work/last-failures.txt;
6. exit non-zero if a CLI scenario failed or a test of tempest-must-pass.txt did not pass.

The server is always stopped on the way out; its log tail is printed when something went wrong.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import tempestconf

# Tempest's lockout test waits out the lockout; keep it short here. The server and tempest.conf both read this.
os.environ.setdefault("STRATUS_IDENTITY__LOCKOUT_DURATION", "10")
# Images in two stores (files and the object store) with copy-image, so Tempest's multi-store tests run.
os.environ.setdefault("STRATUS_IMAGE__ENABLED_BACKENDS", "[file, object]")
os.environ.setdefault("STRATUS_IMAGE__ENABLED_IMPORT_METHODS", "[glance-direct, copy-image]")

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
VENV_BIN = WORK / "venv" / "bin"
DATA_DIR = WORK / "cloud"
SERVER_LOG = WORK / "stratus.log"
TEMPEST_DIR = WORK / "tempest"
TEMPEST_WORKSPACES = WORK / "tempest-workspaces.yaml"
TEMPEST_GLOBAL_ETC = WORK / "tempest-global-etc"  # empty: keeps `tempest init` away from ~/.tempest and /etc
INCLUDE_LIST = WORK / "tempest-include.txt"
SCENARIO_XML = WORK / "scenarios.xml"
FAILURES = WORK / "last-failures.txt"
MUST_PASS = HERE / "tempest-must-pass.txt"

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SCENARIO_TIMEOUT = 1500
TEMPEST_TIMEOUT = 4 * 3600

PASS, FAIL, SKIP = "pass", "fail", "skip"


class Abort(Exception):
    """The loop cannot go on; the message says why."""


def log(msg: str) -> None:
    print(f"acceptance: {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------- the server


def repo_root() -> Path:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=HERE, capture_output=True, text=True, check=True
        )
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return HERE.parent


def find_binary(root: Path) -> Path:
    explicit = os.environ.get("STRATUS_BIN")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise Abort(f"STRATUS_BIN={explicit} is not an executable file")
        return path
    target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
    for candidate in (target / "release" / "stratus", target / "debug" / "stratus"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    log("no stratus binary found; running `cargo build -p stratus`")
    if subprocess.run(["cargo", "build", "-p", "stratus"], cwd=root).returncode != 0:
        raise Abort("cargo build -p stratus failed")
    return target / "debug" / "stratus"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get_status(url: str, timeout: float = 2.0) -> int | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


@dataclass
class Server:
    binary: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    logfile: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if DATA_DIR.exists():
            shutil.rmtree(DATA_DIR)
        DATA_DIR.mkdir(parents=True)
        self.logfile = SERVER_LOG.open("wb")
        cmd = [str(self.binary), "up", "--data-dir", str(DATA_DIR), "--listen", f"127.0.0.1:{self.port}"]
        log(f"starting {' '.join(cmd)} (log: {SERVER_LOG})")
        # Own session: a Ctrl-C on the terminal reaches us, and we stop the server ourselves.
        env = {**os.environ, "NO_COLOR": "1"}  # the log is a file: no terminal colours
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.logfile, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        probe = f"{self.url}/identity/v3"
        clouds = DATA_DIR / "clouds.yaml"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise Abort(f"stratus up exited with status {code} before it was ready")
            if http_get_status(probe) == 200 and clouds.is_file():
                log(f"cloud ready at {self.url}")
                return
            time.sleep(0.25)
        raise Abort(f"stratus up did not serve {probe} with 200 (and write {clouds}) within {timeout:.0f} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"stratus did not stop within {STOP_TIMEOUT:.0f} s; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if self.logfile is not None:
            self.logfile.close()
            self.logfile = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = SERVER_LOG.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


def client_env(server: Server) -> dict[str, str]:
    """The environment of every client process: only our clouds.yaml, no proxies for loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OS_CLIENT_CONFIG_FILE"] = str(DATA_DIR / "clouds.yaml")
    env["STRATUS_URL"] = server.url
    env["STRATUS_DATA_DIR"] = str(DATA_DIR)
    no_proxy = ",".join(filter(None, [env.get("no_proxy", ""), "127.0.0.1", "localhost"]))
    env["no_proxy"] = env["NO_PROXY"] = no_proxy
    return env


# ------------------------------------------------------------------------------------------------- results


@dataclass
class Tally:
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)

    def add(self, group: str, outcome: str, test_id: str) -> None:
        self.counts[group][outcome] += 1
        if outcome == FAIL:
            self.failures.append(test_id)

    def total(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for c in self.counts.values():
            out.update(c)
        return out


def read_junit(path: Path) -> Tally:
    tally = Tally()
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise Abort(f"pytest wrote no readable report ({path}: {e})") from e
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = FAIL
        elif case.find("skipped") is not None:
            outcome = SKIP
        else:
            outcome = PASS
        tally.add("cli scenarios", outcome, test_id)
    return tally


SETUP_RE = re.compile(r"^\w+ \((?P<name>[\w.]+)\)$")  # e.g. "setUpClass (tempest.api.identity....Class)"
ATTRS_RE = re.compile(r"\[[^\]]*\]$")


def base_name(test_id: str) -> str:
    """A Tempest test id without its `[id-…,smoke]` attributes."""
    return ATTRS_RE.sub("", test_id.strip())


def group_of(test_id: str) -> str:
    m = SETUP_RE.match(test_id)
    parts = (m.group("name") if m else base_name(test_id)).split(".")
    if parts[:2] == ["tempest", "api"] and len(parts) > 2:
        return f"tempest.api.{parts[2]}"
    if parts[:2] == ["tempest", "scenario"]:
        return "tempest.scenario"
    return ".".join(parts[:2])


def read_subunit(stream: bytes) -> dict[str, str]:
    """Final outcome per test id of a subunit v2 stream."""
    import subunit
    import testtools

    outcomes: dict[str, str] = {}
    mapping = {"success": PASS, "xfail": PASS, "skip": SKIP}

    def on_test(test: dict[str, Any]) -> None:
        status = test.get("status")
        if status == "exists":  # listed, not run
            return
        outcomes[test["id"]] = mapping.get(status or "", FAIL)

    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        subunit.ByteStreamToStreamResult(io.BytesIO(stream), non_subunit_name="stdout").run(result)
    finally:
        result.stopTestRun()
    return outcomes


# ------------------------------------------------------------------------------------------------- scenarios


def run_scenarios(env: dict[str, str], keyword: str | None) -> Tally:
    SCENARIO_XML.unlink(missing_ok=True)
    cmd = [
        str(VENV_BIN / "python"), "-m", "pytest", str(HERE / "scenarios"),
        "--rootdir", str(HERE), "-p", "no:cacheprovider", "-o", "junit_family=xunit2",
        f"--junitxml={SCENARIO_XML}", "-rfE",
    ]  # fmt: skip
    if keyword:
        cmd += ["-k", keyword]
    log("running the CLI scenarios")
    try:
        code = subprocess.run(cmd, cwd=HERE, env=env, timeout=SCENARIO_TIMEOUT).returncode
    except subprocess.TimeoutExpired as e:
        raise Abort(f"the CLI scenarios did not finish within {SCENARIO_TIMEOUT} s") from e
    if code not in (0, 1):  # 1 = some tests failed; anything else is a broken run
        raise Abort(f"pytest exited with status {code}")
    return read_junit(SCENARIO_XML)


# ------------------------------------------------------------------------------------------------- tempest


def read_id_list(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def id_regex(test_id: str) -> str:
    """A regex selecting exactly this test, with whatever attributes it carries."""
    return f"^{re.escape(base_name(test_id))}(\\[|$)"


def ensure_workspace() -> None:
    if (TEMPEST_DIR / ".stestr.conf").is_file():
        return
    log(f"creating the Tempest workspace {TEMPEST_DIR}")
    if TEMPEST_DIR.exists():  # left over from an interrupted init
        shutil.rmtree(TEMPEST_DIR)
    TEMPEST_GLOBAL_ETC.mkdir(parents=True, exist_ok=True)
    cmd = [str(VENV_BIN / "tempest"), "init", "--config-dir", str(TEMPEST_GLOBAL_ETC)]
    cmd += ["--workspace-path", str(TEMPEST_WORKSPACES), "--name", "stratus", str(TEMPEST_DIR)]
    if subprocess.run(cmd, cwd=WORK, stdin=subprocess.DEVNULL).returncode != 0:
        raise Abort("tempest init failed")


def next_stestr_run() -> str | None:
    try:
        return (TEMPEST_DIR / ".stestr" / "next-stream").read_text().strip()
    except OSError:
        return None


@dataclass
class TempestRun:
    tally: Tally
    outcomes: dict[str, str]
    must_pass_checked: list[str]
    must_pass_broken: list[tuple[str, str]]


def run_tempest(env: dict[str, str], args: argparse.Namespace, conformance: Path) -> TempestRun:
    ensure_workspace()
    conf = TEMPEST_DIR / "etc" / "tempest.conf"
    try:
        cloud = tempestconf.generate(Path(env["OS_CLIENT_CONFIG_FILE"]), "stratus-admin", TEMPEST_DIR, conf)
    except tempestconf.ConfError as e:
        raise Abort(f"cannot generate tempest.conf: {e}") from e
    services = sorted(cloud.endpoints)
    log(f"wrote {conf}; catalog services: {', '.join(services) or 'none'}")

    must_pass = read_id_list(MUST_PASS) if MUST_PASS.is_file() else []
    selection: list[str]
    if args.tempest_regex:
        selection = ["--regex", args.tempest_regex]
        selected = re.compile(args.tempest_regex)
        must_pass_checked = [t for t in must_pass if selected.search(t) or selected.search(base_name(t))]
    else:
        if not conformance.is_file():
            raise Abort(f"conformance list not found: {conformance}")
        wanted = read_id_list(conformance)
        if args.tempest_scope == "catalog":
            modules = tempestconf.tempest_modules(services)
            wanted = [t for t in wanted if any(t.startswith(m + ".") for m in modules)]
        must_pass_checked = must_pass
        regexes = sorted({id_regex(t) for t in wanted + must_pass})
        if not regexes:
            log("no Tempest test selected (no catalog service has tests in the conformance list)")
            return TempestRun(Tally(), {}, [], [(t, "not run") for t in must_pass])
        INCLUDE_LIST.write_text("\n".join(regexes) + "\n")
        selection = ["--include-list", str(INCLUDE_LIST)]
        log(f"selected {len(regexes)} Tempest tests ({args.tempest_scope} scope, list {conformance.name})")

    run_id = next_stestr_run()
    cmd = [str(VENV_BIN / "tempest"), "run", "--config-file", str(conf), "--concurrency", str(args.concurrency)]
    cmd += selection
    log(f"running Tempest: {' '.join(cmd[1:])}")
    try:
        code = subprocess.run(cmd, cwd=TEMPEST_DIR, env=env, stdin=subprocess.DEVNULL, timeout=TEMPEST_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise Abort(f"Tempest did not finish within {TEMPEST_TIMEOUT} s") from e
    if run_id is not None and not (TEMPEST_DIR / ".stestr" / run_id).is_file():
        raise Abort(f"Tempest exited with status {code.returncode} without recording a test run")
    last = subprocess.run(
        [str(VENV_BIN / "stestr"), "last", "--subunit"], cwd=TEMPEST_DIR, env=env, capture_output=True
    )
    if last.returncode != 0 and not last.stdout:
        raise Abort(f"stestr last --subunit failed: {last.stderr.decode(errors='replace').strip()}")
    outcomes = read_subunit(last.stdout)
    if not outcomes:
        raise Abort(f"Tempest exited with status {code.returncode} and ran no test")

    tally = Tally()
    for test_id, outcome in sorted(outcomes.items()):
        tally.add(group_of(test_id), outcome, test_id)
    by_name = {base_name(t): o for t, o in outcomes.items()}
    broken = []
    for t in must_pass_checked:
        found = by_name.get(base_name(t))
        if found != PASS:
            broken.append((t, {SKIP: "skipped", FAIL: "failed"}.get(found or "", "not run")))
    return TempestRun(tally, outcomes, must_pass_checked, broken)


# ------------------------------------------------------------------------------------------------- summary


def print_summary(scenarios: Tally | None, tempest: TempestRun | None) -> None:
    rows: list[tuple[str, Counter[str]]] = []
    if scenarios is not None:
        rows += sorted(scenarios.counts.items()) or [("cli scenarios", Counter())]
    if tempest is not None:
        rows += sorted(tempest.tally.counts.items())
        if tempest.tally.counts:
            rows.append(("tempest total", tempest.tally.total()))
    width = max([len(name) for name, _ in rows] + [len("suite")])
    print()
    print("Acceptance summary")
    print(f"  {'suite':<{width}}  {'pass':>5}  {'fail':>5}  {'skip':>5}")
    for name, c in rows:
        print(f"  {name:<{width}}  {c[PASS]:>5}  {c[FAIL]:>5}  {c[SKIP]:>5}")
    if tempest is not None:
        checked = len(tempest.must_pass_checked)
        if tempest.must_pass_broken:
            print(f"  must-pass: {len(tempest.must_pass_broken)} of {checked} did not pass:")
            for test_id, why in tempest.must_pass_broken:
                print(f"    {why}: {test_id}")
        elif checked:
            print(f"  must-pass: all {checked} passed")
        else:
            print(f"  must-pass: none selected ({MUST_PASS.name} lists no test of this run)")
    print()


def write_failures(scenarios: Tally | None, tempest: TempestRun | None) -> None:
    ids = (scenarios.failures if scenarios else []) + (tempest.tally.failures if tempest else [])
    FAILURES.write_text("".join(f"{t}\n" for t in ids))
    if ids:
        log(f"{len(ids)} failing test ids saved to {FAILURES}")


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="acceptance/run", description="Run the Stratus acceptance loop.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--no-tempest", action="store_true", help="run only the CLI scenarios")
    what.add_argument("--only-tempest", action="store_true", help="run only Tempest")
    p.add_argument("--tempest-regex", metavar="REGEX", help="run the Tempest tests matching REGEX instead of the list")
    p.add_argument(
        "--tempest-scope",
        choices=["catalog", "all"],
        default="catalog",
        help="catalog (default): only the listed tests of services in the catalog; all: the whole list",
    )
    p.add_argument("--concurrency", type=int, default=3, help="Tempest workers (default 3)")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression for the CLI scenarios")
    p.add_argument(
        "--conformance-list",
        type=Path,
        help="Tempest id list (default: <repo>/../shared/conformance/interop-platform-union.txt)",
    )
    args = p.parse_args(argv)
    if args.no_tempest and args.tempest_regex:
        p.error("--tempest-regex makes no sense with --no-tempest")
    if args.tempest_regex:
        try:
            re.compile(args.tempest_regex)
        except re.error as e:
            p.error(f"--tempest-regex is not a valid regex: {e}")
    return args


def _raise_on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    WORK.mkdir(parents=True, exist_ok=True)
    root = repo_root()
    conformance = args.conformance_list or root.parent / "shared" / "conformance" / "interop-platform-union.txt"

    server: Server | None = None
    ok = False
    scenarios: Tally | None = None
    tempest: TempestRun | None = None
    try:
        server = Server(find_binary(root), free_port())
        server.start()
        server.wait_ready()
        env = client_env(server)
        if not args.only_tempest:
            scenarios = run_scenarios(env, args.keyword)
        if not args.no_tempest:
            tempest = run_tempest(env, args, conformance)
        print_summary(scenarios, tempest)
        write_failures(scenarios, tempest)
        problems = []
        if scenarios and scenarios.failures:
            problems.append(f"{len(scenarios.failures)} CLI scenario(s) failed")
        if tempest and tempest.must_pass_broken:
            problems.append(f"{len(tempest.must_pass_broken)} must-pass Tempest test(s) did not pass")
        ok = not problems
        log("OK" if ok else "FAILED: " + "; ".join(problems))
        return 0 if ok else 1
    except Abort as e:
        if scenarios is not None:
            print_summary(scenarios, None)
            write_failures(scenarios, None)
        log(f"ERROR: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if server is not None:
            server.stop()
            if not ok:
                print(f"----- last lines of {SERVER_LOG} -----\n{server.log_tail()}\n-----", flush=True)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
