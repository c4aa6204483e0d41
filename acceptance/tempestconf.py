#!/usr/bin/env python3
"""Generate a tempest.conf from a running cloud.

Reads the admin credentials from a clouds.yaml, asks Keystone for a project-scoped token, and derives everything
else from that token's service catalog: the identity URI, the region, which services Tempest should consider
available (only those in the catalog), and each service's catalog type. Where a service is present, a few
facts Tempest needs are discovered from the service itself (flavors and images for compute, the external network,
API extensions, microversion ranges); those look-ups are best effort and only warn when they fail.

Usage: tempestconf.py --clouds-yaml PATH [--cloud stratus-admin] --workspace DIR [--output FILE]
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TIMEOUT = 15.0

# (catalog types, in order of preference; tempest config group; [service_available] option or None)
SERVICES: list[tuple[tuple[str, ...], str, str | None]] = [
    (("compute",), "compute", "nova"),
    (("image",), "image", "glance"),
    (("network",), "network", "neutron"),
    (("object-store",), "object-storage", "swift"),
    (("block-storage", "volumev3", "volume"), "volume", "cinder"),
    (("placement",), "placement", None),
]
# [service_available] options of services that never appear in a Stratus catalog.
ALWAYS_UNAVAILABLE = ["horizon"]

# Modules of the Tempest tree that test each catalog service type.
TEMPEST_MODULES: dict[str, str] = {
    "identity": "tempest.api.identity",
    "compute": "tempest.api.compute",
    "image": "tempest.api.image",
    "network": "tempest.api.network",
    "object-store": "tempest.api.object_storage",
    "block-storage": "tempest.api.volume",
    "volumev3": "tempest.api.volume",
    "volume": "tempest.api.volume",
}


# Stratus' [identity] security-compliance defaults (crates/cloud/src/config.rs), as Tempest names them. `stratus up`
# inherits the environment of the acceptance run, so STRATUS_IDENTITY__<KEY> overrides apply to both.
SECURITY_COMPLIANCE: dict[str, tuple[str, int]] = {
    "user_lockout_failure_attempts": ("LOCKOUT_FAILURE_ATTEMPTS", 5),
    "user_lockout_duration": ("LOCKOUT_DURATION", 300),
    "user_unique_last_password_count": ("UNIQUE_LAST_PASSWORD_COUNT", 4),
    "user_minimum_password_age": ("MINIMUM_PASSWORD_AGE", 0),
}


def security_compliance() -> dict[str, str]:
    """The cloud's lockout and password-history settings, for Tempest's [identity] section."""
    out = {}
    for option, (key, default) in SECURITY_COMPLIANCE.items():
        raw = os.environ.get(f"STRATUS_IDENTITY__{key}", "").strip()
        try:
            out[option] = str(int(raw)) if raw else str(default)
        except ValueError as e:
            raise ConfError(f"STRATUS_IDENTITY__{key}={raw!r} is not an integer") from e
    return out


class ConfError(Exception):
    """The cloud could not be read well enough to write a configuration."""


@dataclass
class Credentials:
    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain: dict[str, str]
    project_domain: dict[str, str]
    region: str | None


@dataclass
class Cloud:
    """What a token request tells about the cloud."""

    token: str
    project_id: str
    identity_v3: str
    region: str
    user_domain_name: str
    project_domain_name: str
    # service type -> interface -> URL, for the chosen region
    endpoints: dict[str, dict[str, str]] = field(default_factory=dict)


def _domain(auth: dict[str, Any], prefix: str) -> dict[str, str]:
    """The domain reference for `user` or `project` in a clouds.yaml auth block."""
    for key in (f"{prefix}_domain_id", "domain_id"):
        if auth.get(key):
            return {"id": str(auth[key])}
    for key in (f"{prefix}_domain_name", "domain_name"):
        if auth.get(key):
            return {"name": str(auth[key])}
    return {"id": "default"}


def load_credentials(clouds_yaml: Path, cloud: str) -> Credentials:
    try:
        doc = yaml.safe_load(clouds_yaml.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfError(f"cannot read {clouds_yaml}: {e}") from e
    entry = (doc or {}).get("clouds", {}).get(cloud)
    if not isinstance(entry, dict):
        raise ConfError(f"{clouds_yaml} has no cloud named {cloud!r}")
    auth = entry.get("auth") or {}
    missing = [k for k in ("auth_url", "username", "password", "project_name") if not auth.get(k)]
    if missing:
        raise ConfError(f"cloud {cloud!r} in {clouds_yaml} lacks {', '.join(missing)}")
    return Credentials(
        auth_url=str(auth["auth_url"]),
        username=str(auth["username"]),
        password=str(auth["password"]),
        project_name=str(auth["project_name"]),
        user_domain=_domain(auth, "user"),
        project_domain=_domain(auth, "project"),
        region=entry.get("region_name"),
    )


def identity_v3_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v3") else url + "/v3"


def _request(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    # Loopback only: never route through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=TIMEOUT) as resp:
            raw = resp.read()
            status, headers = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        status, headers = e.code, dict(e.headers)
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = None
    return status, headers, payload


def authenticate(creds: Credentials) -> Cloud:
    v3 = identity_v3_url(creds.auth_url)
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": creds.username, "domain": creds.user_domain, "password": creds.password}
                },
            },
            "scope": {"project": {"name": creds.project_name, "domain": creds.project_domain}},
        }
    }
    try:
        status, headers, payload = _request("POST", f"{v3}/auth/tokens", body=body)
    except OSError as e:
        raise ConfError(f"token request to {v3} failed: {e}") from e
    token = {k.lower(): v for k, v in headers.items()}.get("x-subject-token")
    if status != 201 or not token or not isinstance(payload, dict) or "token" not in payload:
        raise ConfError(f"token request to {v3} answered {status}: {payload}")
    tok = payload["token"]
    catalog = tok.get("catalog") or []

    region = creds.region
    if not region:
        regions = [ep.get("region_id") or ep.get("region") for s in catalog for ep in s.get("endpoints", [])]
        region = next((r for r in regions if r), "RegionOne")

    endpoints: dict[str, dict[str, str]] = {}
    for service in catalog:
        for ep in service.get("endpoints", []):
            if (ep.get("region_id") or ep.get("region")) in (region, None):
                endpoints.setdefault(service["type"], {})[ep["interface"]] = ep["url"]

    identity = endpoints.get("identity", {})
    identity_url = identity.get("public") or next(iter(identity.values()), None) or creds.auth_url
    return Cloud(
        token=token,
        project_id=str(tok.get("project", {}).get("id", "")),
        identity_v3=identity_v3_url(identity_url),
        region=region,
        user_domain_name=tok.get("user", {}).get("domain", {}).get("name", "Default"),
        project_domain_name=tok.get("project", {}).get("domain", {}).get("name", "Default"),
        endpoints=endpoints,
    )


def _warn(msg: str) -> None:
    print(f"tempestconf: {msg}", file=sys.stderr)


def _get(cloud: Cloud, url: str) -> Any:
    """GET a JSON document with the admin token; None (and a warning) if that does not work."""
    try:
        status, _, payload = _request("GET", url, token=cloud.token)
    except OSError as e:
        _warn(f"GET {url}: {e}")
        return None
    if status not in (200, 300):
        _warn(f"GET {url}: HTTP {status}")
        return None
    return payload


def _version_root(cloud: Cloud, url: str) -> str:
    """The URL of a service's version document: its endpoint without a trailing project id."""
    url = url.rstrip("/")
    suffix = f"/{cloud.project_id}"
    return url[: -len(suffix)] if cloud.project_id and url.endswith(suffix) else url


