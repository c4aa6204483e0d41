//! Large objects: dynamic (DLO, `X-Object-Manifest: <container>/<prefix>`, the objects under a prefix in name order)
//! and static (SLO, a JSON manifest of segments checked when it is stored, `?multipart-manifest=put`).
//!
//! A large object is read as its segments, one after the other, each streamed from the storage servers as it comes:
//! never the whole object in memory (an SLO's manifest, at most [`MAX_MANIFEST_SIZE`] bytes, is). Its ETag is the
//! MD5 of its segments' ETags (quoted on the wire), its length their sum.
//!
//! An SLO keeps, with its manifest object, system metadata no client can set: [`SLO`], [`SLO_ETAG`] and
//! [`SLO_SIZE`]. The stored manifest lists `{"name": "/<container>/<object>", "bytes", "hash", "content_type",
//! "last_modified"[, "range"][, "sub_slo"]}` or inline `{"data": "<base64>"}` segments.

use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use md5::{Digest as _, Md5};
use serde_json::{Map, Value, json};

use crate::{
    error::Error,
    ring::hex,
    server::{ByteRange, ByteStream},
    service::{ObjectStore, PutRequest},
    store::{Metadata, ObjectRow, Page},
};

/// System metadata of an SLO manifest: present (`True`), the SLO's ETag and its size.
pub const SLO: &str = "sysmeta:slo";
pub const SLO_ETAG: &str = "sysmeta:slo-etag";
pub const SLO_SIZE: &str = "sysmeta:slo-size";
/// Where a DLO manifest keeps `X-Object-Manifest`.
pub const DLO: &str = "header:x-object-manifest";

pub const MAX_MANIFEST_SEGMENTS: usize = 1000;
pub const MAX_MANIFEST_SIZE: usize = 8 * 1024 * 1024;
/// How deep SLOs may nest.
const MAX_DEPTH: usize = 10;

pub fn is_slo(row: &ObjectRow) -> bool {
    row.metadata.contains_key(SLO)
}

/// The `<container>/<prefix>` of a DLO manifest.
pub fn dlo_of(row: &ObjectRow) -> Option<&str> {
    row.metadata.get(DLO).map(String::as_str)
}

/// Checks an `X-Object-Manifest` value: `<container>/<prefix>`, both non-empty, no query characters.
pub fn check_dlo_manifest(value: &str) -> Result<(), Error> {
    match value.split_once('/') {
        Some((c, p)) if !c.is_empty() && !p.is_empty() && !p.starts_with('/') && !value.contains(['?', '&']) => Ok(()),
        _ => Err(Error::BadRequest("X-Object-Manifest must be in the format container/prefix".into())),
    }
}

/// What `/info` says about static large objects (dynamic ones are not advertised, as Swift does not).
pub fn slo_info() -> Value {
    json!({
        "max_manifest_segments": MAX_MANIFEST_SEGMENTS,
        "max_manifest_size": MAX_MANIFEST_SIZE,
        "yield_frequency": 10,
        "min_segment_size": 1,
        "allow_async_delete": false,
    })
}

/// A segment as a client asks for it in a manifest PUT.
#[derive(Clone, Debug, PartialEq)]
enum SegmentSpec {
    Object { path: String, etag: Option<String>, size: Option<u64>, range: Option<String> },
    Data(Vec<u8>),
}

