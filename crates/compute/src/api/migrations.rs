//! `/os-migrations` (admins): the record of every resize, with upstream's filters, paging (2.59) and views by
//! microversion; and `/servers/{id}/migrations`, the live migrations in progress (there are none here).

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    extract::{Path, State},
    routing::get,
};
use serde_json::{Value, json};

use super::{AppState, naive_time, v};
use crate::store::{MigrationFilter, MigrationRow};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-migrations", get(list))
        .route("/v2.1/servers/{id}/migrations", get(server_list))
        .route("/v2.1/servers/{id}/migrations/{migration_id}", get(server_show))
}

/// A flavor's id as upstream's integer `instance_type_id`, where the flavor id is a number.
fn flavor_number(flavorid: &Option<String>) -> Value {
    flavorid.as_deref().and_then(|f| f.parse::<i64>().ok()).map_or(Value::Null, |n| json!(n))
}

fn view(m: &MigrationRow, mv: Microversion) -> Value {
    let mut out = json!({
        "id": m.id,
        "status": m.status,
        "instance_uuid": m.instance_uuid,
        "source_node": m.source_node,
        "source_compute": m.source_compute,
        "dest_node": m.dest_node,
        "dest_compute": m.dest_compute,
        "dest_host": m.dest_host,
        "old_instance_type_id": flavor_number(&m.old_flavorid),
        "new_instance_type_id": flavor_number(&m.new_flavorid),
        "created_at": naive_time(m.created_at),
        "updated_at": m.updated_at.map(naive_time),
    });
    if mv >= v(23) {
        out["migration_type"] = json!(m.migration_type);
    }
    if mv >= v(59) {
        out["uuid"] = json!(m.uuid);
    }
    if mv >= v(80) {
        out["user_id"] = json!(m.user_id);
        out["project_id"] = json!(m.project_id);
    }
    out
}

/// `GET /os-migrations`.
async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-migrations:index")?;
    let text = |k: &str| q.get(k).filter(|x| !x.is_empty()).map(str::to_string);
    let mut f = MigrationFilter {
        instance_uuid: text("instance_uuid"),
        status: text("status"),
        migration_type: text("migration_type"),
        host: text("host"),
        source_compute: text("source_compute"),
        ..Default::default()
    };
    if mv >= v(59) {
        if let Some(cs) = q.get("changes-since") {
            f.changes_since = Some(super::servers::parse_time("changes-since", cs)?);
        }
        if let Some(l) = q.get("limit") {
            let n = l.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request(format!("Invalid input for query parameters limit. Value: {l}. '{l}' does not match '^[0-9]*$'"))
            })?;
            f.limit = Some(n);
        }
        if let Some(marker) = q.get("marker") {
            let found = s.compute.migration(marker).await?;
            let m = found.ok_or_else(|| ApiError::bad_request(format!("Marker {marker} could not be found.")))?;
            f.marker_id = Some(m.id);
        }
    }
    if mv >= v(66)
        && let Some(cb) = q.get("changes-before")
    {
        let before = super::servers::parse_time("changes-before", cb)?;
        if f.changes_since.is_some_and(|since| since > before) {
            return Err(ApiError::bad_request("The value of changes-since must be less than or equal to changes-before."));
        }
        f.changes_before = Some(before);
    }
    if mv >= v(80) {
        f.user_id = text("user_id");
        f.project_id = text("project_id");
    }
    let rows = s.compute.migrations(&f).await?;
    let mut body = json!({"migrations": rows.iter().map(|m| view(m, mv)).collect::<Vec<_>>()});
    if mv >= v(59)
        && let (Some(limit), Some(last)) = (f.limit, rows.last())
        && rows.len() as i64 == limit
    {
        let href = format!("{}/v2.1/os-migrations?limit={limit}&marker={}", s.base_url, last.uuid);
        body["migrations_links"] = json!([{"rel": "next", "href": href}]);
    }
    Ok(Json(body))
}

/// `GET /servers/{id}/migrations` (2.23+): the server's live migrations in progress; none are ever running here.
async fn server_list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if mv < v(23) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    super::servers::visible_server(&s, &ctx, &id, "os_compute_api:servers:migrations:index").await?;
    Ok(Json(json!({"migrations": []})))
}

/// `GET /servers/{id}/migrations/{migration_id}` (2.23+): a live migration in progress, so never found here.
async fn server_show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path((id, migration_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if mv < v(23) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    super::servers::visible_server(&s, &ctx, &id, "os_compute_api:servers:migrations:show").await?;
    Err(ApiError::not_found(format!("In-progress live migration {migration_id} is not found for server {id}.")))
}
