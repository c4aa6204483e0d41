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
        if id.is_empty() || id.contains('/') || id.contains('?') {
            return Ok(None);
        }
        let resp = self
            .http
            .get(format!("{}/v2/images/{id}", self.url))
            .header("x-auth-token", token)
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("image service: {e}")))?;
        match resp.status() {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => return Ok(None),
            s if !s.is_success() => return Err(Error::Unavailable(format!("image service answered {s}"))),
            _ => {}
        }
        let v: Value = resp.json().await.map_err(|e| Error::Unavailable(format!("image service: {e}")))?;
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
