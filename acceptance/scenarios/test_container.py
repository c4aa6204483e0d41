"""Real containers: a cloud of its own whose compute agent runs the `container` driver (runc), driven with the real
`openstack` CLI. It runs the test container image (`cargo xtask image build`, uploaded by scripts/upload-test-image
with container format `docker`), reads the ready marker and the host name from the config drive on the console,
walks the lifecycle through upstream's states, snapshots, restarts the agent under running containers, and fails
bad builds with a fault. Skipped when runc or the image is missing, unless STRATUS_TEST_REQUIRE_CONTAINERS=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from localcloud import IMAGES, LocalCloud, cli, console, failed_build, missing, new_root, power, managed_after_restart, running_cloud, show, wait_console, walk_power_states

MARKER = "STRATUS-TEST-CONTAINER-READY"


class ContainerCloud(LocalCloud):
    """A `stratus up` whose compute agent runs the container driver."""

    def __init__(self) -> None:
        super().__init__(new_root("stratus-ctr-"), {
            "STRATUS_COMPUTE_AGENT__DRIVER": "container",
            "STRATUS_COMPUTE_AGENT__CONTAINER__STOP_TIMEOUT": "5",
            "STRATUS_COMPUTE_AGENT__SYNC_POWER_STATE_INTERVAL": "2",
        })
        self.instances = self.data / "containers"

    def runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runc", "--root", str(self.instances / "_runtime"), *args], capture_output=True, text=True,
                              timeout=30)

    def pid(self, uuid: str) -> int | None:
        """The first process of the instance's container, when it runs."""
        state = self.runc("state", uuid)
        if state.returncode != 0:
            return None
        doc = json.loads(state.stdout)
        return doc["pid"] if doc["status"] in ("running", "paused") else None


@pytest.fixture(scope="module")
def cloud() -> Iterator[ContainerCloud]:
    if shutil.which("runc") is None or not (IMAGES / "stratus-test-container.tar").is_file():
        missing("runc or the test container image (scripts/host-tools, cargo xtask image build)",
                "STRATUS_TEST_REQUIRE_CONTAINERS")
    yield from running_cloud(ContainerCloud())


@pytest.fixture(scope="module")
def os_cli(cloud: ContainerCloud):
    return cli(cloud)


def test_a_container_runs_and_goes_through_its_lifecycle(os_cli, cloud: ContainerCloud) -> None:
    started = time.monotonic()
    server = os_cli("server", "create", "--image", "stratus-test-container", "--flavor", "m1.nano", "--wait",
                    "ctr-one", "-f", "json").json()
    active = time.monotonic() - started
    assert server["status"] == "ACTIVE" and power(server) == 1, server
    log = wait_console(os_cli, "ctr-one", "hostname: ctr-one")
    print(f"API call to ACTIVE {active:.2f} s, to ready marker {time.monotonic() - started:.2f} s")
    assert MARKER in log and "config drive found" in log, log
    assert console(os_cli, "ctr-one", "--lines", "2").strip().splitlines()[-1] == "hostname: ctr-one"
    hyp = os_cli("hypervisor", "list", "-f", "json").json()
    assert hyp[0]["Hypervisor Type"] == "docker", hyp

    walk_power_states(os_cli, "ctr-one", MARKER, "stratus-test-container: stopping")

    # A snapshot is a container image that runs again, with what the first container wrote.
    uuid = show(os_cli, "ctr-one")["id"]
    (cloud.instances / uuid / "rootfs" / "root" / "note").write_text("kept")
    image = os_cli("server", "image", "create", "--name", "ctr-one-snap", "--wait", "ctr-one", "-f", "json").json()
    assert image["status"] == "active" and image["container_format"] == "docker", image
    os_cli("server", "create", "--image", "ctr-one-snap", "--flavor", "m1.nano", "--wait", "ctr-two")
    wait_console(os_cli, "ctr-two", "hostname: ctr-two")
    uuid2 = show(os_cli, "ctr-two")["id"]
    assert (cloud.instances / uuid2 / "rootfs" / "root" / "note").read_text() == "kept"

    # Delete leaves no process, mount, namespace or file of the instance.
    pid = cloud.pid(uuid)
    assert pid
    os_cli("server", "delete", "--wait", "ctr-one")
    assert not (cloud.instances / uuid).exists()
    assert cloud.pid(uuid) is None and not Path(f"/proc/{pid}").exists()
    assert not Path(f"/run/netns/ctr-{uuid}").exists()
    os_cli("server", "delete", "--wait", "ctr-two")


def test_containers_outlive_an_agent_restart_and_dead_ones_show_shutoff(os_cli, cloud: ContainerCloud) -> None:
    os_cli("server", "create", "--image", "stratus-test-container", "--flavor", "m1.nano", "--wait", "ctr-three")
    uuid = show(os_cli, "ctr-three")["id"]
    pid = cloud.pid(uuid)
    assert pid, "the container runs"
    cloud.kill()
    assert cloud.pid(uuid) == pid, "killing the cloud and its agent leaves the containers running"
    cloud.start()
    managed_after_restart(os_cli, "ctr-three", pid)


def test_images_a_container_cannot_run_end_in_error_with_a_fault(os_cli, cloud: ContainerCloud, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(64 * 1024))
    os_cli("image", "create", "ctr-corrupt", "--disk-format", "raw", "--container-format", "docker",
           "--file", str(garbage))
    assert "not a container image" in failed_build(os_cli, cloud.instances, "ctr-bad-1", "ctr-corrupt")
    # A VM image lands here (this cloud has no other host) and is refused by its container format.
    assert "cannot run" in failed_build(os_cli, cloud.instances, "ctr-bad-2", "stratus-test-vm")
