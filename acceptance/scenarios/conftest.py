"""Fixtures of the CLI scenarios: the running cloud (set up by acceptance/run) and ways to talk to it.

`acceptance/run` exports STRATUS_URL (http://127.0.0.1:PORT) and OS_CLIENT_CONFIG_FILE (the clouds.yaml that
`stratus up` wrote, with clouds `stratus-admin` and `stratus`) and puts the venv's `openstack` first on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

import pytest

CLI_TIMEOUT = 120


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(f"{name} is not set; run the scenarios through acceptance/run")
    return value


@pytest.fixture(scope="session")
def cloud_url() -> str:
    return _env("STRATUS_URL").rstrip("/")


@pytest.fixture(scope="session")
def clouds_yaml() -> str:
    path = _env("OS_CLIENT_CONFIG_FILE")
    if not os.path.isfile(path):
        raise pytest.UsageError(f"OS_CLIENT_CONFIG_FILE={path} does not exist")
    return path


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Cli = Callable[..., CliResult]


@pytest.fixture(scope="session")
def openstack(clouds_yaml: str) -> Cli:
    """Run the real `openstack` CLI: openstack("token", "issue", "-f", "json", cloud="stratus-admin")."""
    exe = shutil.which("openstack")
    if exe is None:
        raise pytest.UsageError("the openstack CLI is not on PATH; run the scenarios through acceptance/run")

    def run(*args: str, cloud: str = "stratus-admin", check: bool = True) -> CliResult:
        cmd = [exe, "--os-cloud", cloud, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
        return result

    return run


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Http = Callable[..., HttpResponse]


@pytest.fixture(scope="session")
def http(cloud_url: str) -> Http:
    """Plain HTTP against the cloud: http("GET", "/identity/v3", body=None, headers=None) -> HttpResponse."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> HttpResponse:
        req = urllib.request.Request(cloud_url + path, data=body, method=method, headers=headers or {})
        try:
            with opener.open(req, timeout=30) as resp:
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as e:
            return HttpResponse(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())

    return request


BOOT_IMAGE = "cirros-0.6.3-x86_64-disk"


@pytest.fixture(scope="session")
def boot_image(openstack: Cli) -> str:
    """A small public boot image for the `fake` driver (as DevStack's CirrOS), uploaded once per run."""
    images = openstack("image", "list", "--name", BOOT_IMAGE, "-f", "json").json()
    if images:
        return images[0]["ID"]
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"], check=True)
        made = openstack(
            "image", "create", BOOT_IMAGE, "--disk-format", "qcow2", "--container-format", "bare", "--public",
            "--file", path, "-f", "json",
        ).json()
    return made["id"]