def _version_range(doc: Any) -> tuple[str | None, str | None]:
    """(min, max) microversion from a single-version document or a version list."""
    if not isinstance(doc, dict):
        return None, None
    versions = [doc["version"]] if isinstance(doc.get("version"), dict) else doc.get("versions") or []
    for v in versions:
        if isinstance(v, dict) and str(v.get("status") or "").upper() in ("CURRENT", "STABLE", ""):
            top = v.get("version") or v.get("max_version") or None
            return v.get("min_version") or None, top
    return None, None


def _discover_compute(cloud: Cloud, url: str, section: dict[str, str]) -> None:
    flavors = (_get(cloud, f"{url}/flavors/detail") or {}).get("flavors") or []
    flavors = sorted(flavors, key=lambda f: (f.get("ram", 0), f.get("vcpus", 0), f.get("disk", 0)))
    if flavors:
        section["flavor_ref"] = flavors[0]["id"]
        section["flavor_ref_alt"] = flavors[min(1, len(flavors) - 1)]["id"]
    else:
        _warn("no flavors found; [compute] flavor_ref left unset")
    lo, hi = _version_range(_get(cloud, _version_root(cloud, url)))
    if lo and hi:
        section["min_microversion"] = lo
        section["max_microversion"] = hi


# The images servers boot from, as DevStack uploads CirrOS: small public qcow2 disks made here with qemu-img
# (nothing is downloaded).
BOOT_IMAGES = ("cirros-0.6.3-x86_64-disk", "cirros-0.6.3-x86_64-disk-alt")


