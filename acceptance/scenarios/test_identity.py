"""Identity scenario through the real `openstack` CLI: a new domain, project and user with `member`, that user's
own view (projects, application credentials), token revocation, and disabling the user."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import Any

import pytest
import yaml

from conftest import CLI_TIMEOUT, Cli, CliResult, Http


def _cli_with(clouds: dict[str, Any], tmp_path, *args: str, cloud: str, check: bool = True) -> CliResult:
    """Runs the CLI against an extra clouds.yaml (for users other than the generated admin/demo)."""
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": clouds}))
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(path)}
    exe = shutil.which("openstack")
    assert exe, "openstack CLI not on PATH"
    cmd = [exe, "--os-cloud", cloud, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _validate(http: Http, admin_token: str, subject: str) -> int:
    return http("GET", "/identity/v3/auth/tokens", headers={"X-Auth-Token": admin_token, "X-Subject-Token": subject}).status


def test_domain_project_user_lifecycle(openstack: Cli, http: Http, clouds_yaml: str, tmp_path) -> None:
    suffix = uuid.uuid4().hex[:8]
    domain = openstack("domain", "create", f"scen-dom-{suffix}", "-f", "json").json()
    project = openstack("project", "create", "--domain", domain["id"], f"scen-proj-{suffix}", "-f", "json").json()
    password = f"Pw-{uuid.uuid4().hex}"
    user = openstack(
        "user", "create", "--domain", domain["id"], "--password", password, f"scen-user-{suffix}", "-f", "json"
    ).json()
    openstack("role", "add", "--project", project["id"], "--user", user["id"], "member")

    with open(clouds_yaml) as f:
        base = yaml.safe_load(f)["clouds"]["stratus-admin"]
    auth_url = base["auth"]["auth_url"]
    clouds = {
        "scen-user": {
            "auth": {
                "auth_url": auth_url,
                "username": user["name"],
                "password": password,
                "user_domain_id": domain["id"],
                "project_id": project["id"],
            },
            "region_name": base.get("region_name", "RegionOne"),
            "identity_api_version": 3,
        }
    }

    # The user sees their own project, and only it.
    mine = _cli_with(clouds, tmp_path, "project", "list", "--my-projects", "-f", "json", cloud="scen-user").json()
    assert [p["ID"] for p in mine] == [project["id"]], mine

    # An application credential, shown once with its secret, authenticates on its own.
    ac = _cli_with(clouds, tmp_path, "application", "credential", "create", f"scen-ac-{suffix}", "-f", "json",
                   cloud="scen-user").json()
    # This client prints the columns of `application credential` commands capitalised.
    assert ac["Secret"], ac
    clouds["scen-ac"] = {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": auth_url, "application_credential_id": ac["ID"],
                 "application_credential_secret": ac["Secret"]},
        "region_name": base.get("region_name", "RegionOne"),
        "identity_api_version": 3,
    }
    ac_token = _cli_with(clouds, tmp_path, "token", "issue", "-f", "json", cloud="scen-ac").json()
    assert ac_token["project_id"] == project["id"], ac_token
    listed = _cli_with(clouds, tmp_path, "application", "credential", "show", ac["ID"], "-f", "json",
                       cloud="scen-user").json()
    assert listed["ID"] == ac["ID"] and not listed.get("Secret"), "the secret is shown only at creation"

    admin_token = openstack("token", "issue", "-f", "json").json()["id"]

    # Revoking a token makes it fail validation.
    t1 = _cli_with(clouds, tmp_path, "token", "issue", "-f", "json", cloud="scen-user").json()["id"]
    assert _validate(http, admin_token, t1) == 200
    openstack("token", "revoke", t1)
    assert _validate(http, admin_token, t1) == 404

    # Disabling the user stops their tokens and their logins.
    t2 = _cli_with(clouds, tmp_path, "token", "issue", "-f", "json", cloud="scen-user").json()["id"]
    assert _validate(http, admin_token, t2) == 200
    openstack("user", "set", "--disable", user["id"])
    assert _validate(http, admin_token, t2) == 404
    denied = _cli_with(clouds, tmp_path, "token", "issue", "-f", "json", cloud="scen-user", check=False)
    assert denied.returncode != 0 and "401" in (denied.stderr + denied.stdout), denied


def test_rbac_refusals(openstack: Cli, http: Http) -> None:
    member = openstack("token", "issue", "-f", "json", cloud="stratus").json()["id"]
    # A member calling an admin API: 403.
    r = http("GET", "/identity/v3/users", headers={"X-Auth-Token": member})
    assert r.status == 403, r.body
    r = http("POST", "/identity/v3/projects", body=b'{"project": {"name": "nope"}}',
             headers={"X-Auth-Token": member, "Content-Type": "application/json"})
    assert r.status == 403, r.body
    # Garbled token: 401.
    r = http("GET", "/identity/v3/auth/catalog", headers={"X-Auth-Token": "gAAAAA" + "x" * 100})
    assert r.status == 401, r.body
