"""The network data plane with real instances on two hosts, through the `openstack` CLI.

A cloud of its own on RabbitMQ (a virtual host of the scenario's): host A is `stratus up` itself, whose node runs VMs
and containers (`qemu+container`) and whose network agent wires them inside a network namespace the scenario makes
(`host_namespace`), with an "outside host" namespace on the uplink of the external network `public`; host B is a
`stratus compute-agent` (containers) and a `stratus network-agent` of their own, in a second namespace joined to the
first by a veth "underlay" that carries the tenant networks' VXLAN tunnels.

On one tenant network a VM and a container get their addresses by DHCP and reach each other; the VM reads its name
and user data from the metadata service through the proxy, and its user data reaches the outside host through the
router's SNAT. Floating IPs make both reachable from outside once the security group lets the traffic in, and
disassociating one cuts that path. A port hot-plugged into the running container appears inside it. A container on
host B reaches both over VXLAN. A second tenant's container on its
own network reaches the outside host but not the first tenant's network. Skipped when QEMU, runc, RabbitMQ or the test
images are missing, unless STRATUS_TEST_REQUIRE_QEMU=1."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid as uuidlib
from typing import Iterator

import pytest
import yaml

from localcloud import IMAGES, LocalCloud, _binary, _free_port, cli, missing, new_root, running_cloud, show, wait_console

TAG = uuidlib.uuid4().hex[:6]
PREFIX = f"sacc{TAG}-"
HOST_NS = f"{PREFIX}host"
HOST_B_NS = f"{PREFIX}hostb"
OUT_NS = f"{PREFIX}out"
UPLINK = f"o{TAG}"
NODE_A, NODE_B = f"dpa-{TAG}", f"dpb-{TAG}"
UNDERLAY_A, UNDERLAY_B = "192.0.2.1", "192.0.2.2"
VHOST = f"stratus-dp-{TAG}"
AMQP = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
OUTSIDE = "172.24.4.1"
SECRET = f"scenario-{TAG}"


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


def rabbitmqctl(*args: str) -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60).returncode == 0


class DataplaneCloud(LocalCloud):
    """Host A: `stratus up` with its in-process agents. Host B: `start_host_b`."""

    def __init__(self) -> None:
        self.metadata_port = _free_port()
        config = f"""
[bus]
url = "{AMQP}"

[compute]
metadata_listen = "127.0.0.1:{self.metadata_port}"
metadata_proxy_shared_secret = "{SECRET}"

[compute_agent]
host = "{NODE_A}"
driver = "qemu+container"
vif_plugging_timeout = 120

[compute_agent.qemu]
virt_type = "qemu"
shutdown_timeout = 10

[network_agent]
enabled = true
host_namespace = "{HOST_NS}"
namespace_prefix = "{PREFIX}"
physical_interface_mappings = ["public:{UPLINK}"]
local_ip = "{UNDERLAY_A}"
polling_interval = 0.2
"""
        super().__init__(new_root("stratus-dp-"), {}, config)
        self.host_b: list[subprocess.Popen[bytes]] = []
        self.data_b = self.root / "host-b"

    def start_host_b(self) -> None:
        """Host B's compute agent (containers) and network agent, on the bus and the controller's endpoints, with
        their own data dir, namespace (for devices) and namespace prefix (for DHCP namespaces)."""
        admin = yaml.safe_load(self.clouds.read_text())["clouds"]["stratus-admin"]["auth"]
        url = f"http://127.0.0.1:{self.port}"
        config = self.root / "host-b.toml"
        config.write_text(f"""
data_dir = "{self.data_b}"

[bus]
url = "{AMQP}"

[compute]
image_url = "{url}/image"

[auth]
url = "{url}/identity"
username = "{admin['username']}"
password = "{admin['password']}"
project_name = "{admin['project_name']}"

[compute_agent]
host = "{NODE_B}"
driver = "container"
vif_plugging_timeout = 120