def _boot_image_bytes() -> bytes:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "disk.qcow2"
        try:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
            return path.read_bytes()
        except (OSError, subprocess.CalledProcessError) as e:
            _warn(f"qemu-img: {e}; using a raw placeholder disk")
            return b"\0" * 65536


def _ensure_boot_images(cloud: Cloud, base: str) -> None:
    existing = (_get(cloud, f"{base}/images?status=active") or {}).get("images") or []
    names = {i.get("name") for i in existing}
    data = None
    for name in BOOT_IMAGES:
        if name in names:
            continue
        body = {"name": name, "disk_format": "qcow2", "container_format": "bare", "visibility": "public"}
        status, _, image = _request("POST", f"{base}/images", token=cloud.token, body=body)
        if status != 201 or not isinstance(image, dict):
            _warn(f"creating image {name}: HTTP {status}")
            return
        data = data if data is not None else _boot_image_bytes()
        req = urllib.request.Request(f"{base}/images/{image['id']}/file", data=data, method="PUT")
        req.add_header("Content-Type", "application/octet-stream")
        req.add_header("X-Auth-Token", cloud.token)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=TIMEOUT):
                pass
        except (OSError, urllib.error.HTTPError) as e:
            _warn(f"uploading image {name}: {e}")


def _discover_images(cloud: Cloud, url: str, compute: dict[str, str] | None) -> None:
    if compute is None:
        return
    base = url.rstrip("/")
    if not base.endswith("/v2"):
        base += "/v2"
    _ensure_boot_images(cloud, base)
    images = (_get(cloud, f"{base}/images?status=active") or {}).get("images") or []
    by_name = {i.get("name"): i for i in images}
    if all(n in by_name for n in BOOT_IMAGES):
        images = [by_name[n] for n in BOOT_IMAGES]
    if images:
        compute["image_ref"] = images[0]["id"]
        compute["image_ref_alt"] = images[min(1, len(images) - 1)]["id"]
    else:
        _warn("no active images found; [compute] image_ref left unset")


def _image_cache_enabled(cloud: Cloud, url: str) -> bool:
    base = url.rstrip("/")
    if not base.endswith("/v2"):
        base += "/v2"
    try:
        status, _, _ = _request("GET", f"{base}/cache", token=cloud.token)
    except OSError as e:
        _warn(f"GET {base}/cache: {e}")
        return False
    return status == 200


def _discover_network(cloud: Cloud, url: str, section: dict[str, str], features: dict[str, str]) -> None:
    base = url.rstrip("/")
    if not base.endswith("/v2.0"):
        base += "/v2.0"
    nets = (_get(cloud, f"{base}/networks?router:external=True") or {}).get("networks") or []
    if nets:
        section["public_network_id"] = nets[0]["id"]
        section["floating_network_name"] = nets[0].get("name", "")
    exts = (_get(cloud, f"{base}/extensions") or {}).get("extensions")
    if isinstance(exts, list):
        aliases = sorted(e["alias"] for e in exts if e.get("alias"))
        features["api_extensions"] = ",".join(aliases)
        # IPv6 subnets with RA and address modes (the DHCPv6 tests) and port security are features of the API,
        # not extensions Tempest can discover.
        features["ipv6"] = "True"
        features["ipv6_subnet_attributes"] = "True"
        if "port-security" in aliases:
            features["port_security"] = "True"


