"""Block storage through the real `openstack` CLI: volumes created empty, from a snapshot, from an image and from
another volume; properties, resizing, snapshots, backups to the object store and their restore, upload to an
image, and the statuses of bad requests."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from conftest import Cli

MEMBER = "stratus"


def _name(prefix: str) -> str:
    return f"scn-{prefix}-{uuid.uuid4().hex[:6]}"


def _wait(openstack: Cli, kind: str, ident: str, status: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        shown = openstack(kind, "show", ident, "-f", "json", cloud=MEMBER).json()
        if shown["status"] == status:
            return shown
        assert not str(shown["status"]).startswith("error"), shown
        assert time.monotonic() < deadline, f"{kind} {ident} stuck in {shown['status']}"
        time.sleep(0.5)


def _wait_gone(openstack: Cli, kind: str, ident: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while openstack(kind, "show", ident, cloud=MEMBER, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"{kind} {ident} never went away"
        time.sleep(0.5)


def test_volume_lifecycle_snapshot_backup_restore(openstack: Cli, tmp_path: Path) -> None:
    vol = openstack("volume", "create", "--size", "1", _name("vol"), "-f", "json", cloud=MEMBER).json()
    _wait(openstack, "volume", vol["id"], "available")
    listed = openstack("volume", "list", "-f", "json", cloud=MEMBER).json()
    assert any(v["ID"] == vol["id"] for v in listed), listed
    openstack("volume", "set", "--property", "purpose=scenario", "--bootable", vol["id"], cloud=MEMBER)
    shown = _wait(openstack, "volume", vol["id"], "available")
    assert shown["bootable"] in ("true", True), shown
    assert shown["properties"].get("purpose") == "scenario", shown

    snap = openstack("volume", "snapshot", "create", "--volume", vol["id"], _name("snap"), "-f", "json", cloud=MEMBER).json()
    _wait(openstack, "volume snapshot", snap["id"], "available")
    from_snap = openstack(
        "volume", "create", "--snapshot", snap["id"], _name("fromsnap"), "-f", "json", cloud=MEMBER
    ).json()
    assert _wait(openstack, "volume", from_snap["id"], "available")["size"] == 1
    clone = openstack("volume", "create", "--source", vol["id"], _name("clone"), "-f", "json", cloud=MEMBER).json()
    _wait(openstack, "volume", clone["id"], "available")

    # Growing works (with a snapshot); shrinking is refused with Cinder's 400 and changes nothing.
    openstack("volume", "set", "--size", "2", vol["id"], cloud=MEMBER)
    assert _wait(openstack, "volume", vol["id"], "available")["size"] == 2
    bad = openstack("volume", "set", "--size", "1", vol["id"], cloud=MEMBER, check=False)
    assert bad.returncode != 0, bad.stdout
    assert openstack("volume", "show", vol["id"], "-f", "json", cloud=MEMBER).json()["size"] == 2

    # A volume with a snapshot cannot be deleted.
    busy = openstack("volume", "delete", vol["id"], cloud=MEMBER, check=False)
    assert busy.returncode != 0 and "snapshot" in busy.stderr.lower(), busy.stderr

    backup = openstack(
        "volume", "backup", "create", "--name", _name("bak"), clone["id"], "-f", "json", cloud=MEMBER
    ).json()
    _wait(openstack, "volume backup", backup["id"], "available", timeout=300)
    objects = openstack("object", "list", "volumebackups", "-f", "json", cloud=MEMBER).json()
    assert any(backup["id"] in o["Name"] for o in objects), objects
    openstack("volume", "delete", clone["id"], cloud=MEMBER)
    _wait_gone(openstack, "volume", clone["id"])
    restored = openstack("volume", "backup", "restore", backup["id"], _name("restored"), "-f", "json", cloud=MEMBER, check=False)
    assert restored.returncode == 0, restored.stderr
    restored_id = restored.json().get("volume_id") or restored.json().get("id")
    _wait(openstack, "volume", restored_id, "available", timeout=300)
    openstack("volume", "backup", "delete", backup["id"], cloud=MEMBER)
    _wait_gone(openstack, "volume backup", backup["id"])

    # Upload a volume to the image service, and make a volume from that image.
    up = openstack(
        "image", "create", "--volume", restored_id, "--disk-format", "qcow2", _name("img"), "-f", "json", cloud=MEMBER
    ).json()
    image_id = up.get("image_id") or up.get("id")
    _wait(openstack, "volume", restored_id, "available")
    from_image = openstack(
        "volume", "create", "--image", image_id, "--size", "2", _name("fromimg"), "-f", "json", cloud=MEMBER
    ).json()
    shown = _wait(openstack, "volume", from_image["id"], "available")
    assert shown["volume_image_metadata"]["image_id"] == image_id, shown

    for ident in (from_image["id"], restored_id, from_snap["id"]):
        openstack("volume", "delete", ident, cloud=MEMBER)
    openstack("volume", "snapshot", "delete", snap["id"], cloud=MEMBER)
    _wait_gone(openstack, "volume snapshot", snap["id"])
    openstack("volume", "delete", vol["id"], cloud=MEMBER)
    openstack("image", "delete", image_id, cloud=MEMBER)


def test_volume_services_types_and_quotas(openstack: Cli) -> None:
    services = openstack("volume", "service", "list", "-f", "json").json()
    binaries = {s["Binary"] for s in services if s["State"] == "up"}
    assert {"cinder-scheduler", "cinder-volume", "cinder-backup"} <= binaries, services
    vtype = openstack("volume", "type", "create", "--property", "volume_backend_name=file", _name("type"), "-f", "json").json()
    try:
        vol = openstack("volume", "create", "--size", "1", "--type", vtype["id"], _name("typed"), "-f", "json", cloud=MEMBER).json()
        assert _wait(openstack, "volume", vol["id"], "available")["type"] == vtype["name"]
        in_use = openstack("volume", "type", "delete", vtype["id"], check=False)
        assert in_use.returncode != 0, in_use.stdout
        openstack("volume", "delete", vol["id"], cloud=MEMBER)
        _wait_gone(openstack, "volume", vol["id"])
    finally:
        openstack("volume", "type", "delete", vtype["id"], check=False)
    quota = openstack("quota", "show", "--volume", "demo", "-f", "json").json()
    flat = quota if isinstance(quota, dict) else {q["Resource"]: q["Limit"] for q in quota}
    assert int(flat.get("volumes", flat.get("Volumes", 0))) == 10, quota
