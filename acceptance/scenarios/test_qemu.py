"""Real virtual machines: a second cloud whose compute agent runs the `qemu` driver under TCG, driven with the real
`openstack` CLI. It boots the test VM image (`cargo xtask image build`, uploaded by scripts/upload-test-image as
DevStack uploads CirrOS), reads the boot marker and the host name from the config drive on the console, walks the
lifecycle through upstream's states, snapshots, restarts the agent under running guests, fails bad builds with a
fault, and carries a volume's data from one guest to another (written and read by user-data scripts), through a
snapshot and a backup, and boots from a volume. Skipped when QEMU or the image is missing, unless STRATUS_TEST_REQUIRE_QEMU=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from localcloud import IMAGES, LocalCloud, cli, console, failed_build, missing, new_root, power, managed_after_restart, running_cloud, show, wait_console, walk_power_states

MARKER = "STRATUS-TEST-VM-READY"


class QemuCloud(LocalCloud):
    """A `stratus up` whose compute agent runs the qemu driver under TCG."""

    def __init__(self) -> None:
        super().__init__(new_root("stratus-qemu-"), {
            "STRATUS_COMPUTE_AGENT__DRIVER": "qemu",
            "STRATUS_COMPUTE_AGENT__QEMU__VIRT_TYPE": "qemu",
            "STRATUS_COMPUTE_AGENT__QEMU__SHUTDOWN_TIMEOUT": "20",
            "STRATUS_COMPUTE_AGENT__SYNC_POWER_STATE_INTERVAL": "2",
        })


@pytest.fixture(scope="module")
def cloud() -> Iterator[QemuCloud]:
    if shutil.which("qemu-system-x86_64") is None or not (IMAGES / "stratus-test-vm.qcow2").is_file():
        missing("QEMU or the test VM image (scripts/install-qemu, cargo xtask image build)", "STRATUS_TEST_REQUIRE_QEMU")
    yield from running_cloud(QemuCloud())


@pytest.fixture(scope="module")
def os_cli(cloud: QemuCloud):
    return cli(cloud)


def test_a_vm_boots_and_goes_through_its_lifecycle(os_cli, cloud: QemuCloud) -> None:
    started = time.monotonic()
    server = os_cli("server", "create", "--image", "stratus-test-vm", "--flavor", "m1.nano", "--config-drive", "true",
                    "--wait", "qvm-one", "-f", "json").json()
    active = time.monotonic() - started
    assert server["status"] == "ACTIVE" and power(server) == 1, server
    log = wait_console(os_cli, "qvm-one", "hostname: qvm-one")
    print(f"API call to ACTIVE {active:.1f} s, to boot marker {time.monotonic() - started:.1f} s")
    assert MARKER in log and "config drive found" in log, log
    assert console(os_cli, "qvm-one", "--lines", "2").strip().splitlines()[-1] == "hostname: qvm-one"
    hyp = os_cli("hypervisor", "list", "-f", "json").json()
    assert hyp[0]["Hypervisor Type"] == "QEMU", hyp

    walk_power_states(os_cli, "qvm-one", MARKER, "power button pressed")

    # A snapshot is an image that boots again.
    image = os_cli("server", "image", "create", "--name", "qvm-one-snap", "--wait", "qvm-one", "-f", "json").json()
    assert image["status"] == "active" and image["disk_format"] == "qcow2", image
    os_cli("server", "create", "--image", "qvm-one-snap", "--flavor", "m1.nano", "--config-drive", "true", "--wait",
           "qvm-two")
    wait_console(os_cli, "qvm-two", "hostname: qvm-two")

    # Delete leaves no process and no file of the instance.
    uuid = show(os_cli, "qvm-one")["id"]
    assert (cloud.data / "instances" / uuid).is_dir()
    os_cli("server", "delete", "--wait", "qvm-one")
    assert not (cloud.data / "instances" / uuid).exists()
    assert not cloud.qemu_pids(uuid)


def test_a_kernel_and_ramdisk_image_boots_directly(os_cli) -> None:
    os_cli("server", "create", "--image", "stratus-test-vm-uec", "--flavor", "m1.nano", "--config-drive", "true",
           "--wait", "qvm-uec")
    log = wait_console(os_cli, "qvm-uec", "hostname: qvm-uec")
    assert MARKER in log
    os_cli("server", "delete", "--wait", "qvm-uec")


def test_guests_outlive_an_agent_restart_and_dead_guests_show_shutoff(os_cli, cloud: QemuCloud) -> None:
    os_cli("server", "create", "--image", "stratus-test-vm", "--flavor", "m1.nano", "--wait", "qvm-three")
    uuid = show(os_cli, "qvm-three")["id"]
    pids = cloud.qemu_pids()
    assert pids, "the guests run"
    cloud.kill()
    assert cloud.qemu_pids() == pids, "killing the cloud and its agent leaves the guests running"
    cloud.start()
    [pid] = cloud.qemu_pids(uuid)
    managed_after_restart(os_cli, "qvm-three", pid)


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

    assert "corrupt" in failed_build(os_cli, cloud.data / "instances", "qvm-bad-1", "qvm-corrupt")
    assert "cannot boot" in failed_build(os_cli, cloud.data / "instances", "qvm-bad-2", "qvm-vhdx")
    assert "Flavor's disk is too small" in failed_build(os_cli, cloud.data / "instances", "qvm-bad-3", "qvm-big")
    # An image that asks for more memory than the flavor has is refused by the API, as upstream.
    os_cli("image", "set", "--min-ram", "4096", "qvm-big")
    refused = os_cli("server", "create", "--image", "qvm-big", "--flavor", "m1.nano", "qvm-bad-4", check=False)
    assert refused.returncode != 0 and "memory is too small" in refused.stderr, refused.stderr


# The guests' user-data scripts find a volume's disk by its virtio serial (the first 20 characters of the volume id).
READER = r"""#!/bin/sh
seen=""
while true; do
  for s in /sys/block/vd*/serial; do
    [ -f "$s" ] || continue
    id=$(cat "$s")
    [ -n "$id" ] || continue
    case " $seen " in *" $id "*) continue ;; esac
    seen="$seen $id"
    name=${s#/sys/block/}
    echo "READ $id: $(dd if=/dev/${name%/serial} bs=64 count=1 2>/dev/null | tr -cd 'a-z0-9-')"
  done
  sleep 1
done
"""


def _writer(serial: str, data: str) -> str:
    return f"""#!/bin/sh
while true; do
  for s in /sys/block/vd*/serial; do [ "$(cat "$s" 2>/dev/null)" = "{serial}" ] && break 2; done
  sleep 0.5
done
name=${{s#/sys/block/}}
echo "{data}" | dd of=/dev/${{name%/serial}} conv=fsync 2>/dev/null && echo "WROTE {serial}"
"""


def _volume_status(os_cli, name: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        volume = os_cli("volume", "show", name, "-f", "json").json()
        if volume["status"] == status:
            return volume
        assert volume["status"] not in ("error", "error_restoring") or status == "error", volume
        assert time.monotonic() < deadline, f"volume {name} stayed {volume['status']}"
        time.sleep(1)


def _backup_status(os_cli, name: str, status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while os_cli("volume", "backup", "show", name, "-f", "json").json()["status"] != status:
        assert time.monotonic() < deadline, f"backup {name} never became {status}"
        time.sleep(1)


def test_a_volume_carries_data_between_vms_through_snapshots_and_backups(os_cli, tmp_path: Path) -> None:
    data = "stratus-volume-data-" + os.urandom(4).hex()
    vol = os_cli("volume", "create", "--size", "1", "qvol", "-f", "json").json()["id"]
    _volume_status(os_cli, "qvol", "available")

    # Written by one guest...
    (tmp_path / "writer").write_text(_writer(vol[:20], data))
    (tmp_path / "reader").write_text(READER)
    os_cli("server", "create", "--image", "stratus-test-vm", "--flavor", "m1.nano", "--config-drive", "true",
           "--user-data", str(tmp_path / "writer"), "--wait", "qvol-writer")
    wait_console(os_cli, "qvol-writer", "running user data")
    os_cli("server", "add", "volume", "qvol-writer", "qvol")
    _volume_status(os_cli, "qvol", "in-use")
    wait_console(os_cli, "qvol-writer", f"WROTE {vol[:20]}")
    os_cli("server", "remove", "volume", "qvol-writer", "qvol")
    _volume_status(os_cli, "qvol", "available")

    # ...read by another.
    os_cli("server", "create", "--image", "stratus-test-vm", "--flavor", "m1.nano", "--config-drive", "true",
           "--user-data", str(tmp_path / "reader"), "--wait", "qvol-reader")
    wait_console(os_cli, "qvol-reader", "running user data")
    os_cli("server", "add", "volume", "qvol-reader", "qvol")
    wait_console(os_cli, "qvol-reader", f"READ {vol[:20]}: {data}")
    os_cli("server", "remove", "volume", "qvol-reader", "qvol")
    _volume_status(os_cli, "qvol", "available")

    # A volume made from a snapshot has the data.
    os_cli("volume", "snapshot", "create", "--volume", "qvol", "qvol-snap")
    deadline = time.monotonic() + 60
    while os_cli("volume", "snapshot", "show", "qvol-snap", "-f", "json").json()["status"] != "available":
        assert time.monotonic() < deadline, "the snapshot never became available"
        time.sleep(1)
    copy = os_cli("volume", "create", "--snapshot", "qvol-snap", "--size", "1", "qvol-copy", "-f", "json").json()["id"]
    _volume_status(os_cli, "qvol-copy", "available")
    os_cli("server", "add", "volume", "qvol-reader", "qvol-copy")
    wait_console(os_cli, "qvol-reader", f"READ {copy[:20]}: {data}")

    # Backed up to the object store, the volume deleted, restored: the data is intact.
    os_cli("volume", "backup", "create", "--name", "qvol-backup", "qvol")
    _backup_status(os_cli, "qvol-backup", "available")
    os_cli("volume", "snapshot", "delete", "qvol-snap")
    os_cli("volume", "delete", "qvol")
    restored = os_cli("volume", "backup", "restore", "qvol-backup", "qvol-restored", "-f", "json").json()
    restored_id = restored.get("volume_id") or os_cli("volume", "show", "qvol-restored", "-f", "json").json()["id"]
    _volume_status(os_cli, restored_id, "available")
    os_cli("server", "add", "volume", "qvol-reader", restored_id)
    wait_console(os_cli, "qvol-reader", f"READ {restored_id[:20]}: {data}")

    # An instance boots from a volume made from an image.
    os_cli("volume", "create", "--image", "stratus-test-vm", "--size", "1", "--bootable", "qvol-boot")
    _volume_status(os_cli, "qvol-boot", "available")
    os_cli("server", "create", "--volume", "qvol-boot", "--flavor", "m1.nano", "--config-drive", "true", "--wait",
           "qvol-booted")
    wait_console(os_cli, "qvol-booted", "hostname: qvol-booted")

    for server in ("qvol-writer", "qvol-reader", "qvol-booted"):
        os_cli("server", "delete", "--wait", server)
    for volume in ("qvol-copy", restored_id, "qvol-boot"):
        _volume_status(os_cli, volume, "available")
        os_cli("volume", "delete", volume)
    os_cli("volume", "backup", "delete", "qvol-backup")
