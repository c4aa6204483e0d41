//! Version-discovery documents: the shapes clients (keystoneauth's discovery) read from a service's root and
//! version URLs.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Link {
    pub rel: String,
    pub href: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl Link {
    pub fn new(rel: &str, href: impl Into<String>) -> Self {
        Link { rel: rel.to_string(), href: href.into(), media_type: None }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MediaType {
    pub base: String,
    #[serde(rename = "type")]
    pub media_type: String,
}

/// One entry of a version list: `id`, `status`, `links`, and for microversioned APIs `min_version`/`version`.
#[derive(Clone, Debug, Serialize)]
pub struct VersionDoc {
    pub id: String,
    pub status: String,
    pub updated: String,
    pub links: Vec<Link>,
    #[serde(rename = "media-types", skip_serializing_if = "Vec::is_empty")]
    pub media_types: Vec<MediaType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl VersionDoc {
    /// A CURRENT version at `href` (the versioned endpoint URL, ending with `/`).
    pub fn current(id: &str, updated: &str, href: &str, media_type: &str) -> Self {
        VersionDoc {
            id: id.to_string(),
            status: "CURRENT".to_string(),
            updated: updated.to_string(),
            links: vec![Link::new("self", href)],
            media_types: vec![MediaType { base: "application/json".into(), media_type: media_type.into() }],
            min_version: None,
            version: None,
        }
    }
    pub fn with_microversions(mut self, min: &str, max: &str) -> Self {
        self.min_version = Some(min.to_string());
        self.version = Some(max.to_string());
        self
    }
}