def _discover_volume(cloud: Cloud, url: str, section: dict[str, str], features: dict[str, str]) -> None:
    exts = (_get(cloud, f"{url.rstrip('/')}/extensions") or {}).get("extensions")
    if isinstance(exts, list):
        features["api_extensions"] = ",".join(sorted(e["alias"] for e in exts if e.get("alias")))
    lo, hi = _version_range(_get(cloud, _version_root(cloud, url) + "/"))
    if lo and hi:
        section["min_microversion"] = lo
        section["max_microversion"] = hi
    # Volume types the tests create match the backend's protocol and vendor; take them from its pool.
    pools = (_get(cloud, f"{url.rstrip('/')}/scheduler-stats/get_pools?detail=True") or {}).get("pools") or []
    caps = (pools[0].get("capabilities") or {}) if pools else {}
    if caps.get("storage_protocol"):
        section["storage_protocol"] = str(caps["storage_protocol"])
    if caps.get("vendor_name"):
        section["vendor_name"] = str(caps["vendor_name"])
    if caps.get("volume_backend_name"):
        section["backend_names"] = str(caps["volume_backend_name"])


def _ensure_role(cloud: Cloud, name: str) -> None:
    """Creates the role `name` unless it exists (Tempest assigns it by name, as DevStack's Swift plugin creates it)."""
    roles = (_get(cloud, f"{cloud.identity_v3}/roles?name={urllib.parse.quote(name)}") or {}).get("roles")
    if roles is None or any(r.get("name", "").lower() == name.lower() for r in roles):
        return
    try:
        status, _, payload = _request("POST", f"{cloud.identity_v3}/roles", token=cloud.token, body={"role": {"name": name}})
    except OSError as e:
        _warn(f"creating role {name}: {e}")
        return
    if status not in (201, 409):
        _warn(f"creating role {name}: HTTP {status}: {payload}")


def _discover_object_store(cloud: Cloud, url: str, section: dict[str, str], features: dict[str, str]) -> None:
    """Swift's capabilities (`GET <root>/info`) decide which of Tempest's middleware tests run."""
    root = re.split(r"(?:^|/)+v\d+(?:\.\d+)?", urllib.parse.urlsplit(url).path)[0]
    parts = urllib.parse.urlsplit(url)
    info = _get(cloud, urllib.parse.urlunsplit((parts.scheme, parts.netloc, root + "/info", "", "")))
    # Tempest gives its object-storage users the operator role; `member` owns its project's account here.
    section["operator_role"] = "member"
    section["reseller_admin_role"] = "ResellerAdmin"
    _ensure_role(cloud, "ResellerAdmin")
    if not isinstance(info, dict):
        features["discoverability"] = "False"
        features["discoverable_apis"] = ""
        features["container_sync"] = "False"
        features["object_versioning"] = "False"
        return
    apis = sorted(k for k in info if k != "swift")
    features["discoverability"] = "True"
    features["discoverable_apis"] = ",".join(apis)
    features["container_sync"] = str("container_sync" in info)
    features["object_versioning"] = str("versioned_writes" in info)
    # Tempest signs its temporary URLs with one digest; take one the cluster allows (SHA-256 when it can).
    digests = (info.get("tempurl") or {}).get("allowed_digests") or []
    if digests:
        features["tempurl_digest_hashlib"] = "sha256" if "sha256" in digests else str(digests[0])


