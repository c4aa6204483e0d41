"""The network data plane with real instances, through the `openstack` CLI: a cloud of its own whose node runs VMs
and containers (`qemu+container`) and whose network agent wires them inside a network namespace the scenario makes
(`host_namespace`), with an "outside host" namespace on the uplink of the external network `public`. A VM and a
container on a tenant network get their addresses from DHCP, the VM its metadata from the metadata service through
the proxy; a router with SNAT and floating IPs makes them reachable from outside once the security group lets the
traffic in. Skipped when QEMU, runc or the test images are missing, unless STRATUS_TEST_REQUIRE_QEMU=1."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid as uuidlib
from typing import Iterator

import pytest

from localcloud import IMAGES, LocalCloud, cli, missing, new_root, running_cloud, show, wait_console

TAG = uuidlib.uuid4().hex[:6]
HOST_NS = f"sacc{TAG}-host"
OUT_NS = f"sacc{TAG}-out"
UPLINK = f"o{TAG}"


def ip(*args: str) -> str:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"ip {' '.join(args)}: {out.stderr}"
    return out.stdout


def fetch(ns: str, url: str) -> str | None:
    """GET `url` from namespace `ns` (3 s at most): the body, or None when nothing answered."""
    out = subprocess.run(["ip", "netns", "exec", ns, "timeout", "3", "busybox", "wget", "-q", "-O", "-", url],
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip() if out.returncode == 0 else None


def eventually(what: str, probe, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(1)


class DataplaneCloud(LocalCloud):
    def __init__(self) -> None:
        config = f"""
[compute]
metadata_listen = "127.0.0.1:0"
metadata_proxy_shared_secret = "scenario-{TAG}"

[compute_agent]
driver = "qemu+container"
vif_plugging_timeout = 120

[compute_agent.qemu]
virt_type = "qemu"
shutdown_timeout = 10

[network_agent]
enabled = true
host_namespace = "{HOST_NS}"
namespace_prefix = "sacc{TAG}-"
physical_interface_mappings = ["public:{UPLINK}"]
polling_interval = 0.2
"""
        super().__init__(new_root("stratus-dp-"), {}, config)


@pytest.fixture(scope="module")
def cloud() -> Iterator[DataplaneCloud]:
    if shutil.which("qemu-system-x86_64") is None or shutil.which("runc") is None or not (
            IMAGES / "stratus-test-vm.qcow2").is_file() or not (IMAGES / "stratus-test-container.tar").is_file():
        missing("QEMU, runc or the test images (scripts/install-qemu, scripts/host-tools, cargo xtask image build)",
                "STRATUS_TEST_REQUIRE_QEMU")
    # The host's network side of the cloud, and the outside host on the external network's uplink (172.24.4.1, the
    # gateway of `public`).
    ip("netns", "add", HOST_NS)
    ip("netns", "add", OUT_NS)
    ip("-n", HOST_NS, "link", "set", "lo", "up")
    ip("-n", HOST_NS, "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns", OUT_NS)
    ip("-n", OUT_NS, "addr", "add", "172.24.4.1/24", "dev", "eth0")
    ip("-n", OUT_NS, "link", "set", "eth0", "up")
    c = DataplaneCloud()

    def leftovers() -> None:
        # The scenario's and the agent's namespaces, their processes (dnsmasq) killed first.
        for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith(f"sacc{TAG}-"):
                for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
                    subprocess.run(["kill", "-9", pid], capture_output=True)
                subprocess.run(["ip", "netns", "delete", name], capture_output=True)

    yield from running_cloud(c, leftovers)


@pytest.fixture(scope="module")
def os_cli(cloud: DataplaneCloud):
    return cli(cloud)


def _address(os_cli, name: str) -> str:
    server = show(os_cli, name)
    found = re.findall(r"\d+\.\d+\.\d+\.\d+", str(server["addresses"]))
    assert found, server
    return found[0]


def test_vms_and_containers_share_a_tenant_network_behind_a_router(os_cli) -> None:
    os_cli("network", "create", "dp-net")
    os_cli("subnet", "create", "--network", "dp-net", "--subnet-range", "10.83.0.0/24", "dp-subnet")
    os_cli("router", "create", "dp-router")
    os_cli("router", "set", "--external-gateway", "public", "dp-router")
    os_cli("router", "add", "subnet", "dp-router", "dp-subnet")

    os_cli("server", "create", "--image", "stratus-test-vm", "--flavor", "m1.nano", "--network", "dp-net", "--wait",
           "dp-vm")
    os_cli("server", "create", "--image", "stratus-test-container", "--flavor", "m1.nano", "--network", "dp-net",
           "--wait", "dp-ctr")
    hypervisors = os_cli("hypervisor", "list", "-f", "json").json()
    assert len(hypervisors) == 1, "one node runs both"

    # DHCP gave each the address the network service chose; the VM, without a config drive, read its name from
    # the metadata service through the agent's proxy; the container from its config drive.
    vm_ip, ctr_ip = _address(os_cli, "dp-vm"), _address(os_cli, "dp-ctr")
    vm_log = wait_console(os_cli, "dp-vm", "hostname: dp-vm")
    assert f"eth0: {vm_ip}/24" in vm_log and "metadata service answered" in vm_log, vm_log
    ctr_log = wait_console(os_cli, "dp-ctr", f"eth0: {ctr_ip}/24")
    assert "hostname: dp-ctr" in ctr_log, ctr_log

    # Floating IPs on the router: from outside, nothing gets in until the security group allows port 80.
    fips = {}
    for name in ("dp-vm", "dp-ctr"):
        fip = os_cli("floating", "ip", "create", "public", "-f", "json").json()["floating_ip_address"]
        os_cli("server", "add", "floating", "ip", name, fip)
        fips[name] = fip
    time.sleep(3)
    assert fetch(OUT_NS, f"http://{fips['dp-vm']}/") is None, "the default group admits only its own members"
    project = show(os_cli, "dp-vm")["project_id"]
    groups = os_cli("security", "group", "list", "--project", project, "-f", "json").json()
    default = next(g["ID"] for g in groups if g["Name"] == "default")
    os_cli("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "80", "--ingress", default)
    for name, fip in fips.items():
        assert eventually(f"{name} answering on {fip}", lambda: fetch(OUT_NS, f"http://{fip}/")) == name

    for name in ("dp-vm", "dp-ctr"):
        os_cli("server", "delete", "--wait", name)
    for fip in fips.values():
        os_cli("floating", "ip", "delete", fip)
    os_cli("router", "remove", "subnet", "dp-router", "dp-subnet")
    os_cli("router", "delete", "dp-router")
    os_cli("network", "delete", "dp-net")
    eventually("the router's namespace gone", lambda: not any(
        n.startswith(f"sacc{TAG}-qrouter-") for n in ip("netns", "list").split()))
