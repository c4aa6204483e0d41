"""A cloud of the scenarios' own: a `stratus up` on its own data dir and port with chosen settings (a real compute
driver), driven with the real `openstack` CLI, and the helpers the real-driver scenarios share (waiting for a
status, reading the console, failing a build)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import CliResult

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path(os.environ.get("STRATUS_TEST_VM_IMAGES", REPO / "target" / "test-image"))
BOOT_TIMEOUT = 90


def _binary() -> Path:
    for candidate in (os.environ.get("STRATUS_BIN"), REPO / "target" / "release" / "stratus", REPO / "target" / "debug" / "stratus"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("no stratus binary")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCloud:
    """A `stratus up` with `settings` (STRATUS_* environment variables) and, if given, the configuration file text
    `config` (for settings the environment cannot spell, such as lists), on its own data dir and port."""

    def __init__(self, root: Path, settings: dict[str, str], config: str | None = None) -> None:
        self.root = root
        self.settings = settings
        self.config = config
        self.data = root / "data"
        self.port = _free_port()
        self.log = root / "stratus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.clouds = self.data / "clouds.yaml"

    def start(self) -> None:
        env = {**os.environ, "NO_COLOR": "1", **self.settings}
        cmd = [str(_binary()), "up", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}"]
        if self.config is not None:
            path = self.root / "stratus.toml"
            path.write_text(self.config)
            cmd += ["--config", str(path)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"stratus up exited:\n{self.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/identity/v3", timeout=2) as r:
                    if r.status == 200 and self.clouds.is_file():
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError("the cloud did not start")

    def kill(self) -> None:
        """Ends the whole cloud at once (SIGKILL): the agent gets no chance to clean anything up."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def qemu_pids(self, uuid: str = "") -> list[int]:
        """QEMU processes of this cloud's instances (of instance `uuid` if given)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmdline and str(self.data) in cmdline and uuid in cmdline:
                pids.append(int(proc.name))
        return sorted(pids)

    def remove_guests(self) -> None:
        """Ends what the cloud's drivers left running: its QEMU processes, and its containers with their mounts and
        network namespaces."""
        for pid in self.qemu_pids():
            os.kill(pid, signal.SIGKILL)
        self.remove_containers(self.data / "containers")

    @staticmethod
    def remove_containers(containers: Path) -> None:
        """Ends the containers a container driver with instances path `containers` left running, with their mounts
        and network namespaces."""
        runc = ["runc", "--root", str(containers / "_runtime")]
        listed = subprocess.run([*runc, "list", "--quiet"], capture_output=True, text=True)
        for uuid in listed.stdout.split() if listed.returncode == 0 else []:
            subprocess.run([*runc, "delete", "--force", uuid], capture_output=True)
            subprocess.run(["umount", "-l", str(containers / uuid / "rootfs")], capture_output=True)
            subprocess.run(["ip", "netns", "delete", f"ctr-{uuid}"], capture_output=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["OS_CLIENT_CONFIG_FILE"] = str(self.clouds)
        env["OS_CLOUD"] = "stratus-admin"
        return env


def running_cloud(cloud: LocalCloud, leftovers: Callable[[], None] = lambda: None,
                  ready: Callable[[], None] = lambda: None) -> Iterator[LocalCloud]:
    """Starts `cloud`, uploads the test images, calls `ready` (more of the scenario's own start), yields it;
    afterwards deletes its servers, stops it, ends the guests its drivers left running, calls `leftovers` (the
    scenario's own clean-up) and removes its files."""
    cloud.start()
    try:
        subprocess.run([str(REPO / "scripts" / "upload-test-image"), str(IMAGES)], env=cloud.env(), check=True,
                       capture_output=True, timeout=300)
        ready()
        yield cloud
    finally:
        try:
            if cloud.proc is not None and cloud.proc.poll() is None:
                ids = subprocess.run(["openstack", "server", "list", "-f", "value", "-c", "ID"], env=cloud.env(),
                                     capture_output=True, text=True, timeout=120).stdout.split()
                if ids:
                    subprocess.run(["openstack", "server", "delete", "--wait", *ids], env=cloud.env(),
                                   capture_output=True, timeout=300)
        finally:
            cloud.stop()
            cloud.remove_guests()
            leftovers()
            if os.environ.get("STRATUS_KEEP_LOCAL_CLOUD") != "1":
                shutil.rmtree(cloud.root, ignore_errors=True)


def missing(what: str, require_env: str) -> None:
    """Skips (or, when `require_env` is 1, fails) for want of `what`."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{what} is missing")
    pytest.skip(f"{what} is missing")


def new_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def cli(cloud: LocalCloud) -> Callable[..., CliResult]:
    exe = shutil.which("openstack")
    assert exe, "the openstack CLI is not on PATH; run the scenarios through acceptance/run"

    def run(*args: str, check: bool = True) -> CliResult:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, env=cloud.env(),
                              stdin=subprocess.DEVNULL)
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            pytest.fail(f"openstack {' '.join(args)} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return result

    return run


def show(os_cli, name: str) -> dict:
    return os_cli("server", "show", name, "-f", "json").json()


def wait(os_cli, name: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        server = show(os_cli, name)
        if server["status"] == status and not server.get("OS-EXT-STS:task_state"):
            return server
        assert server["status"] != "ERROR" or status == "ERROR", server.get("fault")
        assert time.monotonic() < deadline, f"{name} stayed {server['status']} ({server.get('OS-EXT-STS:task_state')})"
        time.sleep(0.5)


def console(os_cli, name: str, *extra: str) -> str:
    return os_cli("console", "log", "show", *extra, name).stdout


def wait_console(os_cli, name: str, needle: str, count: int = 1) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        out = console(os_cli, name)
        if out.count(needle) >= count:
            return out
        assert time.monotonic() < deadline, f"no {needle!r} (x{count}) on the console of {name}:\n{out[-2000:]}"
        time.sleep(0.5)


def power(server: dict) -> int:
    return int(server["OS-EXT-STS:power_state"]) if str(server["OS-EXT-STS:power_state"]).isdigit() else {
        "Running": 1, "Paused": 3, "Shutdown": 4, "Suspended": 7}[server["OS-EXT-STS:power_state"]]


def failed_build(os_cli, instances: Path, name: str, image: str) -> str:
    """Builds `name` from `image`, which must fail: ERROR, no files under `instances`, no host; returns the fault's
    message and details, after deleting the server."""
    created = os_cli("server", "create", "--image", image, "--flavor", "m1.nano", "--wait", name, check=False)
    assert created.returncode != 0
    server = wait(os_cli, name, "ERROR")
    assert not (instances / server["id"]).exists(), "a failed build leaves no files"
    assert not server.get("OS-EXT-SRV-ATTR:host"), "a failed build is on no host (its allocation is released)"
    fault = server.get("fault") or {}
    os_cli("server", "delete", "--wait", name)
    return fault.get("message", "") + " " + str(fault.get("details", ""))


def walk_power_states(os_cli, name: str, marker: str, stop_sign: str) -> None:
    """Takes a running server through upstream's power states with the CLI: stop (a clean one: `stop_sign` is on the
    console afterwards) and start, soft and hard reboot (a new `marker` each), pause and unpause, suspend and resume
    (which continue the guest: no new marker)."""
    os_cli("server", "stop", name)
    assert power(wait(os_cli, name, "SHUTOFF")) == 4
    os_cli("server", "start", name)
    assert power(wait(os_cli, name, "ACTIVE")) == 1
    assert stop_sign in wait_console(os_cli, name, marker, 2), "stop is a clean shutdown"
    os_cli("server", "reboot", name)
    wait(os_cli, name, "ACTIVE")
    wait_console(os_cli, name, marker, 3)
    os_cli("server", "reboot", "--hard", name)
    wait(os_cli, name, "ACTIVE")
    wait_console(os_cli, name, marker, 4)
    os_cli("server", "pause", name)
    assert power(wait(os_cli, name, "PAUSED")) == 3
    os_cli("server", "unpause", name)
    assert power(wait(os_cli, name, "ACTIVE")) == 1
    os_cli("server", "suspend", name)
    assert power(wait(os_cli, name, "SUSPENDED")) == 7
    os_cli("server", "resume", name)
    assert power(wait(os_cli, name, "ACTIVE")) == 1
    assert console(os_cli, name).count(marker) == 4, "resume continues the guest, it does not start it again"


def managed_after_restart(os_cli, name: str, pid: int) -> None:
    """After the cloud restarted under the running server `name` (whose guest process is `pid`): it is ACTIVE and
    takes actions; once its process is killed the power-state sync makes it SHUTOFF, as upstream, and it starts
    again. Deletes it."""
    assert power(wait(os_cli, name, "ACTIVE")) == 1
    os_cli("server", "pause", name)
    wait(os_cli, name, "PAUSED")
    os_cli("server", "unpause", name)
    wait(os_cli, name, "ACTIVE")
    os.kill(pid, signal.SIGKILL)
    assert power(wait(os_cli, name, "SHUTOFF", timeout=30)) == 4
    os_cli("server", "start", name)
    wait(os_cli, name, "ACTIVE")
    os_cli("server", "delete", "--wait", name)