def build_config(creds: Credentials, cloud: Cloud, workspace: Path) -> configparser.ConfigParser:
    conf = configparser.ConfigParser(interpolation=None)
    conf["DEFAULT"] = {"log_dir": str(workspace / "logs"), "log_file": "tempest.log"}
    conf["oslo_concurrency"] = {"lock_path": str(workspace / "tempest_lock")}
    conf["auth"] = {
        "use_dynamic_credentials": "True",
        "admin_username": creds.username,
        "admin_password": creds.password,
        "admin_project_name": creds.project_name,
        "admin_domain_name": cloud.user_domain_name,
        "admin_user_domain_name": cloud.user_domain_name,
        "admin_project_domain_name": cloud.project_domain_name,
        "default_credentials_domain_name": cloud.user_domain_name,
    }
    conf["identity"] = {
        "uri_v3": cloud.identity_v3,
        "auth_version": "v3",
        "region": cloud.region,
        "v3_endpoint_type": "public",
    }
    conf["identity"].update(security_compliance())
    conf["identity-feature-enabled"] = {
        "api_v2": "False",
        "api_v2_admin": "False",
        "api_v3": "True",
        "security_compliance": "True",
    }
    conf["service-clients"] = {"http_timeout": "60"}
    # No guest images or SSH reachability on a laptop cloud: keep Tempest from trying to log into servers.
    conf["validation"] = {"run_validation": "False"}

    available: dict[str, str] = {name: "False" for name in ALWAYS_UNAVAILABLE}
    sections: dict[str, dict[str, str]] = {}
    for types, group, option in SERVICES:
        present = next((t for t in types if t in cloud.endpoints), None)
        if option:
            available[option] = str(present is not None)
        if present is None:
            continue
        sections[group] = {"catalog_type": present, "region": cloud.region, "endpoint_type": "public"}

    def url_of(group: str) -> str | None:
        section = sections.get(group)
        return cloud.endpoints[section["catalog_type"]].get("public") if section else None

    compute_url = url_of("compute")
    if compute_url:
        _discover_compute(cloud, compute_url, sections["compute"])
        # What the compute service and its fake driver do; the rest waits for later work (and real guests).
        sections["compute-feature-enabled"] = {
            "console_output": "True",
            "pause": "True",
            "suspend": "True",
            "change_password": "False",
            "resize": "True",
            "shelve": "True",
            "snapshot": "True",
            "rescue": "True",
            "live_migration": "False",
            "cold_migration": "False",
            "vnc_console": "False",
            "spice_console": "False",
            "serial_console": "False",
            "interface_attach": "True",
            "personality": "False",
            "config_drive": "False",
            "metadata_service": "False",
            "attach_encrypted_volume": "False",
            "block_migration_for_live_migration": "False",
            "hostname_fqdn_sanitization": "False",
        }
    image_url = url_of("image")
    if image_url:
        # Stratus stores image data as given (no format inspection) and has only the file store, no http store.
        sections["image-feature-enabled"] = {
            "api_v2": "True",
            "import_image": "True",
            "image_format_enforcement": "False",
            "manage_locations": "False",
            "http_store_enabled": "False",
            "do_secure_hash": "True",
        }
        _discover_images(cloud, image_url, sections.get("compute"))
        # Tempest's cache tests (tempest.api.image.v2.admin.test_image_caching) are switched on by
        # [image] image_caching_enabled, not by an [image-feature-enabled] option; enable them when the node answers
        # the cache API (Image API 2.14+), i.e. when its image cache is on.
        if _image_cache_enabled(cloud, image_url):
            sections["image"]["image_caching_enabled"] = "True"
    network_url = url_of("network")
    if network_url:
        sections["network-feature-enabled"] = {}
        _discover_network(cloud, network_url, sections["network"], sections["network-feature-enabled"])
    volume_url = url_of("volume")
    if volume_url:
        sections["volume-feature-enabled"] = {}
        _discover_volume(cloud, volume_url, sections["volume"], sections["volume-feature-enabled"])

    object_url = url_of("object-storage")
    if object_url:
        sections["object-storage-feature-enabled"] = {}
        _discover_object_store(cloud, object_url, sections["object-storage"], sections["object-storage-feature-enabled"])

    for name, values in sections.items():
        if values:
            conf[name] = values
    conf["service_available"] = available
    return conf


def tempest_modules(service_types: list[str] | set[str]) -> list[str]:
    """The Tempest API modules that test the given catalog service types."""
    return sorted({TEMPEST_MODULES[t] for t in service_types if t in TEMPEST_MODULES})


def write_config(conf: configparser.ConfigParser, output: Path, source: str) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with output.open("w") as f:
        f.write(f"# Generated by acceptance/tempestconf.py from {source} at {stamp}. Do not edit.\n")
        conf.write(f)


def generate(clouds_yaml: Path, cloud_name: str, workspace: Path, output: Path) -> Cloud:
    """Write `output` for the cloud `cloud_name`; returns what the token request told about the cloud."""
    creds = load_credentials(clouds_yaml, cloud_name)
    cloud = authenticate(creds)
    write_config(build_config(creds, cloud, workspace), output, cloud.identity_v3)
    return cloud


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clouds-yaml", type=Path, required=True)
    parser.add_argument("--cloud", default="stratus-admin")
    parser.add_argument("--workspace", type=Path, required=True, help="the Tempest workspace (tempest init)")
    parser.add_argument("--output", type=Path, help="default: WORKSPACE/etc/tempest.conf")
    args = parser.parse_args(argv)
    workspace = args.workspace.resolve()
    output = args.output or workspace / "etc" / "tempest.conf"
    try:
        cloud = generate(args.clouds_yaml, args.cloud, workspace, output)
    except ConfError as e:
        print(f"tempestconf: {e}", file=sys.stderr)
        return 1
    print(f"tempestconf: wrote {output} (services: {', '.join(sorted(cloud.endpoints)) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