[network_agent]
host = "{NODE_B}"
host_namespace = "{HOST_B_NS}"
namespace_prefix = "{PREFIX}b-"
local_ip = "{UNDERLAY_B}"
enable_l3 = false
polling_interval = 0.2
metadata_url = "http://127.0.0.1:{self.metadata_port}"
metadata_proxy_shared_secret = "{SECRET}"
""")
        env = {**os.environ, "NO_COLOR": "1"}
        for command in ("compute-agent", "network-agent"):
            log = (self.root / f"host-b-{command}.log").open("ab")
            self.host_b.append(subprocess.Popen([str(_binary()), command, "--config", str(config)], env=env,
                                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True))

    def stop(self) -> None:
        for proc in self.host_b:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        super().stop()

    def remove_guests(self) -> None:
        super().remove_guests()
        self.remove_containers(self.data_b / "containers")


@pytest.fixture(scope="module")
def cloud() -> Iterator[DataplaneCloud]:
    if shutil.which("qemu-system-x86_64") is None or shutil.which("runc") is None or not (
            IMAGES / "stratus-test-vm.qcow2").is_file() or not (IMAGES / "stratus-test-container.tar").is_file():
        missing("QEMU, runc or the test images (scripts/install-qemu, scripts/host-tools, cargo xtask image build)",
                "STRATUS_TEST_REQUIRE_QEMU")
    if not rabbitmqctl("add_vhost", VHOST):
        missing("RabbitMQ (rabbitmqctl add_vhost)", "STRATUS_TEST_REQUIRE_QEMU")
    rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    # Both hosts' network sides, the underlay between them, and the outside host on the external network's uplink
    # (172.24.4.1, the gateway of `public`), which serves a page that tells each caller its source address.
    for ns in (HOST_NS, HOST_B_NS, OUT_NS):
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", HOST_NS, "link", "add", "underlay", "type", "veth", "peer", "name", "underlay", "netns", HOST_B_NS)
    for ns, addr in ((HOST_NS, UNDERLAY_A), (HOST_B_NS, UNDERLAY_B)):
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "underlay")
        ip("-n", ns, "link", "set", "underlay", "up")
    ip("-n", HOST_NS, "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns", OUT_NS)
    ip("-n", OUT_NS, "addr", "add", f"{OUTSIDE}/24", "dev", "eth0")
    ip("-n", OUT_NS, "link", "set", "eth0", "up")
    c = DataplaneCloud()
    www = c.root / "www"
    (www / "cgi-bin").mkdir(parents=True)
    (www / "index.html").write_text("outside\n")
    script = www / "cgi-bin" / "ip"
    script.write_text('#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$REMOTE_ADDR"\n')
    script.chmod(0o755)
    httpd = subprocess.Popen(["ip", "netns", "exec", OUT_NS, "busybox", "httpd", "-f", "-p", f"{OUTSIDE}:80",
                              "-h", str(www)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)

    def leftovers() -> None:
        httpd.kill()
        httpd.wait()
        # The scenario's and the agents' namespaces, their processes (dnsmasq) killed first.
        for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith(PREFIX):
                for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
                    subprocess.run(["kill", "-9", pid], capture_output=True)
                subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        rabbitmqctl("delete_vhost", VHOST)

    yield from running_cloud(c, leftovers, c.start_host_b)


@pytest.fixture(scope="module")
def os_cli(cloud: DataplaneCloud):
    return cli(cloud)


def _address(os_cli, name: str, *extra: str) -> str:
    server = os_cli("server", "show", name, "-f", "json", *extra).json()
    found = re.findall(r"\d+\.\d+\.\d+\.\d+", str(server["addresses"]))
    assert found, server
    return found[0]


def _in(server_id: str, url: str) -> str | None:
    """GET `url` from inside the container `server_id` (its network namespace)."""
    return fetch(f"ctr-{server_id}", url)


def _hosts_up(os_cli) -> bool:
    computes = os_cli("compute", "service", "list", "--service", "nova-compute", "-f", "json").json()
    agents = os_cli("network", "agent", "list", "-f", "json").json()
    return {NODE_A, NODE_B} <= {s["Host"] for s in computes if s["State"] == "up"} and \
        {NODE_A, NODE_B} <= {a["Host"] for a in agents if a["Alive"] in (True, ":-)")}


def test_two_hosts_and_two_tenants_on_vxlan_networks_behind_routers(os_cli, cloud: DataplaneCloud) -> None:
    eventually("both hosts' compute and network agents up", lambda: _hosts_up(os_cli), timeout=90)
    os_cli("network", "create", "dp-net")
    assert os_cli("network", "show", "dp-net", "-f", "json").json()["provider:network_type"] == "vxlan"
    os_cli("subnet", "create", "--network", "dp-net", "--subnet-range", "10.83.0.0/24", "dp-subnet")
    os_cli("router", "create", "dp-router")
    os_cli("router", "set", "--external-gateway", "public", "dp-router")
    os_cli("router", "add", "subnet", "dp-router", "dp-subnet")
    gateway_info = os_cli("router", "show", "dp-router", "-f", "json").json()["external_gateway_info"]
    router_ip = gateway_info["external_fixed_ips"][0]["ip_address"]

    # The container first, so the VM's user data can ask it for its name.
    ctr = os_cli("server", "create", "--image", "stratus-test-container", "--flavor", "m1.nano", "--network", "dp-net",
                 "--availability-zone", f"nova:{NODE_A}", "--wait", "dp-ctr", "-f", "json").json()
    ctr_ip = _address(os_cli, "dp-ctr")
    user_data = cloud.root / "user-data"
    user_data.write_text(f"""#!/bin/sh
