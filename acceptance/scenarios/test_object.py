"""Object storage scenarios: the Swift API v1 through the real `openstack container`/`openstack object` commands —
containers with metadata, a multi-MiB upload saved back byte-identical, object metadata, listings, deletes — and
what a project member sees of another project's account; then through the real `swift` CLI: a public container read
anonymously with curl, a temporary URL that works until it expires, segmented uploads (SLO and DLO) downloaded
byte-identical."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import Cli, CliResult


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


# ------------------------------------------------------------------------------------- the swift CLI (swiftclient)


@pytest.fixture(scope="session")
def swift(clouds_yaml: str) -> Cli:
    """Run the real `swift` CLI as the demo member: swift("stat", "-v")."""
    exe = shutil.which("swift")
    if exe is None:
        raise pytest.UsageError("the swift CLI is not on PATH; run the scenarios through acceptance/run")
    auth = yaml.safe_load(Path(clouds_yaml).read_text())["clouds"]["stratus"]
    region = auth.get("region_name")
    auth = auth["auth"]
    url = auth["auth_url"].rstrip("/")
    url = url if url.endswith("/v3") else url + "/v3"
    base = [
        exe, "--auth-version", "3", "--os-auth-url", url,
        "--os-username", auth["username"], "--os-password", auth["password"],
        "--os-project-name", auth["project_name"],
        "--os-user-domain-id", auth.get("user_domain_id", "default"),
        "--os-project-domain-id", auth.get("project_domain_id", "default"),
    ]  # fmt: skip
    if region:
        base += ["--os-region-name", region]

    def run(*args: str, check: bool = True) -> CliResult:
        proc = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            pytest.fail(f"swift {' '.join(args)} exited with {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
        return result

    return run


def anonymous_get(url: str) -> tuple[int, bytes]:
    """GET without a token, with curl: (status, body)."""
    proc = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}", url],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    body, _, status = proc.stdout.rpartition(b"\n")
    return int(status), body


def storage_url(swift: Cli) -> str:
    """The demo account's URL, as `swift auth` prints it."""
    out = swift("auth").stdout
    for line in out.splitlines():
        if "OS_STORAGE_URL=" in line:
            return line.split("OS_STORAGE_URL=", 1)[1].strip().strip("'\"")
    raise AssertionError(f"no storage URL in: {out}")


def test_swift_public_container_is_read_anonymously(swift: Cli, tmp_path: Path) -> None:
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello, world\n")
    swift("upload", "--object-name", "hello.txt", "scenario-public", str(src))
    account = storage_url(swift)
    status, _ = anonymous_get(f"{account}/scenario-public/hello.txt")
    assert status == 401, "private until the ACL says otherwise"

    swift("post", "-r", ".r:*", "scenario-public")
    assert ".r:*" in swift("stat", "scenario-public").stdout
    status, body = anonymous_get(f"{account}/scenario-public/hello.txt")
    assert (status, body) == (200, b"hello, world\n")
    status, _ = anonymous_get(f"{account}/scenario-public")
    assert status == 401, "listing needs .rlistings"
    swift("post", "-r", ".r:*,.rlistings", "scenario-public")
    status, body = anonymous_get(f"{account}/scenario-public")
    assert (status, body) == (200, b"hello.txt\n")
    swift("delete", "scenario-public")


def test_swift_tempurl_works_until_it_expires(swift: Cli, cloud_url: str, tmp_path: Path) -> None:
    src = tmp_path / "temp.bin"
    src.write_bytes(os.urandom(4096))
    swift("upload", "--object-name", "temp.bin", "scenario-temp", str(src))
    swift("post", "-m", "Temp-URL-Key:scenario-secret")
    account = storage_url(swift)
    mount, _, v1 = account.partition("/v1/")
    path = f"/v1/{v1}/scenario-temp/temp.bin"

    signed = swift("tempurl", "GET", "600", path, "scenario-secret").stdout.strip()
    status, body = anonymous_get(mount + signed)
    assert (status, body) == (200, src.read_bytes())

    short = swift("tempurl", "GET", "2", path, "scenario-secret").stdout.strip()
    assert anonymous_get(mount + short)[0] == 200
    time.sleep(3)
    assert anonymous_get(mount + short)[0] == 401, "expired"
    wrong = swift("tempurl", "GET", "600", path, "not-the-key").stdout.strip()
    assert anonymous_get(mount + wrong)[0] == 401
    swift("post", "-m", "Temp-URL-Key:")
    swift("delete", "scenario-temp")


@pytest.mark.parametrize("kind", ["slo", "dlo"])
def test_swift_segmented_upload_downloads_identical(swift: Cli, tmp_path: Path, kind: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 777)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    container = f"scenario-{kind}"
    args = ["upload", "--segment-size", "1048576", "--object-name", "big.bin"]
    args.append("--use-slo" if kind == "slo" else "--use-dlo")
    swift(*args, container, str(src))

    stat = swift("stat", container, "big.bin").stdout
    if kind == "slo":
        assert "X-Static-Large-Object: True" in stat, stat
    else:
        assert f"Manifest: {container}_segments/big.bin/" in stat, stat
    assert "Content Length: " + str(len(data)) in stat, stat
    segments = swift("list", f"{container}_segments").stdout.split()
    assert len(segments) == 4, segments

    out = tmp_path / "downloaded.bin"
    swift("download", container, "big.bin", "-o", str(out))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    swift("delete", container, "big.bin")
    assert swift("list", f"{container}_segments").stdout.split() == [], "segments go with the manifest"
    swift("delete", container)
    swift("delete", f"{container}_segments", check=False)
