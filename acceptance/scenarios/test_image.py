"""Image scenarios: the Image service (Glance v2) through the real `openstack` CLI — create with data, show,
list with filters, download byte-identical, properties and tags, sharing with another project — and the
wire conventions of its HTTP API (version discovery, Glance-style errors)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conftest import Cli, Http


@pytest.fixture()
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(256 * 1024 + 17))
    return path


def _create(openstack: Cli, name: str, *extra: str, cloud: str = "stratus-admin") -> dict:
    image = openstack(
        "image", "create", "--disk-format", "raw", "--container-format", "bare", *extra, name, "-f", "json",
        cloud=cloud,
    ).json()
    assert image["name"] == name, image
    return image


def test_create_upload_show_download_delete(openstack: Cli, image_file: Path, tmp_path: Path) -> None:
    data = image_file.read_bytes()
    image = _create(openstack, "scenario-cirros", "--file", str(image_file), "--property", "os_distro=cirros")
    shown = openstack("image", "show", image["id"], "-f", "json").json()
    assert shown["status"] == "active", shown
    assert shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    props = shown.get("properties") or {}
    assert props.get("os_hash_algo", shown.get("os_hash_algo")) == "sha512"
    assert props.get("os_hash_value", shown.get("os_hash_value")) == hashlib.sha512(data).hexdigest()

    out = tmp_path / "saved.raw"
    openstack("image", "save", "--file", str(out), image["id"])
    assert out.read_bytes() == data

    listed = openstack("image", "list", "--property", "os_distro=cirros", "-f", "json").json()
    assert [i["ID"] for i in listed] == [image["id"]]
    listed = openstack("image", "list", "--status", "active", "-f", "json").json()
    assert image["id"] in [i["ID"] for i in listed]

    openstack("image", "set", "--name", "scenario-renamed", "--tag", "scenario", "--property", "hw_disk_bus=scsi",
              image["id"])
    shown = openstack("image", "show", image["id"], "-f", "json").json()
    assert shown["name"] == "scenario-renamed"
    assert "scenario" in shown["tags"]
    openstack("image", "set", "--protected", image["id"])
    assert openstack("image", "delete", image["id"], check=False).returncode != 0
    openstack("image", "set", "--unprotected", image["id"])
    openstack("image", "delete", image["id"])
    assert openstack("image", "show", image["id"], check=False).returncode != 0


def test_sharing_with_the_demo_project(openstack: Cli) -> None:
    demo = openstack("project", "show", "demo", "-f", "json").json()
    image = _create(openstack, "scenario-shared", "--shared")
    try:
        openstack("image", "add", "project", image["id"], demo["id"])
        assert openstack("image", "show", image["id"], "-f", "json", cloud="stratus").json()["id"] == image["id"]
        default = openstack("image", "list", "-f", "json", cloud="stratus").json()
        assert image["id"] not in [i["ID"] for i in default], "pending shares are not listed by default"
        openstack("image", "set", "--accept", image["id"], cloud="stratus")
        accepted = openstack("image", "list", "-f", "json", cloud="stratus").json()
        assert image["id"] in [i["ID"] for i in accepted]
        # The member may not change the owner's image.
        assert openstack("image", "set", "--name", "x", image["id"], cloud="stratus", check=False).returncode != 0
    finally:
        openstack("image", "delete", image["id"])


def test_version_discovery_and_errors(http: Http) -> None:
    resp = http("GET", "/image/")
    assert resp.status == 300, resp.body
    versions = resp.json()["versions"]
    assert any(v["status"] == "CURRENT" for v in versions)
    resp = http("GET", "/image/v2/images")
    assert resp.status == 401
    assert "www-authenticate" in resp.headers
    err = resp.json()
    assert err["code"] == "401 Unauthorized" and err["title"] == "Unauthorized", err
