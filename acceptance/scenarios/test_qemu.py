"""Real virtual machines: a second cloud whose compute agent runs the `qemu` driver under TCG, driven with the real
`openstack` CLI. It boots the test VM image (`cargo xtask image build`, uploaded by scripts/upload-test-image as
DevStack uploads CirrOS), reads the boot marker and the host name from the config drive on the console, walks the
lifecycle through upstream's states, snapshots, restarts the agent under running guests, and fails bad builds
with a fault. Skipped when QEMU or the image is missing, unless STRATUS_TEST_REQUIRE_QEMU=1."""

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
from typing import Iterator

import pytest

from conftest import CliResult

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path(os.environ.get("STRATUS_TEST_VM_IMAGES", REPO / "target" / "test-image"))
MARKER = "STRATUS-TEST-VM-READY"
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


class QemuCloud:
    """A `stratus up` whose compute agent runs the qemu driver, on its own data dir and port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.log = root / "stratus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.clouds = self.data / "clouds.yaml"

    def start(self) -> None:
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "STRATUS_COMPUTE_AGENT__DRIVER": "qemu",
            "STRATUS_COMPUTE_AGENT__QEMU__VIRT_TYPE": "qemu",
            "STRATUS_COMPUTE_AGENT__QEMU__SHUTDOWN_TIMEOUT": "20",
            "STRATUS_COMPUTE_AGENT__SYNC_POWER_STATE_INTERVAL": "2",
        }
        cmd = [str(_binary()), "up", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}"]
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
        raise AssertionError("the qemu cloud did not start")

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

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["OS_CLIENT_CONFIG_FILE"] = str(self.clouds)
        env["OS_CLOUD"] = "stratus-admin"
        return env

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


@pytest.fixture(scope="module")
def cloud() -> Iterator[QemuCloud]:
    have_qemu = shutil.which("qemu-system-x86_64") is not None
    if not have_qemu or not (IMAGES / "stratus-test-vm.qcow2").is_file():
        if os.environ.get("STRATUS_TEST_REQUIRE_QEMU") == "1":
            pytest.fail("QEMU or the test VM image is missing (scripts/install-qemu, cargo xtask image build)")
        pytest.skip("QEMU or the test VM image is missing (scripts/install-qemu, cargo xtask image build)")
    root = Path(tempfile.mkdtemp(prefix="stratus-qemu-"))
    c = QemuCloud(root)
    c.start()
    try:
        subprocess.run([str(REPO / "scripts" / "upload-test-image"), str(IMAGES)], env=c.env(), check=True,
                       capture_output=True, timeout=300)
        yield c
    finally:
        try:
            if c.proc is not None and c.proc.poll() is None:
                ids = subprocess.run(["openstack", "server", "list", "-f", "value", "-c", "ID"], env=c.env(),
                                     capture_output=True, text=True, timeout=120).stdout.split()
                if ids:
                    subprocess.run(["openstack", "server", "delete", "--wait", *ids], env=c.env(), capture_output=True,
                                   timeout=300)
        finally:
            c.stop()
            for pid in c.qemu_pids():
                os.kill(pid, signal.SIGKILL)
            if os.environ.get("STRATUS_KEEP_QEMU_CLOUD") != "1":
                shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def os_cli(cloud: QemuCloud):
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


def _show(os_cli, name: str) -> dict:
    return os_cli("server", "show", name, "-f", "json").json()


def _wait(os_cli, name: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        server = _show(os_cli, name)
        if server["status"] == status and not server.get("OS-EXT-STS:task_state"):
            return server
        assert server["status"] != "ERROR" or status == "ERROR", server.get("fault")
        assert time.monotonic() < deadline, f"{name} stayed {server['status']} ({server.get('OS-EXT-STS:task_state')})"
        time.sleep(0.5)


def _console(os_cli, name: str, *extra: str) -> str:
    return os_cli("console", "log", "show", *extra, name).stdout


def _wait_console(os_cli, name: str, needle: str, count: int = 1) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        out = _console(os_cli, name)
        if out.count(needle) >= count:
            return out
        assert time.monotonic() < deadline, f"no {needle!r} (x{count}) on the console of {name}:\n{out[-2000:]}"
        time.sleep(1)


def _power(server: dict) -> int:
    return int(server["OS-EXT-STS:power_state"]) if str(server["OS-EXT-STS:power_state"]).isdigit() else {
        "Running": 1, "Paused": 3, "Shutdown": 4, "Suspended": 7}[server["OS-EXT-STS:power_state"]]


def test_a_vm_boots_and_goes_through_its_lifecycle(os_cli, cloud: QemuCloud) -> None:
    started = time.monotonic()
    server = os_cli("server", "create", "--image", "stratus-test-vm", "--flavor", "m1.nano", "--config-drive", "true",
                    "--wait", "qvm-one", "-f", "json").json()
    active = time.monotonic() - started
    assert server["status"] == "ACTIVE" and _power(server) == 1, server
    console = _wait_console(os_cli, "qvm-one", "hostname: qvm-one")
    print(f"API call to ACTIVE {active:.1f} s, to boot marker {time.monotonic() - started:.1f} s")
    assert MARKER in console and "config drive found" in console, console
    assert _console(os_cli, "qvm-one", "--lines", "2").strip().splitlines()[-1] == "hostname: qvm-one"
    hyp = os_cli("hypervisor", "list", "-f", "json").json()
    assert hyp[0]["Hypervisor Type"] == "QEMU", hyp

    os_cli("server", "stop", "qvm-one")
    assert _power(_wait(os_cli, "qvm-one", "SHUTOFF")) == 4
    os_cli("server", "start", "qvm-one")
    assert _power(_wait(os_cli, "qvm-one", "ACTIVE")) == 1
    assert "power button pressed" in _wait_console(os_cli, "qvm-one", MARKER, 2), "stop is a clean ACPI shutdown"
    os_cli("server", "reboot", "qvm-one")
    _wait(os_cli, "qvm-one", "ACTIVE")
    _wait_console(os_cli, "qvm-one", MARKER, 3)
    os_cli("server", "reboot", "--hard", "qvm-one")
    _wait(os_cli, "qvm-one", "ACTIVE")
    _wait_console(os_cli, "qvm-one", MARKER, 4)
    os_cli("server", "pause", "qvm-one")
    assert _power(_wait(os_cli, "qvm-one", "PAUSED")) == 3
    os_cli("server", "unpause", "qvm-one")
    assert _power(_wait(os_cli, "qvm-one", "ACTIVE")) == 1
    os_cli("server", "suspend", "qvm-one")
    assert _power(_wait(os_cli, "qvm-one", "SUSPENDED")) == 7
    os_cli("server", "resume", "qvm-one")
    assert _power(_wait(os_cli, "qvm-one", "ACTIVE")) == 1
    assert _console(os_cli, "qvm-one").count(MARKER) == 4, "resume continues the guest, it does not boot it again"

    # A snapshot is an image that boots again.
    image = os_cli("server", "image", "create", "--name", "qvm-one-snap", "--wait", "qvm-one", "-f", "json").json()
    assert image["status"] == "active" and image["disk_format"] == "qcow2", image
    os_cli("server", "create", "--image", "qvm-one-snap", "--flavor", "m1.nano", "--config-drive", "true", "--wait",
           "qvm-two")
    _wait_console(os_cli, "qvm-two", "hostname: qvm-two")

    # Delete leaves no process and no file of the instance.
    uuid = _show(os_cli, "qvm-one")["id"]
    assert (cloud.data / "instances" / uuid).is_dir()
    os_cli("server", "delete", "--wait", "qvm-one")
    assert not (cloud.data / "instances" / uuid).exists()
    assert not cloud.qemu_pids(uuid)


def test_a_kernel_and_ramdisk_image_boots_directly(os_cli) -> None:
    os_cli("server", "create", "--image", "stratus-test-vm-uec", "--flavor", "m1.nano", "--config-drive", "true",
           "--wait", "qvm-uec")
    console = _wait_console(os_cli, "qvm-uec", "hostname: qvm-uec")
    assert MARKER in console
    os_cli("server", "delete", "--wait", "qvm-uec")


def test_guests_outlive_an_agent_restart_and_dead_guests_show_shutoff(os_cli, cloud: QemuCloud) -> None:
    os_cli("server", "create", "--image", "stratus-test-vm", "--flavor", "m1.nano", "--wait", "qvm-three")
    uuid = _show(os_cli, "qvm-three")["id"]
    pids = cloud.qemu_pids()
    assert pids, "the guests run"
    cloud.kill()
    assert cloud.qemu_pids() == pids, "killing the cloud and its agent leaves the guests running"
    cloud.start()
    server = _wait(os_cli, "qvm-three", "ACTIVE")
    assert _power(server) == 1
    os_cli("server", "pause", "qvm-three")
    _wait(os_cli, "qvm-three", "PAUSED")
    os_cli("server", "unpause", "qvm-three")
    _wait(os_cli, "qvm-three", "ACTIVE")
    # A guest that dies is found by the power-state sync: the instance becomes SHUTOFF, as upstream.
    [pid] = cloud.qemu_pids(uuid)
    os.kill(pid, signal.SIGKILL)
    assert _power(_wait(os_cli, "qvm-three", "SHUTOFF", timeout=30)) == 4
    os_cli("server", "start", "qvm-three")
    _wait(os_cli, "qvm-three", "ACTIVE")
    os_cli("server", "delete", "--wait", "qvm-three")


def _failed_build(os_cli, cloud: QemuCloud, name: str, image: str) -> str:
    created = os_cli("server", "create", "--image", image, "--flavor", "m1.nano", "--wait", name, check=False)
    assert created.returncode != 0
    server = _wait(os_cli, name, "ERROR")
    assert not (cloud.data / "instances" / server["id"]).exists(), "a failed build leaves no files"
    assert not server.get("OS-EXT-SRV-ATTR:host"), "a failed build is on no host (its allocation is released)"
    fault = server.get("fault") or {}
    os_cli("server", "delete", "--wait", name)
    return fault.get("message", "") + " " + str(fault.get("details", ""))


def test_bad_images_and_flavors_end_in_error_with_a_fault(os_cli, cloud: QemuCloud, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.qcow2"
    garbage.write_bytes(os.urandom(256 * 1024))
    os_cli("image", "create", "qvm-corrupt", "--disk-format", "qcow2", "--container-format", "bare",
           "--file", str(garbage))
    os_cli("image", "create", "qvm-vhdx", "--disk-format", "vhdx", "--container-format", "bare",
           "--file", str(garbage))
    big = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "3G"], check=True)
    os_cli("image", "create", "qvm-big", "--disk-format", "qcow2", "--container-format", "bare", "--file", str(big))

    assert "corrupt" in _failed_build(os_cli, cloud, "qvm-bad-1", "qvm-corrupt")
    assert "cannot boot" in _failed_build(os_cli, cloud, "qvm-bad-2", "qvm-vhdx")
    assert "Flavor's disk is too small" in _failed_build(os_cli, cloud, "qvm-bad-3", "qvm-big")
    # An image that asks for more memory than the flavor has is refused by the API, as upstream.
    os_cli("image", "set", "--min-ram", "4096", "qvm-big")
    refused = os_cli("server", "create", "--image", "qvm-big", "--flavor", "m1.nano", "qvm-bad-4", check=False)
    assert refused.returncode != 0 and "memory is too small" in refused.stderr, refused.stderr
