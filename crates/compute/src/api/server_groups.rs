//! Server groups (`/os-server-groups`): create, list (`all_projects` for admins, `limit`/`offset`), show and
//! delete (`policies`, a one-item list, before 2.64; `policy` and `rules` from 2.64); and the `group` scheduler hint
//! of a server create.

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use serde_json::{Value, json};

use super::{AppState, body, invalid, member, only, v};
use crate::{server_groups::POLICIES, servers::Caller, store::ServerGroupRow};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-server-groups", get(list).post(create))
        .route("/v2.1/os-server-groups/{id}", get(show).delete(delete))
}

const MAX_LIMIT: usize = 1000;

fn enforce(s: &AppState, ctx: &Context, action: &str, project_id: &str) -> Result<(), ApiError> {
    s.policy.enforce(
        &format!("os_compute_api:os-server-groups:{action}"),
        ctx,
        &json!({"project_id": project_id, "user_id": ctx.user_id}),
    )
}

/// The server group representation: every microversion-dependent field of a group is decided here.
async fn view(s: &AppState, g: &ServerGroupRow, mv: Microversion) -> Result<Value, ApiError> {
    let mut out = json!({
        "id": g.uuid,
        "name": g.name,
        "members": s.compute.server_group_members(&g.uuid).await?,
    });
    if mv >= v(64) {
        out["policy"] = json!(g.policy);
        out["rules"] = match g.max_server_per_host {
            Some(n) => json!({"max_server_per_host": n}),
            None => json!({}),
        };
    } else {
        out["policies"] = json!([g.policy]);
        out["metadata"] = json!({});
    }
    if mv >= v(13) {
        out["user_id"] = json!(g.user_id);
        out["project_id"] = json!(g.project_id);
    }
    Ok(out)
}

/// The policies a group may have at `mv`: the soft ones from 2.15.
fn policies_at(mv: Microversion) -> &'static [&'static str] {
    if mv >= v(15) { POLICIES } else { &POLICIES[..2] }
}

/// The `group` of a server create's scheduler hints (`os:scheduler_hints`, or the older `OS-SCH-HNT:` key): a
/// uuid, returned in its canonical form.
pub(super) fn group_hint(v: &Value) -> Result<Option<String>, ApiError> {
    for key in ["os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"] {
        let Some(hints) = v.get(key) else { continue };
        let Value::Object(hints) = hints else {
            return Err(invalid(key, hints, &format!("{hints} is not of type 'object'")));
        };
        match hints.get("group") {
            None => {}
            Some(Value::String(g)) => match uuid::Uuid::parse_str(g) {
                Ok(u) => return Ok(Some(u.hyphenated().to_string())),
                Err(_) => return Err(invalid("group", &hints["group"], &format!("'{g}' is not a 'uuid'"))),
            },
            Some(other) => return Err(invalid("group", other, &format!("{other} is not of type 'string'"))),
        }
    }
    Ok(None)
}

/// A create body: `name`, the one policy (`policies` before 2.64, `policy` from 2.64) and the
/// `max_server_per_host` rule (2.64).
#[derive(Debug, PartialEq)]
struct NewGroup {
    name: String,
    policy: String,
    max_server_per_host: Option<i64>,
}

