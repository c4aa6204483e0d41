"""Compute through the real `openstack` CLI: flavors, key pairs, servers and their lifecycle, quotas, services and
hypervisors. Servers run on the in-process compute agent's `fake` driver."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import Cli, Http


@pytest.fixture(scope="module")
def image_id(boot_image: str) -> str:
    """A small bootable image, uploaded once (as DevStack's CirrOS)."""
    return boot_image


@pytest.fixture(scope="module")
def flavor(openstack: Cli) -> str:
    name = f"scn-{uuid.uuid4().hex[:8]}"
    openstack("flavor", "create", name, "--ram", "256", "--vcpus", "1", "--disk", "1", "-f", "json")
    yield name
    openstack("flavor", "delete", name, check=False)


def _server(openstack: Cli, name: str) -> dict:
    return openstack("server", "show", name, "-f", "json").json()


def test_agents_show_as_services_and_hypervisors(openstack: Cli) -> None:
    services = openstack("compute", "service", "list", "-f", "json").json()
    computes = [s for s in services if s["Binary"] == "nova-compute"]
    assert computes, services
    assert all(s["State"] == "up" and s["Status"] == "enabled" for s in computes), computes
    hypervisors = openstack("hypervisor", "list", "-f", "json").json()
    assert hypervisors and all(h["State"] == "up" for h in hypervisors), hypervisors


def test_keypair_create_and_server_lifecycle(openstack: Cli, image_id: str, flavor: str) -> None:
    key = f"scn-key-{uuid.uuid4().hex[:6]}"
    created = openstack("keypair", "create", key)
    assert "PRIVATE KEY" in created.stdout
    names = [f"scn-vm-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    try:
        for name in names:
            s = openstack(
                "server", "create", name, "--image", image_id, "--flavor", flavor, "--key-name", key, "--wait",
                "-f", "json",
            ).json()
            assert s["status"] == "ACTIVE", s
            assert s["key_name"] == key
        listed = {s["Name"]: s for s in openstack("server", "list", "-f", "json").json()}
        assert all(listed[n]["Status"] == "ACTIVE" for n in names), listed

        name = names[0]
        openstack("server", "stop", name)
        openstack("server", "show", name, "-f", "json")
        _wait_status(openstack, name, "SHUTOFF")
        # Stopping a stopped server is a conflict, with upstream's message.
        again = openstack("server", "stop", name, check=False)
        assert again.returncode != 0 and "Cannot 'stop' instance" in again.stderr, again.stderr
        openstack("server", "start", name)
        _wait_status(openstack, name, "ACTIVE")
        openstack("server", "reboot", "--hard", "--wait", name)
        assert _server(openstack, name)["status"] == "ACTIVE"
        openstack("server", "reboot", "--wait", name)
        assert _server(openstack, name)["OS-EXT-STS:power_state"] in ("Running", 1)
        log = openstack("console", "log", "show", name)
        assert log.stdout.strip(), "the fake driver keeps a console log"
        # Resize and confirm: the server runs the new flavor.
        openstack("server", "resize", "--flavor", "m1.small", "--wait", name)
        assert _server(openstack, name)["status"] == "VERIFY_RESIZE"
        openstack("server", "resize", "confirm", name)
        _wait_status(openstack, name, "ACTIVE")
        assert "m1.small" in str(_server(openstack, name)["flavor"])
    finally:
        for name in names:
            openstack("server", "delete", "--wait", name, check=False)
        openstack("keypair", "delete", key, check=False)
    remaining = {s["Name"] for s in openstack("server", "list", "-f", "json").json()}
    assert not remaining.intersection(names)


def _wait_status(openstack: Cli, name: str, status: str, attempts: int = 60) -> None:
    import time

    for _ in range(attempts):
        if _server(openstack, name)["status"] == status:
            return
        time.sleep(0.5)
    pytest.fail(f"server {name} never reached {status}: {_server(openstack, name)}")


def test_quota_exceeded_is_403_with_upstreams_message(http: Http, openstack: Cli, image_id: str) -> None:
    token = openstack("token", "issue", "-f", "json").json()["id"]
    body = {"server": {"name": "too-many", "imageRef": image_id, "flavorRef": "1", "min_count": 1000}}
    resp = http(
        "POST", "/compute/v2.1/servers", body=json.dumps(body).encode(),
        headers={"X-Auth-Token": token, "Content-Type": "application/json"},
    )
    assert resp.status == 403, resp.body
    message = resp.json()["forbidden"]["message"]
    assert message.startswith("Quota exceeded for cores, instances, ram: Requested"), message


@pytest.mark.parametrize(
    "server,status,fragment",
    [
        ({"name": "x", "imageRef": "IMAGE", "flavorRef": "no-such-flavor"}, 400, "Flavor no-such-flavor could not be found."),
        ({"name": "x", "imageRef": "00000000-0000-0000-0000-000000000000", "flavorRef": "1"}, 400, "could not be found"),
        ({"name": "x" * 256, "imageRef": "IMAGE", "flavorRef": "1"}, 400, "is too long"),
        ({"imageRef": "IMAGE", "flavorRef": "1"}, 400, "'name' is a required property"),
    ],
)
def test_bad_boot_requests(http: Http, openstack: Cli, image_id: str, server: dict, status: int, fragment: str) -> None:
    token = openstack("token", "issue", "-f", "json").json()["id"]
    server = {k: (image_id if v == "IMAGE" else v) for k, v in server.items()}
    resp = http(
        "POST", "/compute/v2.1/servers", body=json.dumps({"server": server}).encode(),
        headers={"X-Auth-Token": token, "Content-Type": "application/json"},
    )
    assert resp.status == status, resp.body
    assert fragment in resp.json()["badRequest"]["message"], resp.body


def test_invalid_microversion_is_400(http: Http, openstack: Cli) -> None:
    token = openstack("token", "issue", "-f", "json").json()["id"]
    resp = http("GET", "/compute/v2.1/servers", headers={"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.x"})
    assert resp.status == 400, resp.body