echo "user data: {TAG}"
for i in $(seq 1 60); do
  a=$(timeout 3 wget -q -O - http://{ctr_ip}/) && [ -n "$a" ] && echo "peer says: $a" && break
  sleep 1
done
for i in $(seq 1 60); do
  b=$(timeout 3 wget -q -O - http://{OUTSIDE}/cgi-bin/ip) && [ -n "$b" ] && echo "outside says: $b" && break
  sleep 1
done
""")
    os_cli("server", "create", "--image", "stratus-test-vm", "--flavor", "m1.nano", "--network", "dp-net",
           "--availability-zone", f"nova:{NODE_A}", "--user-data", str(user_data), "--wait", "dp-vm")
    assert {show(os_cli, n)["OS-EXT-SRV-ATTR:host"] for n in ("dp-vm", "dp-ctr")} == {NODE_A}

    # DHCP gave each the address the network service chose; the VM, without a config drive, read its name and user
    # data from the metadata service through the agent's proxy; the container from its config drive.
    vm_ip = _address(os_cli, "dp-vm")
    vm_log = wait_console(os_cli, "dp-vm", "outside says:")
    assert f"eth0: {vm_ip}/24" in vm_log and "metadata service answered" in vm_log, vm_log
    assert "hostname: dp-vm" in vm_log and f"user data: {TAG}" in vm_log, vm_log
    ctr_log = wait_console(os_cli, "dp-ctr", f"eth0: {ctr_ip}/24")
    assert "hostname: dp-ctr" in ctr_log, ctr_log
    # The two reach each other (the default group admits its own members), and the VM reached the outside host
    # through the router's SNAT: it saw the router's address, not the VM's.
    assert "peer says: dp-ctr" in vm_log, vm_log
    assert f"outside says: {router_ip}" in vm_log, vm_log
    assert eventually("the container reaching the VM", lambda: _in(ctr["id"], f"http://{vm_ip}/")) == "dp-vm"

    # Host B: a container of the same network on the other host reaches both over the VXLAN tunnel.
    far = os_cli("server", "create", "--image", "stratus-test-container", "--flavor", "m1.nano", "--network", "dp-net",
                 "--availability-zone", f"nova:{NODE_B}", "--wait", "dp-far", "-f", "json").json()
    assert show(os_cli, "dp-far")["OS-EXT-SRV-ATTR:host"] == NODE_B
    far_ip = _address(os_cli, "dp-far")
    wait_console(os_cli, "dp-far", f"eth0: {far_ip}/24")
    assert eventually("host B reaching the VM on host A", lambda: _in(far["id"], f"http://{vm_ip}/")) == "dp-vm"
    assert eventually("host B reaching the container on host A", lambda: _in(far["id"], f"http://{ctr_ip}/")) == "dp-ctr"
    assert eventually("host A reaching host B", lambda: _in(ctr["id"], f"http://{far_ip}/")) == "dp-far"

    # A port hot-plugged into the running container: its device appears inside at once, the network agent plugs
    # the host end (the port goes ACTIVE); removed, the device goes.
    extra = os_cli("port", "create", "--network", "dp-net", "dp-extra", "-f", "json").json()
    os_cli("server", "add", "port", "dp-ctr", "dp-extra")
    inside = subprocess.run(["ip", "-n", f"ctr-{ctr['id']}", "-o", "link"], capture_output=True, text=True).stdout
    assert extra["mac_address"] in inside, inside
    eventually("the hot-plugged port ACTIVE",
               lambda: os_cli("port", "show", "dp-extra", "-f", "json").json()["status"] == "ACTIVE")
    os_cli("server", "remove", "port", "dp-ctr", "dp-extra")
    inside = subprocess.run(["ip", "-n", f"ctr-{ctr['id']}", "-o", "link"], capture_output=True, text=True).stdout
    assert extra["mac_address"] not in inside, inside
    os_cli("port", "delete", "dp-extra")

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
    # With a floating IP, the container's own traffic leaves with that address.
    assert _in(ctr["id"], f"http://{OUTSIDE}/cgi-bin/ip") == fips["dp-ctr"]
    # Disassociating the VM's floating IP cuts the path from outside.
    os_cli("server", "remove", "floating", "ip", "dp-vm", fips["dp-vm"])
    eventually("the VM's floating IP no longer answering", lambda: fetch(OUT_NS, f"http://{fips['dp-vm']}/") is None)
    assert fetch(OUT_NS, f"http://{fips['dp-ctr']}/") == "dp-ctr"

    # A second tenant (the member's project) with its own network and router reaches the outside host through its
    # own SNAT, and nothing of the first tenant's network.
    other = ("--os-cloud", "stratus")
    os_cli("network", "create", "dp-other-net", *other)
    os_cli("subnet", "create", "--network", "dp-other-net", "--subnet-range", "10.84.0.0/24", "dp-other-subnet", *other)
    os_cli("router", "create", "dp-other-router", *other)
    os_cli("router", "set", "--external-gateway", "public", "dp-other-router", *other)
    os_cli("router", "add", "subnet", "dp-other-router", "dp-other-subnet", *other)
    other_router_ip = os_cli("router", "show", "dp-other-router", "-f", "json", *other).json()[
        "external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
    stranger = os_cli("server", "create", "--image", "stratus-test-container", "--flavor", "m1.nano", "--network",
                      "dp-other-net", "--wait", "dp-stranger", "-f", "json", *other).json()
    assert eventually("the second tenant reaching outside",
                      lambda: _in(stranger["id"], f"http://{OUTSIDE}/cgi-bin/ip")) == other_router_ip
    for target in (vm_ip, ctr_ip, far_ip):
        assert _in(stranger["id"], f"http://{target}/") is None, f"the second tenant reached {target}"
    assert _in(stranger["id"], f"http://{fips['dp-ctr']}/") == "dp-ctr", "a floating IP is public to every tenant"

    os_cli("server", "delete", "--wait", "dp-stranger", *other)
    os_cli("router", "remove", "subnet", "dp-other-router", "dp-other-subnet", *other)
    os_cli("router", "delete", "dp-other-router", *other)
    os_cli("network", "delete", "dp-other-net", *other)
    for name in ("dp-vm", "dp-ctr", "dp-far"):
        os_cli("server", "delete", "--wait", name)
    for fip in fips.values():
        os_cli("floating", "ip", "delete", fip)
    os_cli("router", "remove", "subnet", "dp-router", "dp-subnet")
    os_cli("router", "delete", "dp-router")
    os_cli("network", "delete", "dp-net")
    eventually("the routers' and DHCP namespaces gone", lambda: not any(
        n.startswith((f"{PREFIX}qrouter-", f"{PREFIX}qdhcp-", f"{PREFIX}b-qdhcp-"))
        for n in ip("netns", "list").split()))