fn parse_create(bytes: &[u8], mv: Microversion) -> Result<NewGroup, ApiError> {
    let b = body(bytes)?;
    if let Some(o) = b.as_object() {
        only(o, &["server_group"])?;
    }
    let m = member(&b, "server_group")?;
    let modern = mv >= v(64);
    only(m, if modern { &["name", "policy", "rules"] } else { &["name", "policies"] })?;
    let required = |field: &str| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute server_group. Value: {}. '{field}' is a required property",
            Value::Object(m.clone())
        ))
    };
    let name = match m.get("name") {
        None => return Err(required("name")),
        Some(Value::String(n)) if n.is_empty() => return Err(invalid("name", &m["name"], &format!("'{n}' is too short"))),
        Some(Value::String(n)) if n.chars().count() > 255 => {
            return Err(invalid("name", &m["name"], &format!("'{n}' is too long")));
        }
        Some(Value::String(n)) if n.trim() != n || n.chars().any(char::is_control) => {
            return Err(ApiError::bad_request(
                "An invalid 'name' value was provided. The name must be: printable characters. Can not start or end \
                 with whitespace.",
            ));
        }
        Some(Value::String(n)) => n.clone(),
        Some(other) => return Err(invalid("name", other, &format!("{other} is not of type 'string'"))),
    };
    let allowed = policies_at(mv);
    let one_of = |p: &Value, field: &str| -> Result<String, ApiError> {
        match p {
            Value::String(p) if allowed.contains(&p.as_str()) => Ok(p.clone()),
            other => {
                let names = allowed.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", ");
                Err(invalid(field, other, &format!("{other} is not one of [{names}]")))
            }
        }
    };
    if modern {
        let policy = one_of(m.get("policy").ok_or_else(|| required("policy"))?, "policy")?;
        let max_server_per_host = match m.get("rules") {
            None => None,
            Some(Value::Object(r)) => {
                only(r, &["max_server_per_host"])?;
                match r.get("max_server_per_host") {
                    None => None,
                    Some(n) => {
                        let parsed = n.as_i64().or_else(|| n.as_str().and_then(|t| t.parse().ok()));
                        match parsed {
                            Some(k) if k >= 1 => Some(k),
                            Some(_) => {
                                return Err(invalid(
                                    "max_server_per_host",
                                    n,
                                    &format!("{n} is less than the minimum of 1"),
                                ));
                            }
                            None => {
                                return Err(invalid(
                                    "max_server_per_host",
                                    n,
                                    &format!("{n} is not of type 'integer', 'string'"),
                                ));
                            }
                        }
                    }
                }
            }
            Some(other) => {
                return Err(invalid("rules", other, &format!("{other} is not of type 'object'")));
            }
        };
        if m.get("rules").is_some_and(|r| r.as_object().is_some_and(|r| !r.is_empty())) && policy != "anti-affinity" {
            return Err(ApiError::bad_request(format!(
                "Only anti-affinity policy supports rules. Policy {policy} has rules."
            )));
        }
        return Ok(NewGroup { name, policy, max_server_per_host });
    }
    let policies = match m.get("policies") {
        None => return Err(required("policies")),
        Some(Value::Array(p)) => p,
        Some(other) => return Err(invalid("policies", other, &format!("{other} is not of type 'array'"))),
    };
    let list = Value::Array(policies.clone());
    let policy = match policies.as_slice() {
        [] => return Err(invalid("policies", &list, &format!("{list} is too short"))),
        [p] => one_of(p, "0")?,
        [_, extra, ..] => {
            return Err(invalid(
                "policies",
                &list,
                &format!("Additional items are not allowed ({extra} was unexpected)"),
            ));
        }
    };
    Ok(NewGroup { name, policy, max_server_per_host: None })
}

async fn create(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new = parse_create(&bytes, mv)?;
    let project = ctx.project_id.clone().unwrap_or_default();
    enforce(&s, &ctx, "create", &project)?;
    let caller = Caller { user_id: ctx.user_id.clone(), project_id: project, admin: s.is_admin(&ctx) };
    let g = s.compute.server_group_create(&caller, &new.name, &new.policy, new.max_server_per_host).await?;
    Ok(Json(json!({"server_group": view(&s, &g, mv).await?})))
}

/// A non-negative integer query parameter, with Nova's messages.
fn count_param(q: &QueryPairs, name: &str) -> Result<Option<usize>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<i64>() {
            Err(_) => Err(ApiError::bad_request(format!("{name} param must be an integer"))),
            Ok(n) if n < 0 => Err(ApiError::bad_request(format!("{name} param must be positive"))),
            Ok(n) => Ok(Some(n as usize)),
        },
    }
}