/// Parses and checks the body of a manifest PUT; `BadRequest` lists every problem (`Index <i>: …`).
fn parse_manifest_put(body: &[u8]) -> Result<Vec<SegmentSpec>, Error> {
    let parsed: Value = serde_json::from_slice(body).map_err(|_| Error::BadRequest("Manifest must be valid JSON.".into()))?;
    let Value::Array(items) = parsed else {
        return Err(Error::BadRequest("Manifest must be a list.".into()));
    };
    if items.is_empty() {
        return Err(Error::BadRequest("Manifest must have at least one segment.".into()));
    }
    if items.len() > MAX_MANIFEST_SEGMENTS {
        return Err(Error::TooLarge(format!("Number of segments must be <= {MAX_MANIFEST_SEGMENTS}")));
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse_segment(item) {
            Ok(s) => out.push(s),
            Err(e) => errors.push(format!("Index {i}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(Error::BadRequest(errors.join("\n")));
    }
    Ok(out)
}

fn parse_segment(item: &Value) -> Result<SegmentSpec, String> {
    let Value::Object(m) = item else { return Err("not a JSON object".into()) };
    if let Some(data) = m.get("data") {
        let extra: Vec<_> = m.keys().filter(|k| *k != "data").cloned().collect();
        if !extra.is_empty() {
            return Err(format!("extraneous keys \"{}\"", extra.join("\", \"")));
        }
        let data = data.as_str().ok_or("data must be a string")?;
        let raw = base64::engine::general_purpose::STANDARD.decode(data).map_err(|_| "data must be valid base64")?;
        return Ok(SegmentSpec::Data(raw));
    }
    let extra: Vec<_> = m.keys().filter(|k| !["path", "etag", "size_bytes", "range"].contains(&k.as_str())).cloned().collect();
    if !extra.is_empty() {
        return Err(format!("extraneous keys \"{}\"", extra.join("\", \"")));
    }
    let path = m.get("path").and_then(Value::as_str).ok_or("expected keys to include path")?;
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((c, o)) if !c.is_empty() && !o.is_empty() => {}
        _ => return Err("path does not refer to an object. Path must be of the form /container/object.".into()),
    }
    let etag = match m.get("etag") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e.trim_matches('"').to_string()),
        Some(_) => return Err("invalid etag".into()),
    };
    let size = match m.get("size_bytes") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or("invalid size_bytes")?),
    };
    let range = match m.get("range") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => {
            if r.contains(',') {
                return Err("multiple ranges (only one allowed)".into());
            }
            parse_range_spec(r).ok_or("invalid range")?;
            Some(r.clone())
        }
        Some(_) => return Err("invalid range".into()),
    };
    Ok(SegmentSpec::Object { path: format!("/{trimmed}"), etag, size, range })
}

/// `a-b`, `a-` or `-n` (with or without `bytes=`).
fn parse_range_spec(r: &str) -> Option<(Option<u64>, Option<u64>)> {
    let r = r.trim().strip_prefix("bytes=").unwrap_or(r.trim());
    let (a, b) = r.split_once('-')?;
    let a = if a.is_empty() { None } else { Some(a.trim().parse().ok()?) };
    let b = if b.is_empty() { None } else { Some(b.trim().parse().ok()?) };
    match (a, b) {
        (None, None) => None,
        (Some(a), Some(b)) if b < a => None,
        ab => Some(ab),
    }
}

/// The containers a manifest PUT's segments name (whatever else is wrong with it).
pub fn manifest_containers(body: &[u8]) -> Vec<String> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for item in &items {
        let Some(path) = item.get("path").and_then(Value::as_str) else { continue };
        let decoded = percent_decode(path);
        if let Some((c, _)) = decoded.trim_start_matches('/').split_once('/')
            && !c.is_empty()
            && !out.iter().any(|o| o == c)
        {
            out.push(c.to_string());
        }
    }
    out
}

/// A range spec resolved against a segment of `size` bytes; `None` when unsatisfiable.
fn resolve_range(spec: (Option<u64>, Option<u64>), size: u64) -> Option<ByteRange> {
    if size == 0 {
        return None;
    }
    let r = match spec {
        (Some(a), Some(b)) => ByteRange { start: a, end: b.min(size - 1) },
        (Some(a), None) => ByteRange { start: a, end: size - 1 },
        (None, Some(n)) if n > 0 => ByteRange { start: size.saturating_sub(n), end: size - 1 },
        _ => return None,
    };
    (r.start < size).then_some(r)
}

/// A stored manifest's segments.
fn stored_segments(manifest: &[u8]) -> Result<Vec<Map<String, Value>>, Error> {
    let v: Value = serde_json::from_slice(manifest)
        .map_err(|e| Error::Io(std::io::Error::other(format!("unreadable SLO manifest: {e}"))))?;
    let Value::Array(items) = v else {
        return Err(Error::Io(std::io::Error::other("an SLO manifest is not a list")));
    };
    Ok(items.into_iter().filter_map(|i| if let Value::Object(m) = i { Some(m) } else { None }).collect())
}

