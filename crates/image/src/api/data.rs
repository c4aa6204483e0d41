//! Image data: `PUT`/`GET /v2/images/{id}/file` (streamed both ways, `Range` on download), the
//! `glance-direct` import (`PUT /v2/images/{id}/stage`, `POST /v2/images/{id}/import`), and the removal of an
//! image's data from one store (`DELETE /v2/stores/{store_id}/{image_id}`). Uploads and imports name their store
//! with `X-Image-Meta-Store`; imports also with `stores` or `all_stores` in the body.

use ::auth::Context;
use api_common::{ApiError, wire::RequestId};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Extension, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use futures::StreamExt;

use super::{AppState, authorized_image, parse_json};
use crate::{
    adapter::{ByteRange, ByteStream},
    error::Error,
    model::task_json,
    service::ImportRequest,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/images/{id}/file", put(upload).get(download).layer(DefaultBodyLimit::disable()))
        .route("/v2/images/{id}/stage", put(stage).layer(DefaultBodyLimit::disable()))
        .route("/v2/images/{id}/import", post(import))
        .route("/v2/images/{id}/tasks", get(tasks))
        .route("/v2/stores/{store_id}/{id}", delete(delete_from_store))
}

/// The store a request names with `X-Image-Meta-Store`.
fn store_header(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    match headers.get("x-image-meta-store") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(Some)
            .ok_or_else(|| Error::BadRequest("Invalid X-Image-Meta-Store header.".into())),
    }
}

async fn delete_from_store(
    State(s): State<AppState>,
    ctx: Context,
    Path((store_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "delete_image_location").await?;
    s.image.delete_from_store(&img, &store_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn check_octet_stream(headers: &HeaderMap) -> Result<(), Error> {
    match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => Ok(()),
        Some(ct) if ct.split(';').next().unwrap_or("").trim() == "application/octet-stream" => Ok(()),
        Some(ct) => Err(Error::UnsupportedMediaType(format!(
            "Unsupported Content-Type {ct:?}: image data must be sent as application/octet-stream"
        ))),
    }
}

fn byte_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map(|chunk| chunk.map_err(std::io::Error::other)))
}

async fn upload(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_octet_stream(&headers)?;
    let store = store_header(&headers)?;
    let size = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let (_, img) = authorized_image(&s, &ctx, &id, "upload_image").await?;
    s.image.upload(&img, byte_stream(body), store, size).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stage(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_octet_stream(&headers)?;
    let (_, img) = authorized_image(&s, &ctx, &id, "upload_image").await?;
    s.image.stage(&img, byte_stream(body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn import(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "modify_image").await?;
    let body = parse_json(&body)?;
    let all_stores = match body.get("all_stores") {
        None | Some(serde_json::Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| Error::BadRequest("'all_stores' must be a boolean.".into()))?,
    };
    let must_succeed = match body.get("all_stores_must_succeed") {
        None | Some(serde_json::Value::Null) => true,
        Some(v) => {
            v.as_bool().ok_or_else(|| Error::BadRequest("'all_stores_must_succeed' must be a boolean.".into()))?
        }
    };
    let listed = match body.get("stores") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::BadRequest("'stores' must be a list of store identifiers.".into()))?,
        ),
        Some(_) => return Err(Error::BadRequest("'stores' must be a list of store identifiers.".into()).into()),
    };
    let method = body
        .pointer("/method/name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::BadRequest("Import request requires a 'method' with a 'name'.".into()))?;
    if method == "copy-image" {
        authorized_image(&s, &ctx, &id, "copy_image").await?;
    }
    let stores = s.image.import_stores(all_stores, listed, store_header(&headers)?)?;
    let request = ImportRequest {
        method: method.to_string(),
        uri: body.pointer("/method/uri").and_then(|v| v.as_str()).map(str::to_string),
        input: serde_json::json!({"import_req": body}),
        request_id: request_id.map(|Extension(RequestId(r))| r),
        user_id: Some(ctx.user_id.clone()),
        stores,
        all_stores_must_succeed: must_succeed,
    };
    s.image.import(&img, request).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Parses a single `bytes=` range against `size`: `Ok(None)` when absent or not a single byte range (served whole),
/// 416 when it cannot be satisfied.
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<ByteRange>, Error> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = Error::RangeNotSatisfiable { size };
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Error::RangeNotSatisfiable { size })?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable);
        }
        ByteRange { start: size.saturating_sub(n), end: size - 1 }
    } else {
        let start: u64 = a.parse().map_err(|_| Error::RangeNotSatisfiable { size })?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse().map_err(|_| Error::RangeNotSatisfiable { size })?
        };
        if start >= size || end < start {
            return Err(unsatisfiable);
        }
        ByteRange { start, end: end.min(size - 1) }
    };
    Ok(Some(range))
}

async fn download(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, img) = authorized_image(&s, &ctx, &id, "download_image").await?;
    if img.status == "deactivated" && !caller.is_admin {
        return Err(Error::Forbidden(
            "The requested image has been deactivated. Image data download is forbidden.".into(),
        )
        .into());
    }
    let size = u64::try_from(img.size.unwrap_or(0)).unwrap_or(0);
    if img.location.is_none() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let range = parse_range(&headers, size)?;
    let Some(stream) = s.image.download(&img, range).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    match range {
        Some(r) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = response.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end)) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        None => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            if let Some(v) = img.checksum.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
                h.insert("content-md5", v);
            }
        }
    }
    Ok(response)
}

/// `GET /v2/images/{id}/tasks` (v2.12): the image's import tasks.
async fn tasks(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "get_image").await?;
    let tasks = s.image.tasks(&img).await?;
    Ok(axum::Json(serde_json::json!({"tasks": tasks.iter().map(task_json).collect::<Vec<_>>()})))
}
