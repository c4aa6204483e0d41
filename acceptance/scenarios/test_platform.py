"""Platform scenarios: tokens and the catalog through the real `openstack` CLI, and the wire conventions every
Stratus API shares (JSON errors, 404/400/405, request ids) over plain HTTP."""

from __future__ import annotations

import datetime
import json
import re
import urllib.parse
from typing import Any

import pytest
import yaml

from conftest import Cli, Http, HttpResponse

REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _issue(openstack: Cli, cloud: str) -> dict[str, str]:
    token = openstack("token", "issue", "-f", "json", cloud=cloud).json()
    assert isinstance(token, dict), token
    return token


def _keystone_error(resp: HttpResponse, code: int, title: str) -> None:
    assert resp.status == code, resp.body
    assert "application/json" in resp.headers.get("content-type", ""), resp.headers
    err = resp.json()["error"]
    assert err["code"] == code
    assert err["title"] == title
    assert isinstance(err["message"], str) and err["message"]


@pytest.fixture(scope="session")
def admin_token(openstack: Cli) -> dict[str, str]:
    return _issue(openstack, "stratus-admin")


@pytest.fixture(scope="session")
def admin_auth_body(clouds_yaml: str) -> bytes:
    """A password-auth request body for the admin user, from clouds.yaml."""
    with open(clouds_yaml) as f:
        auth: dict[str, Any] = yaml.safe_load(f)["clouds"]["stratus-admin"]["auth"]

    def domain(kind: str) -> dict[str, str]:
        if auth.get(f"{kind}_domain_id"):
            return {"id": auth[f"{kind}_domain_id"]}
        return {"name": auth.get(f"{kind}_domain_name", "Default")}

    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": auth["username"], "domain": domain("user"), "password": auth["password"]}
                },
            },
            "scope": {"project": {"name": auth["project_name"], "domain": domain("project")}},
        }
    }
    return json.dumps(body).encode()


# ----------------------------------------------------------------------------------------- through the CLI


def test_admin_token_issue(admin_token: dict[str, str]) -> None:
    for key in ("id", "expires", "project_id", "user_id"):
        assert admin_token.get(key), f"token issue lacks {key}: {admin_token}"
    expires = datetime.datetime.strptime(admin_token["expires"], "%Y-%m-%dT%H:%M:%S%z")
    assert expires > datetime.datetime.now(datetime.timezone.utc)


def test_issued_token_validates(admin_token: dict[str, str], http: Http) -> None:
    headers = {"X-Auth-Token": admin_token["id"], "X-Subject-Token": admin_token["id"], "Accept": "application/json"}
    resp = http("GET", "/identity/v3/auth/tokens", headers=headers)
    assert resp.status == 200, resp.body
    token = resp.json()["token"]
    assert token["user"]["id"] == admin_token["user_id"]
    assert token["project"]["id"] == admin_token["project_id"]


def test_demo_token_issue(openstack: Cli, admin_token: dict[str, str]) -> None:
    demo = _issue(openstack, "stratus")
    for key in ("id", "expires", "project_id", "user_id"):
        assert demo.get(key), f"token issue lacks {key}: {demo}"
    assert demo["user_id"] != admin_token["user_id"]
    assert demo["project_id"] != admin_token["project_id"]


def test_catalog_lists_identity(openstack: Cli, cloud_url: str, http: Http) -> None:
    catalog = openstack("catalog", "list", "-f", "json").json()
    identity = [s for s in catalog if s["Type"] == "identity"]
    assert len(identity) == 1, catalog
    endpoints = identity[0]["Endpoints"]
    assert {ep["interface"] for ep in endpoints} >= {"public", "internal", "admin"}, endpoints

    cloud = urllib.parse.urlsplit(cloud_url)
    for ep in endpoints:
        assert (ep.get("region_id") or ep.get("region")) == "RegionOne", ep
        url = urllib.parse.urlsplit(ep["url"])
        assert (url.scheme, url.port) == (cloud.scheme, cloud.port), ep
        assert url.hostname in ("127.0.0.1", "localhost"), ep
        # The endpoint answers with a version document (a list, or v3 itself).
        resp = http("GET", url.path or "/", headers={"Accept": "application/json"})
        assert resp.status in (200, 300), (ep, resp.status)


def test_wrong_password_is_401(openstack: Cli) -> None:
    result = openstack("--os-password", "not-the-password", "token", "issue", check=False)
    assert result.returncode != 0
    assert "HTTP 401" in result.stderr, result.stderr


# ----------------------------------------------------------------------------------------- plain HTTP


def test_identity_version_document(http: Http, cloud_url: str) -> None:
    resp = http("GET", "/identity/v3", headers={"Accept": "application/json"})
    assert resp.status == 200
    version = resp.json()["version"]
    assert version["id"].startswith("v3")
    assert version["status"] == "stable"
    self_links = [link["href"] for link in version["links"] if link["rel"] == "self"]
    assert self_links and self_links[0].startswith(cloud_url + "/identity/v3")


@pytest.mark.parametrize("path", ["/no-such-path", "/identity/v3/no-such-path"])
def test_unknown_path_is_404_json(http: Http, path: str) -> None:
    resp = http("GET", path, headers={"Accept": "application/json"})
    assert resp.status == 404
    assert "application/json" in resp.headers.get("content-type", ""), resp.headers
    resp.json()
    if path.startswith("/identity/"):
        _keystone_error(resp, 404, "Not Found")


def test_malformed_json_is_400(http: Http) -> None:
    resp = http("POST", "/identity/v3/auth/tokens", body=b'{"auth": {"identity": ', headers=JSON_HEADERS)
    _keystone_error(resp, 400, "Bad Request")


def test_wrong_method_is_405_with_allow(http: Http) -> None:
    resp = http("DELETE", "/identity/v3", headers={"Accept": "application/json"})
    _keystone_error(resp, 405, "Method Not Allowed")
    allowed = {m.strip().upper() for m in resp.headers.get("allow", "").split(",")}
    assert "GET" in allowed, resp.headers


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/identity/v3", None, 200),
        ("POST", "/identity/v3/auth/tokens", "admin", 201),
        ("GET", "/no-such-path", None, 404),
        ("POST", "/identity/v3/auth/tokens", b"{", 400),
        ("DELETE", "/identity/v3", None, 405),
    ],
)
def test_every_response_has_a_request_id(
    http: Http, admin_auth_body: bytes, method: str, path: str, body: bytes | str | None, status: int
) -> None:
    data = admin_auth_body if body == "admin" else body
    assert not isinstance(data, str)
    resp = http(method, path, body=data, headers=JSON_HEADERS)
    assert resp.status == status, resp.body
    assert REQUEST_ID.match(resp.headers.get("x-openstack-request-id", "")), resp.headers