/// The stored manifest in the form a manifest PUT takes (`?multipart-manifest=get&format=raw`).
pub fn raw_manifest(manifest: &[u8]) -> Result<Value, Error> {
    let segments = stored_segments(manifest)?;
    Ok(Value::Array(
        segments
            .into_iter()
            .map(|s| {
                if let Some(data) = s.get("data") {
                    return json!({"data": data});
                }
                let mut out = json!({"path": s.get("name"), "etag": s.get("hash"), "size_bytes": s.get("bytes")});
                if let Some(r) = s.get("range") {
                    out["range"] = r.clone();
                }
                out
            })
            .collect(),
    ))
}

/// One piece of a large object's body.
#[derive(Clone, Debug)]
enum Part {
    /// A range of an object's data, as listed (DLO) or as a manifest expects it (SLO: ETag and size checked again
    /// when it is read, so a replaced segment breaks the download rather than corrupting it).
    Object { account: String, container: String, name: String, expect: Option<(String, u64)>, range: ByteRange },
    Data(Bytes),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Object { range, .. } => range.len(),
            Part::Data(d) => d.len() as u64,
        }
    }
}

/// A large object ready to be read: its ETag (unquoted), size and pieces.
pub struct LargeObject {
    pub etag: String,
    pub size: u64,
    /// The containers its segments live in (readers need access to each).
    pub containers: Vec<String>,
    parts: Vec<Part>,
}

impl LargeObject {
    /// The pieces covering `range` of the object (all of it when `None`).
    fn select(&self, range: Option<ByteRange>) -> Vec<Part> {
        let Some(want) = range else { return self.parts.clone() };
        let mut out = Vec::new();
        let mut offset = 0u64;
        for p in &self.parts {
            let len = p.len();
            let (start, end) = (offset, offset + len); // [start, end)
            offset = end;
            if len == 0 || end <= want.start || start > want.end {
                continue;
            }
            let from = want.start.max(start) - start;
            let to = (want.end + 1).min(end) - start; // exclusive
            out.push(match p {
                Part::Data(d) => Part::Data(d.slice(from as usize..to as usize)),
                Part::Object { account, container, name, expect, range } => Part::Object {
                    account: account.clone(),
                    container: container.clone(),
                    name: name.clone(),
                    expect: expect.clone(),
                    range: ByteRange { start: range.start + from, end: range.start + to - 1 },
                },
            });
        }
        out
    }
}

/// The quoted ETag of a large object, as Swift sends it.
pub fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

