//! The compute API's client of the image service: image lookups on boot and rebuild, with the caller's own token
//! (as Nova calls Glance on the user's behalf).

use std::{collections::BTreeMap, time::Duration};

use reqwest::StatusCode;
use serde_json::Value;

use crate::error::Error;

/// Where the image service is.
#[derive(Clone, Debug)]
pub struct ImageClient {
    http: reqwest::Client,
    url: String,
}

/// What a boot needs to know of an image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub status: String,
    pub size: Option<i64>,
    pub min_disk: i64,
    pub min_ram: i64,
    /// Every other member of the image (its properties).
    pub properties: BTreeMap<String, Value>,
}

const CORE: &[&str] = &[
    "id", "status", "size", "min_disk", "min_ram", "name", "checksum", "os_hash_algo", "os_hash_value", "created_at",
    "updated_at", "file", "schema", "self", "owner", "visibility", "protected", "tags", "locations", "direct_url",
    "virtual_size", "stores", "os_hidden",
];

impl ImageClient {
    /// `url` is the image endpoint (e.g. `http://host/image`).
    pub fn new(url: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(ImageClient { http, url: url.trim_end_matches('/').to_string() })
    }

    /// The image `id` as the caller (`token`) sees it; `Ok(None)` if it does not exist for them.
    pub async fn get(&self, token: &str, id: &str) -> Result<Option<ImageInfo>, Error> {
        let Some(v) = self.raw(token, id).await? else { return Ok(None) };
        let properties =
            v.as_object().map(|o| o.iter().filter(|(k, _)| !CORE.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        Ok(Some(ImageInfo {
            id: v["id"].as_str().unwrap_or(id).to_string(),
            status: v["status"].as_str().unwrap_or_default().to_string(),
            size: v["size"].as_i64(),
            min_disk: v["min_disk"].as_i64().unwrap_or(0),
            min_ram: v["min_ram"].as_i64().unwrap_or(0),
            properties,
        }))
    }
}

impl ImageClient {
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(StatusCode, Value), Error> {
        let resp = req.send().await.map_err(|e| Error::Unavailable(format!("image service: {e}")))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::Unavailable(format!("image service: {e}")))?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// The raw image document (`None` if the caller cannot see it).
    pub async fn raw(&self, token: &str, id: &str) -> Result<Option<Value>, Error> {
        if id.is_empty() || id.contains('/') || id.contains('?') {
            return Ok(None);
        }
        let (status, v) = self.send(self.http.get(format!("{}/v2/images/{id}", self.url)).header("x-auth-token", token)).await?;
        match status {
            s if s.is_success() => Ok(Some(v)),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Ok(None),
            s => Err(Error::Unavailable(format!("image service answered {s}"))),
        }
    }

    /// Every image the caller sees (following the image service's pages), with `query` passed through.
    pub async fn list(&self, token: &str, query: &[(String, String)]) -> Result<Vec<Value>, Error> {
        let mut out = Vec::new();
        let mut url = format!("{}/v2/images", self.url);
        let mut first = true;
        loop {
            let mut target = url::Url::parse(&url).map_err(|e| Error::Unavailable(format!("image service URL: {e}")))?;
            if first {
                target.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            let req = self.http.get(target).header("x-auth-token", token);
            let (status, v) = self.send(req).await?;
            if !status.is_success() {
                return Err(Error::Unavailable(format!("image service answered {status}")));
            }
            out.extend(v["images"].as_array().cloned().unwrap_or_default());
            match v["next"].as_str() {
                Some(next) if !next.is_empty() => {
                    // `next` is a path under the image endpoint's root.
                    let root = self.url.trim_end_matches('/');
                    let path = next.trim_start_matches('/');
                    let path = path.strip_prefix("image/").unwrap_or(path);
                    url = format!("{root}/{path}");
                    first = false;
                }
                _ => return Ok(out),
            }
        }
    }

    /// Deletes an image; `Ok(false)` if it does not exist for the caller.
    pub async fn delete(&self, token: &str, id: &str) -> Result<bool, Error> {
        let (status, v) = self.send(self.http.delete(format!("{}/v2/images/{id}", self.url)).header("x-auth-token", token)).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::FORBIDDEN => Err(Error::Forbidden(v["message"].as_str().unwrap_or("Forbidden").to_string())),
            StatusCode::CONFLICT => Err(Error::Conflict("Image is protected or in use.".into())),
            s => Err(Error::Unavailable(format!("image service answered {s}"))),
        }
    }

    /// Applies a JSON patch to an image (properties only).
    pub async fn patch(&self, token: &str, id: &str, ops: &Value) -> Result<Option<Value>, Error> {
        let req = self
            .http
            .patch(format!("{}/v2/images/{id}", self.url))
            .header("x-auth-token", token)
            .header("content-type", "application/openstack-images-v2.1-json-patch")
            .body(ops.to_string());
        let (status, v) = self.send(req).await?;
        match status {
            s if s.is_success() => Ok(Some(v)),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::FORBIDDEN => Err(Error::Forbidden(v["message"].as_str().unwrap_or("Forbidden").to_string())),
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::BadRequest(v["message"].as_str().unwrap_or("Invalid image metadata").to_string()))
            }
            s => Err(Error::Unavailable(format!("image service answered {s}"))),
        }
    }
}

impl ImageClient {
    /// The image endpoint this client calls.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Uploads no data to a queued image, which becomes active with size 0 (upstream's `force_activate` of a
    /// volume-backed server's snapshot, whose data is in the volume snapshots its `block_device_mapping` names).
    pub async fn activate_empty(&self, token: &str, id: &str) -> Result<(), Error> {
        let req = self
            .http
            .put(format!("{}/v2/images/{id}/file", self.url))
            .header("x-auth-token", token)
            .header("content-type", "application/octet-stream")
            .body(Vec::<u8>::new());
        let (status, _) = self.send(req).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Error::Unavailable(format!("image service answered {status} to an upload")))
        }
    }

    /// Creates an image record (queued) as the caller.
    pub async fn create(&self, token: &str, body: &Value) -> Result<Value, Error> {
        let req = self.http.post(format!("{}/v2/images", self.url)).header("x-auth-token", token).json(body);
        let (status, v) = self.send(req).await?;
        match status {
            s if s.is_success() => Ok(v),
            StatusCode::FORBIDDEN | StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::Forbidden(v["message"].as_str().unwrap_or("Image quota exceeded").to_string()))
            }
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT => {
                Err(Error::BadRequest(v["message"].as_str().unwrap_or("Invalid image").to_string()))
            }
            s => Err(Error::Unavailable(format!("image service answered {s}"))),
        }
    }
}

/// The image members that are not properties.
pub fn is_core(key: &str) -> bool {
    CORE.contains(&key)
}