async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let project = ctx.project_id.clone().unwrap_or_default();
    enforce(&s, &ctx, "index", &project)?;
    let groups = if q.get("all_projects").is_some() {
        enforce(&s, &ctx, "index:all_projects", &project)?;
        s.compute.server_groups(None).await?
    } else {
        s.compute.server_groups(Some(&project)).await?
    };
    let offset = count_param(&q, "offset")?.unwrap_or(0);
    let limit = count_param(&q, "limit")?.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
    let mut out = Vec::new();
    for g in groups.iter().skip(offset).take(limit) {
        out.push(view(&s, g, mv).await?);
    }
    Ok(Json(json!({"server_groups": out})))
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let g = s.compute.server_group(&id).await?;
    enforce(&s, &ctx, "show", &g.project_id)?;
    Ok(Json(json!({"server_group": view(&s, &g, mv).await?})))
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let g = s.compute.server_group(&id).await?;
    enforce(&s, &ctx, "delete", &g.project_id)?;
    s.compute.server_group_delete(&g.uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies() {
        let at = |mv: u32, b: &str| parse_create(b.as_bytes(), v(mv));
        let ok = at(1, r#"{"server_group": {"name": "g", "policies": ["anti-affinity"]}}"#).unwrap();
        assert_eq!((ok.name.as_str(), ok.policy.as_str()), ("g", "anti-affinity"));
        // Soft policies from 2.15; `policy` and `rules` from 2.64, `policies` no more.
        assert!(at(14, r#"{"server_group": {"name": "g", "policies": ["soft-affinity"]}}"#).is_err());
        assert!(at(15, r#"{"server_group": {"name": "g", "policies": ["soft-affinity"]}}"#).is_ok());
        assert!(at(64, r#"{"server_group": {"name": "g", "policies": ["affinity"]}}"#).is_err());
        let r = at(
            64,
            r#"{"server_group": {"name": "g", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}}"#,
        );
        assert_eq!(r.unwrap().max_server_per_host, Some(2));
        assert!(
            at(64, r#"{"server_group": {"name": "g", "policy": "affinity", "rules": {"max_server_per_host": 2}}}"#)
                .is_err()
        );
        assert!(
            at(
                64,
                r#"{"server_group": {"name": "g", "policy": "anti-affinity", "rules": {"max_server_per_host": 0}}}"#
            )
            .is_err()
        );
        for bad in [
            r#"{"server_group": {"name": "g", "policies": ["nope"]}}"#,
            r#"{"server_group": {"name": "g", "policies": []}}"#,
            r#"{"server_group": {"name": "g", "policies": ["affinity", "anti-affinity"]}}"#,
            r#"{"server_group": {"name": "g", "policies": "affinity"}}"#,
            r#"{"server_group": {"name": "", "policies": ["affinity"]}}"#,
            r#"{"server_group": {"name": " g", "policies": ["affinity"]}}"#,
            r#"{"server_group": {"policies": ["affinity"]}}"#,
            r#"{"server_group": {"name": "g", "policies": ["affinity"], "x": 1}}"#,
        ] {
            assert!(parse_create(bad.as_bytes(), v(1)).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_hints() {
        let u = "6B2A4D4C-0000-4000-8000-000000000001";
        let v = json!({"server": {}, "os:scheduler_hints": {"group": u}});
        assert_eq!(group_hint(&v).unwrap().as_deref(), Some("6b2a4d4c-0000-4000-8000-000000000001"));
        assert_eq!(group_hint(&json!({"server": {}})).unwrap(), None);
        assert!(group_hint(&json!({"os:scheduler_hints": {"group": "x"}})).is_err());
        assert!(group_hint(&json!({"OS-SCH-HNT:scheduler_hints": {"group": 1}})).is_err());
    }
}