impl ObjectStore {
    /// Reads a manifest object's data (small: at most [`MAX_MANIFEST_SIZE`]).
    async fn manifest_bytes(&self, row: &ObjectRow) -> Result<Vec<u8>, Error> {
        let mut body = self.read_object(row, None).await?;
        let mut out = Vec::with_capacity(row.size.max(0) as usize);
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() > MAX_MANIFEST_SIZE + 1 {
                return Err(Error::Io(std::io::Error::other("an SLO manifest is too large")));
            }
        }
        Ok(out)
    }

    /// An SLO manifest's data, for `?multipart-manifest=get`.
    pub async fn slo_manifest(&self, row: &ObjectRow) -> Result<Vec<u8>, Error> {
        self.manifest_bytes(row).await
    }

    /// The large object a manifest row stands for: `None` for a plain object.
    pub async fn large_object(&self, row: &ObjectRow) -> Result<Option<LargeObject>, Error> {
        if is_slo(row) {
            let mut parts = Vec::new();
            let mut containers = Vec::new();
            self.slo_parts(row, 0, &mut parts, &mut containers).await?;
            let etag = row.metadata.get(SLO_ETAG).cloned().unwrap_or_default();
            let size = parts.iter().map(Part::len).sum();
            return Ok(Some(LargeObject { etag, size, containers, parts }));
        }
        if let Some(manifest) = dlo_of(row) {
            let (container, prefix) = manifest.split_once('/').unwrap_or((manifest, ""));
            let (container, prefix) = (percent_decode(container), percent_decode(prefix));
            let rows = self.dlo_segments(&row.account, &container, &prefix).await?;
            let mut md5 = Md5::new();
            let mut parts = Vec::new();
            for seg in rows {
                md5.update(seg.etag.as_bytes());
                if seg.size > 0 {
                    let range = ByteRange { start: 0, end: seg.size as u64 - 1 };
                    parts.push(Part::Object { account: seg.account, container: seg.container, name: seg.name, expect: None, range });
                }
            }
            let size = parts.iter().map(Part::len).sum();
            return Ok(Some(LargeObject { etag: hex(&md5.finalize()), size, containers: vec![container], parts }));
        }
        Ok(None)
    }

    /// The objects of a DLO: those under the prefix, in name order.
    async fn dlo_segments(&self, account: &str, container: &str, prefix: &str) -> Result<Vec<ObjectRow>, Error> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = Page { after: after.as_deref(), from: prefix, reverse: false, limit: 1000 };
            let rows = match self.store().object_page(account, container, &page).await {
                Ok(rows) => rows,
                Err(e) => return Err(e),
            };
            let full = rows.len() == 1000;
            for r in rows {
                if !r.name.starts_with(prefix) {
                    return Ok(out);
                }
                after = Some(r.name.clone());
                out.push(r);
            }
            if !full {
                return Ok(out);
            }
        }
    }

    fn slo_parts<'a>(
        &'a self,
        row: &'a ObjectRow,
        depth: usize,
        parts: &'a mut Vec<Part>,
        containers: &'a mut Vec<String>,
    ) -> futures::future::BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if depth >= MAX_DEPTH {
                return Err(Error::Conflict("Max recursion depth exceeded".into()));
            }
            let manifest = self.manifest_bytes(row).await?;
            for seg in stored_segments(&manifest)? {
                if let Some(data) = seg.get("data").and_then(Value::as_str) {
                    let raw = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
                    parts.push(Part::Data(Bytes::from(raw)));
                    continue;
                }
                let name = seg.get("name").and_then(Value::as_str).unwrap_or_default();
                let Some((container, object)) = name.trim_start_matches('/').split_once('/') else { continue };
                if !containers.iter().any(|c| c == container) {
                    containers.push(container.to_string());
                }
                let bytes = seg.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                let hash = seg.get("hash").and_then(Value::as_str).unwrap_or_default().to_string();
                let range = seg.get("range").and_then(Value::as_str).and_then(parse_range_spec);
                if seg.get("sub_slo").and_then(Value::as_bool).unwrap_or(false) {
                    let sub = self.object(&row.account, container, object).await?;
                    if !is_slo(&sub) || sub.metadata.get(SLO_ETAG) != Some(&hash) {
                        return Err(Error::Conflict(format!("The segment {name} of this large object changed")));
                    }
                    let mut sub_parts = Vec::new();
                    self.slo_parts(&sub, depth + 1, &mut sub_parts, containers).await?;
                    match range.and_then(|r| resolve_range(r, bytes)) {
                        Some(r) => {
                            let sub_obj =
                                LargeObject { etag: hash, size: bytes, containers: vec![], parts: sub_parts };
                            parts.extend(sub_obj.select(Some(r)));
                        }
                        None => parts.extend(sub_parts),
                    }
                    continue;
                }
                if bytes == 0 {
                    continue;
                }
                let range = range.and_then(|r| resolve_range(r, bytes)).unwrap_or(ByteRange { start: 0, end: bytes - 1 });
                parts.push(Part::Object {
                    account: row.account.clone(),
                    container: container.to_string(),
                    name: object.to_string(),
                    expect: Some((hash, bytes)),
                    range,
                });
            }
            Ok(())
        })
    }

    /// The body of a large object (or a range of it), segment after segment as they stream.
    pub fn read_large(&self, large: &LargeObject, range: Option<ByteRange>) -> ByteStream {
        let store = self.clone();
        let parts = large.select(range);
        Box::pin(
            futures::stream::iter(parts)
                .then(move |part| {
                    let store = store.clone();
                    async move { store.open_part(part).await.map_err(|e| std::io::Error::other(e.to_string())) }
                })
                .try_flatten(),
        )
    }

    async fn open_part(&self, part: Part) -> Result<ByteStream, Error> {
        match part {
            Part::Data(d) => Ok(Box::pin(futures::stream::once(async move { Ok(d) }))),
            Part::Object { account, container, name, expect, range } => {
                let row = self.object(&account, &container, &name).await?;
                if let Some((etag, size)) = expect
                    && (row.etag != etag || row.size as u64 != size)
                {
                    tracing::warn!(%container, %name, "a segment of a static large object no longer matches its manifest");
                    return Err(Error::Conflict(format!("The segment /{container}/{name} changed")));
                }
                self.read_object(&row, Some(range)).await
            }
        }
    }

    /// Stores an SLO manifest (`?multipart-manifest=put`): every segment is looked up and must match the ETag,
    /// size and range the client gives; returns the manifest row and the SLO's ETag.
    pub async fn put_slo(
        &self,
        account: &str,
        container: &str,
        name: &str,
        body: &[u8],
        mut req: PutRequest,
    ) -> Result<(ObjectRow, String), Error> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge(format!("Manifest File > {MAX_MANIFEST_SIZE} bytes")));
        }
        let specs = parse_manifest_put(body)?;
        let mut problems: Vec<String> = Vec::new();
        let mut stored: Vec<Value> = Vec::new();
        let mut slo_md5 = Md5::new();
        let mut total = 0u64;
        let last = specs.len() - 1;
        for (i, spec) in specs.into_iter().enumerate() {
            let (path, etag, size, range) = match spec {
                SegmentSpec::Data(raw) => {
                    slo_md5.update(hex(&Md5::digest(&raw)).as_bytes());
                    total += raw.len() as u64;
                    stored.push(json!({"data": base64::engine::general_purpose::STANDARD.encode(&raw)}));
                    continue;
                }
                SegmentSpec::Object { path, etag, size, range } => (path, etag, size, range),
            };
            let decoded = percent_decode(&path);
            let (seg_container, seg_name) = decoded.trim_start_matches('/').split_once('/').unwrap_or_default();
            let seg = match self.object(account, seg_container, seg_name).await {
                Ok(row) => row,
                Err(Error::NotFound(_)) | Err(Error::BadRequest(_)) => {
                    problems.push(format!("{path}, 404 Not Found"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let sub_slo = is_slo(&seg);
            let (seg_etag, seg_size) = if sub_slo {
                let etag = seg.metadata.get(SLO_ETAG).cloned().unwrap_or_default();
                let size = seg.metadata.get(SLO_SIZE).and_then(|s| s.parse().ok()).unwrap_or(0u64);
                (etag, size)
            } else {
                (seg.etag.clone(), seg.size as u64)
            };
            if etag.as_deref().is_some_and(|e| !e.eq_ignore_ascii_case(&seg_etag)) {
                problems.push(format!("{path}, Etag Mismatch"));
            }
            if size.is_some_and(|s| s != seg_size) {
                problems.push(format!("{path}, Size Mismatch"));
            }
            let resolved = match range.as_deref().and_then(parse_range_spec) {
                Some(spec) => match resolve_range(spec, seg_size) {
                    Some(r) => Some(r),
                    None => {
                        problems.push(format!("{path}, Unsatisfiable Range"));
                        continue;
                    }
                },
                None => None,
            };
            let length = resolved.map_or(seg_size, |r| r.len());
            if length < 1 && i != last {
                problems.push(format!("{path}, Too small; each segment must be at least 1 byte."));
            }
            let mut entry = json!({
                "name": format!("/{seg_container}/{seg_name}"),
                "bytes": seg_size,
                "hash": seg_etag,
                "content_type": seg.content_type,
                "last_modified": crate::api::iso(seg.last_modified),
            });
            if let Some(r) = resolved {
                let r = format!("{}-{}", r.start, r.end);
                slo_md5.update(format!("{seg_etag}:{r};").as_bytes());
                entry["range"] = Value::String(r);
            } else {
                slo_md5.update(seg_etag.as_bytes());
            }
            if sub_slo {
                entry["sub_slo"] = Value::Bool(true);
            }
            total += length;
            stored.push(entry);
        }
        if !problems.is_empty() {
            return Err(Error::BadRequest(format!("Errors:\n{}", problems.join("\n"))));
        }
        let slo_etag = hex(&slo_md5.finalize());
        if let Some(expected) = req.expected_etag.take()
            && !expected.trim_matches('"').eq_ignore_ascii_case(&slo_etag)
        {
            return Err(Error::Unprocessable(
                "The server was unable to process the request because the ETag did not match the data.".into(),
            ));
        }
        let manifest = Value::Array(stored).to_string().into_bytes();
        req.metadata.insert(SLO.into(), "True".into());
        req.metadata.insert(SLO_ETAG.into(), slo_etag.clone());
        req.metadata.insert(SLO_SIZE.into(), total.to_string());
        req.metadata.remove(DLO);
        req.length = Some(manifest.len() as u64);
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(Bytes::from(manifest)) }));
        let row = self.put_object(account, container, name, body, req).await?;
        Ok((row, slo_etag))
    }

    /// Deletes an SLO and its segments (`?multipart-manifest=delete`), sub-SLOs included: the numbers deleted and
    /// not found, and the segments that could not be deleted with why.
    pub async fn delete_slo(&self, account: &str, container: &str, name: &str) -> Result<BulkOutcome, Error> {
        let row = self.object(account, container, name).await?;
        if !is_slo(&row) {
            return Err(Error::BadRequest("Not an SLO manifest".into()));
        }
        let mut outcome = BulkOutcome::default();
        self.delete_slo_segments(&row, 0, &mut outcome).await?;
        match self.remove_object(account, container, name).await {
            Ok(()) => outcome.deleted += 1,
            Err(Error::NotFound(_)) => outcome.not_found += 1,
            Err(e) => outcome.errors.push((format!("/{container}/{name}"), api_status(&e))),
        }
        Ok(outcome)
    }

    fn delete_slo_segments<'a>(
        &'a self,
        row: &'a ObjectRow,
        depth: usize,
        outcome: &'a mut BulkOutcome,
    ) -> futures::future::BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if depth >= MAX_DEPTH {
                return Err(Error::Conflict("Max recursion depth exceeded".into()));
            }
            let manifest = self.manifest_bytes(row).await?;
            for seg in stored_segments(&manifest)? {
                let Some(name) = seg.get("name").and_then(Value::as_str) else { continue };
                let Some((c, o)) = name.trim_start_matches('/').split_once('/') else { continue };
                if seg.get("sub_slo").and_then(Value::as_bool).unwrap_or(false)
                    && let Ok(sub) = self.object(&row.account, c, o).await
                    && is_slo(&sub)
                {
                    self.delete_slo_segments(&sub, depth + 1, outcome).await?;
                }
                match self.remove_object(&row.account, c, o).await {
                    Ok(()) => outcome.deleted += 1,
                    Err(Error::NotFound(_)) => outcome.not_found += 1,
                    Err(e) => outcome.errors.push((name.to_string(), api_status(&e))),
                }
            }
            Ok(())
        })
    }
}

