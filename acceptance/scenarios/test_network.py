"""Networking through the real `openstack` CLI: networks, subnets, routers with an external gateway and
interfaces, security group rules, ports and floating IPs, and the statuses of bad requests."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import Cli, Http


def _name(prefix: str) -> str:
    return f"scn-{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture()
def network(openstack: Cli):
    name = _name("net")
    net = openstack("network", "create", name, "-f", "json", cloud="stratus").json()
    yield net
    openstack("network", "delete", net["id"], cloud="stratus", check=False)


def test_public_network_exists(openstack: Cli) -> None:
    nets = openstack("network", "list", "--external", "-f", "json").json()
    assert any(n["Name"] == "public" for n in nets), nets
    public = openstack("network", "show", "public", "-f", "json").json()
    assert public["router:external"] is True
    assert public["provider:network_type"] == "flat"


def test_router_subnet_security_group_and_floating_ip(openstack: Cli, network: dict) -> None:
    member = "stratus"
    subnet = openstack(
        "subnet", "create", _name("sub"), "--network", network["id"], "--subnet-range", "10.123.0.0/24",
        "--dns-nameserver", "8.8.8.8", "-f", "json", cloud=member,
    ).json()
    assert subnet["gateway_ip"] == "10.123.0.1"
    router = openstack("router", "create", _name("rtr"), "-f", "json", cloud=member).json()
    try:
        openstack("router", "set", "--external-gateway", "public", router["id"], cloud=member)
        openstack("router", "add", "subnet", router["id"], subnet["id"], cloud=member)
        shown = openstack("router", "show", router["id"], "-f", "json", cloud=member).json()
        gateway = shown["external_gateway_info"]
        assert gateway["network_id"] and gateway["external_fixed_ips"], shown

        group = openstack("security group", "create", _name("sg"), "-f", "json", cloud=member).json()
        rule = openstack(
            "security group rule", "create", "--protocol", "tcp", "--dst-port", "22", "--remote-ip", "0.0.0.0/0",
            group["id"], "-f", "json", cloud=member,
        ).json()
        assert rule["port_range_min"] == 22 and rule["port_range_max"] == 22
        dup = openstack(
            "security group rule", "create", "--protocol", "tcp", "--dst-port", "22", "--remote-ip", "0.0.0.0/0",
            group["id"], cloud=member, check=False,
        )
        assert dup.returncode != 0 and "409" in dup.stderr, dup.stderr

        port = openstack(
            "port", "create", _name("port"), "--network", network["id"], "--security-group", group["id"], "-f", "json",
            cloud=member,
        ).json()
        fip = openstack("floating ip", "create", "public", "--port", port["id"], "-f", "json", cloud=member).json()
        assert fip["port_id"] == port["id"] and fip["router_id"] == router["id"], fip
        assert fip["floating_ip_address"].startswith("172.24.4."), fip

        # a port in use keeps the subnet, and a router with interfaces stays
        gone = openstack("subnet", "delete", subnet["id"], cloud=member, check=False)
        assert gone.returncode != 0
        openstack("floating ip", "delete", fip["id"], cloud=member)
        openstack("port", "delete", port["id"], cloud=member)
        openstack("security group", "delete", group["id"], cloud=member)
        openstack("router", "remove", "subnet", router["id"], subnet["id"], cloud=member)
        openstack("router", "unset", "--external-gateway", router["id"], cloud=member)
    finally:
        openstack("router", "delete", router["id"], cloud=member, check=False)


def test_bad_input_statuses(openstack: Cli, network: dict) -> None:
    bad_cidr = openstack(
        "subnet", "create", _name("bad"), "--network", network["id"], "--subnet-range", "10.0.0.5/33",
        cloud="stratus", check=False,
    )
    assert bad_cidr.returncode != 0
    ok = openstack(
        "subnet", "create", _name("ok"), "--network", network["id"], "--subnet-range", "10.124.0.0/24", "-f", "json",
        cloud="stratus",
    ).json()
    overlap = openstack(
        "subnet", "create", _name("ov"), "--network", network["id"], "--subnet-range", "10.124.0.0/25",
        cloud="stratus", check=False,
    )
    assert overlap.returncode != 0 and "400" in overlap.stderr, overlap.stderr
    # a member may not create external networks
    ext = openstack("network", "create", "--external", _name("ext"), cloud="stratus", check=False)
    assert ext.returncode != 0 and "403" in ext.stderr, ext.stderr
    missing = openstack("network", "show", str(uuid.uuid4()), cloud="stratus", check=False)
    assert missing.returncode != 0
    # a gateway outside the subnet's range
    gateway = openstack(
        "subnet", "create", _name("gw"), "--network", network["id"], "--subnet-range", "10.125.0.0/24",
        "--gateway", "10.99.0.1", cloud="stratus", check=False,
    )
    assert gateway.returncode != 0 and "400" in gateway.stderr, gateway.stderr
    # a fixed IP another port holds
    fixed = f"subnet={ok['id']},ip-address=10.124.0.10"
    port = openstack(
        "port", "create", _name("p"), "--network", network["id"], "--fixed-ip", fixed, "-f", "json", cloud="stratus",
    ).json()
    taken = openstack(
        "port", "create", _name("p"), "--network", network["id"], "--fixed-ip", fixed, cloud="stratus", check=False,
    )
    assert taken.returncode != 0 and "409" in taken.stderr, taken.stderr
    # a network whose port is in use cannot go
    in_use = openstack("network", "delete", network["id"], cloud="stratus", check=False)
    assert in_use.returncode != 0, in_use.stdout
    shown = openstack("network", "show", network["id"], "-f", "json", cloud="stratus").json()
    assert shown["id"] == network["id"]
    openstack("port", "delete", port["id"], cloud="stratus")


def test_version_documents_and_errors(http: Http) -> None:
    resp = http("GET", "/networking/")
    assert resp.status == 200
    assert resp.json()["versions"][0]["id"] == "v2.0"
    resp = http("GET", "/networking/v2.0/networks")
    assert resp.status == 401


def test_server_on_a_project_network_with_a_floating_ip(openstack: Cli, network: dict, boot_image: str) -> None:
    member = "stratus"
    subnet = openstack(
        "subnet", "create", _name("sub"), "--network", network["id"], "--subnet-range", "10.126.0.0/24", "-f", "json",
        cloud=member,
    ).json()
    router = openstack("router", "create", _name("rtr"), "-f", "json", cloud=member).json()
    group = openstack("security group", "create", _name("sg"), "-f", "json", cloud=member).json()
    server_name = _name("vm")
    fip = None
    try:
        openstack("router", "set", "--external-gateway", "public", router["id"], cloud=member)
        openstack("router", "add", "subnet", router["id"], subnet["id"], cloud=member)
        openstack(
            "security group rule", "create", "--protocol", "tcp", "--dst-port", "22", group["id"], cloud=member,
        )
        server = openstack(
            "server", "create", server_name, "--image", boot_image, "--flavor", "m1.nano", "--network", network["id"],
            "--security-group", group["name"], "--wait", "-f", "json", cloud=member,
        ).json()
        assert server["status"] == "ACTIVE", server
        ports = openstack("port", "list", "--server", server["id"], "-f", "json", cloud=member).json()
        assert len(ports) == 1, ports
        port = openstack("port", "show", ports[0]["ID"], "-f", "json", cloud=member).json()
        assert port["device_owner"].startswith("compute:"), port
        assert group["id"] in str(port["security_group_ids"]), port
        fixed = port["fixed_ips"][0]["ip_address"]
        assert fixed.startswith("10.126.0."), port

        fip = openstack("floating ip", "create", "public", "-f", "json", cloud=member).json()
        openstack("floating ip", "set", "--port", port["id"], fip["id"], cloud=member)
        shown = openstack("server", "show", server["id"], "-f", "json", cloud=member).json()
        addresses = json.dumps(shown["addresses"])
        assert fixed in addresses and fip["floating_ip_address"] in addresses, shown["addresses"]
        assert network["name"] in addresses, shown["addresses"]

        # Deleting the server releases the port compute made for it.
        openstack("server", "delete", "--wait", server["id"], cloud=member)
        left = openstack("port", "list", "--device-id", server["id"], "-f", "json", cloud=member).json()
        assert left == [], left
        gone = openstack("port", "show", port["id"], cloud=member, check=False)
        assert gone.returncode != 0
    finally:
        openstack("server", "delete", "--wait", server_name, cloud=member, check=False)
        if fip:
            openstack("floating ip", "delete", fip["id"], cloud=member, check=False)
        openstack("router", "remove", "subnet", router["id"], subnet["id"], cloud=member, check=False)
        openstack("router", "delete", router["id"], cloud=member, check=False)
        openstack("security group", "delete", group["id"], cloud=member, check=False)
