"""Object storage scenarios: the Swift API v1 through the real `openstack container`/`openstack object` commands —
containers with metadata, a multi-MiB upload saved back byte-identical, object metadata, listings, deletes — and
what a project member sees of another project's account."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conftest import Cli


@pytest.fixture()
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 4321))
    return path


def _props(shown: dict) -> dict:
    """`properties` as a dict, however the CLI version renders it."""
    props = shown.get("properties") or {}
    if isinstance(props, str):
        props = dict(p.strip().strip("'").split("=", 1) for p in props.split(",") if "=" in p)
    return {k.lower(): v for k, v in props.items()}


def test_container_and_object_round_trip(openstack: Cli, payload: Path, tmp_path: Path) -> None:
    data = payload.read_bytes()
    created = openstack("container", "create", "scenario-bucket", "-f", "json", cloud="stratus").json()
    assert created[0]["container"] == "scenario-bucket", created
    listed = openstack("container", "list", "-f", "json", cloud="stratus").json()
    assert "scenario-bucket" in [c["Name"] for c in listed]

    openstack("container", "set", "--property", "color=blue", "scenario-bucket", cloud="stratus")
    shown = openstack("container", "show", "scenario-bucket", "-f", "json", cloud="stratus").json()
    assert _props(shown).get("color") == "blue", shown

    obj = openstack(
        "object", "create", "--name", "dir/data.bin", "scenario-bucket", str(payload), "-f", "json", cloud="stratus"
    ).json()
    assert obj[0]["object"] == "dir/data.bin", obj
    assert obj[0]["etag"] == hashlib.md5(data).hexdigest(), obj

    shown = openstack("object", "show", "scenario-bucket", "dir/data.bin", "-f", "json", cloud="stratus").json()
    assert int(shown["content-length"]) == len(data), shown
    assert shown["etag"] == hashlib.md5(data).hexdigest()

    out = tmp_path / "saved.bin"
    openstack("object", "save", "--file", str(out), "scenario-bucket", "dir/data.bin", cloud="stratus")
    assert out.read_bytes() == data

    openstack("object", "set", "--property", "owner=scenario", "scenario-bucket", "dir/data.bin", cloud="stratus")
    shown = openstack("object", "show", "scenario-bucket", "dir/data.bin", "-f", "json", cloud="stratus").json()
    assert _props(shown).get("owner") == "scenario", shown
    assert int(shown["content-length"]) == len(data), "metadata updates keep the data"

    listed = openstack("object", "list", "scenario-bucket", "-f", "json", cloud="stratus").json()
    assert [o["Name"] for o in listed] == ["dir/data.bin"]
    listed = openstack("object", "list", "--prefix", "dir/", "--delimiter", "/", "scenario-bucket", "-f", "json",
                       cloud="stratus").json()
    assert [o["Name"] for o in listed] == ["dir/data.bin"]

    shown = openstack("container", "show", "scenario-bucket", "-f", "json", cloud="stratus").json()
    assert int(shown["object_count"]) == 1 and int(shown["bytes_used"]) == len(data), shown

    # A container that still holds objects is not deleted; emptied, it is.
    assert openstack("container", "delete", "scenario-bucket", cloud="stratus", check=False).returncode != 0
    openstack("object", "delete", "scenario-bucket", "dir/data.bin", cloud="stratus")
    assert openstack("object", "show", "scenario-bucket", "dir/data.bin", cloud="stratus", check=False).returncode != 0
    openstack("container", "delete", "scenario-bucket", cloud="stratus")
    listed = openstack("container", "list", "-f", "json", cloud="stratus").json()
    assert "scenario-bucket" not in [c["Name"] for c in listed]


def test_accounts_are_per_project(openstack: Cli) -> None:
    openstack("container", "create", "scenario-admin-only")
    try:
        listed = openstack("container", "list", "-f", "json", cloud="stratus").json()
        assert "scenario-admin-only" not in [c["Name"] for c in listed]
        listed = openstack("container", "list", "-f", "json").json()
        assert "scenario-admin-only" in [c["Name"] for c in listed]
    finally:
        openstack("container", "delete", "scenario-admin-only")