/// What a bulk operation did: counts and failures (`name`, `status line`), as Swift's bulk middleware reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BulkOutcome {
    pub deleted: u64,
    pub not_found: u64,
    pub created: u64,
    pub errors: Vec<(String, String)>,
}

/// `404 Not Found` for an error, as bulk reports name failures.
pub fn api_status(e: &Error) -> String {
    let status = match e {
        Error::NotFound(_) => http::StatusCode::NOT_FOUND,
        Error::Conflict(_) => http::StatusCode::CONFLICT,
        Error::Forbidden(_) => http::StatusCode::FORBIDDEN,
        Error::Unauthorized(_) => http::StatusCode::UNAUTHORIZED,
        Error::BadRequest(_) => http::StatusCode::BAD_REQUEST,
        Error::TooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
        Error::PreconditionFailed(_) => http::StatusCode::PRECONDITION_FAILED,
        Error::Unprocessable(_) => http::StatusCode::UNPROCESSABLE_ENTITY,
        Error::Unavailable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
        _ => http::StatusCode::INTERNAL_SERVER_ERROR,
    };
    format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))
}

/// Decodes `%xx` escapes (manifest paths and `X-Object-Manifest` values are URL paths).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Metadata a manifest keeps that a copy of the assembled object must not (it is a plain object).
pub fn strip_manifest_metadata(m: &mut Metadata) {
    m.remove(SLO);
    m.remove(SLO_ETAG);
    m.remove(SLO_SIZE);
    m.remove(DLO);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_checked_item_by_item() {
        let ok = br#"[{"path": "/c/a", "etag": "abc", "size_bytes": 3}, {"path": "c/b", "etag": null, "size_bytes": null, "range": "1-2"}, {"data": "aGk="}]"#;
        let specs = parse_manifest_put(ok).unwrap();
        assert_eq!(specs[0], SegmentSpec::Object { path: "/c/a".into(), etag: Some("abc".into()), size: Some(3), range: None });
        assert_eq!(specs[1], SegmentSpec::Object { path: "/c/b".into(), etag: None, size: None, range: Some("1-2".into()) });
        assert_eq!(specs[2], SegmentSpec::Data(b"hi".to_vec()));

        let bad = br#"[{"path": "/c"}, {"path": "/c/o", "size_bytes": "x"}, {"path": "/c/o", "foo": 1}, {"path": "/c/o", "range": "1-2,4-5"}, 7]"#;
        let Err(Error::BadRequest(msg)) = parse_manifest_put(bad) else { panic!("refused") };
        let lines: Vec<_> = msg.lines().collect();
        assert_eq!(lines.len(), 5, "{msg}");
        assert!(lines[0].starts_with("Index 0: path does not refer to an object"));
        assert_eq!(lines[1], "Index 1: invalid size_bytes");
        assert_eq!(lines[2], "Index 2: extraneous keys \"foo\"");
        assert_eq!(lines[3], "Index 3: multiple ranges (only one allowed)");
        assert_eq!(lines[4], "Index 4: not a JSON object");
        assert!(parse_manifest_put(b"{}").is_err());
        assert!(parse_manifest_put(b"[]").is_err());
        assert!(matches!(parse_manifest_put(b"nope"), Err(Error::BadRequest(_))));
    }

    #[test]
    fn ranges_resolve_against_sizes() {
        assert_eq!(resolve_range(parse_range_spec("1-2").unwrap(), 10), Some(ByteRange { start: 1, end: 2 }));
        assert_eq!(resolve_range(parse_range_spec("5-").unwrap(), 10), Some(ByteRange { start: 5, end: 9 }));
        assert_eq!(resolve_range(parse_range_spec("-3").unwrap(), 10), Some(ByteRange { start: 7, end: 9 }));
        assert_eq!(resolve_range(parse_range_spec("8-20").unwrap(), 10), Some(ByteRange { start: 8, end: 9 }));
        assert_eq!(resolve_range(parse_range_spec("10-").unwrap(), 10), None);
        assert!(parse_range_spec("3-1").is_none() && parse_range_spec("-").is_none());
    }

    #[test]
    fn selections_cut_across_parts() {
        let part = |name: &str, start, end| Part::Object {
            account: "a".into(),
            container: "c".into(),
            name: name.into(),
            expect: None,
            range: ByteRange { start, end },
        };
        let large = LargeObject {
            etag: String::new(),
            size: 10,
            containers: vec![],
            parts: vec![part("x", 0, 3), Part::Data(Bytes::from_static(b"abc")), part("y", 10, 12)],
        };
        let sel = large.select(Some(ByteRange { start: 2, end: 7 }));
        assert_eq!(sel.len(), 3);
        assert!(matches!(&sel[0], Part::Object { name, range, .. } if name == "x" && *range == ByteRange { start: 2, end: 3 }));
        assert!(matches!(&sel[1], Part::Data(d) if &d[..] == b"abc"));
        assert!(matches!(&sel[2], Part::Object { name, range, .. } if name == "y" && *range == ByteRange { start: 10, end: 10 }));
        assert_eq!(large.select(None).len(), 3);
        assert_eq!(large.select(Some(ByteRange { start: 4, end: 5 })).len(), 1);
    }

    #[test]
    fn raw_manifests_read_back_as_puts() {
        let stored = br#"[{"name": "/c/o", "bytes": 5, "hash": "h", "content_type": "t", "last_modified": "x", "range": "0-1"}, {"data": "aGk="}]"#;
        assert_eq!(
            raw_manifest(stored).unwrap(),
            json!([{"path": "/c/o", "etag": "h", "size_bytes": 5, "range": "0-1"}, {"data": "aGk="}])
        );
        assert_eq!(percent_decode("/c/a%20b"), "/c/a b");
        let containers = manifest_containers(br#"[{"path": "/a/x"}, {"path": "b%20c/y"}, {"path": "/a/z"}, {"data": "eA=="}]"#);
        assert_eq!(containers, vec!["a".to_string(), "b c".to_string()]);
        assert!(check_dlo_manifest("c/p").is_ok());
        for bad in ["c", "c/", "/p", "c//p", "c/p?x", "c/p&x"] {
            assert!(check_dlo_manifest(bad).is_err(), "{bad}");
        }
    }
}
