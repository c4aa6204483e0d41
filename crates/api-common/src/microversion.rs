//! Microversion negotiation as upstream's services do it: `OpenStack-API-Version: <service> X.Y` (or the legacy
//! per-service header), `latest`, the minimum when absent, 406 outside the advertised range, 400 when malformed.

use std::{fmt, str::FromStr};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::error::ApiError;

pub const API_VERSION_HEADER: &str = "openstack-api-version";

/// A microversion `major.minor`. Ordered, so `mv >= Microversion::new(2, 47)` reads as upstream's checks do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microversion {
    pub major: u32,
    pub minor: u32,
}

impl Microversion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for Microversion {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (major, minor) = s.trim().split_once('.').ok_or(())?;
        let digits = |p: &str| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) || (major.len() > 1 && major.starts_with('0')) {
            return Err(());
        }
        Ok(Self { major: major.parse().map_err(|_| ())?, minor: minor.parse().map_err(|_| ())? })
    }
}

/// The range a service advertises, and the names it is known by in headers.
#[derive(Clone, Debug)]
pub struct VersionRange {
    /// The service type in `OpenStack-API-Version` (e.g. `compute`, `volume`, `placement`).
    pub service_type: &'static str,
    /// The legacy header, if the service had one (e.g. `x-openstack-nova-api-version`).
    pub legacy_header: Option<&'static str>,
    pub min: Microversion,
    pub max: Microversion,
}

impl VersionRange {
    /// The version the client asked for, or the minimum; errors as upstream.
    pub fn negotiate(&self, headers: &HeaderMap) -> Result<Microversion, ApiError> {
        let requested = self.requested(headers);
        let Some(requested) = requested else { return Ok(self.min) };
        let requested = requested.trim();
        if requested.eq_ignore_ascii_case("latest") {
            return Ok(self.max);
        }
        let version: Microversion = requested.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "API Version String {requested} is of invalid format. Must be of format MajorNum.MinorNum."
            ))
        })?;
        if version < self.min || version > self.max {
            return Err(ApiError::not_acceptable(format!(
                "Version {version} is not supported by the API. Minimum is {} and maximum is {}.",
                self.min, self.max
            )));
        }
        Ok(version)
    }

    fn requested(&self, headers: &HeaderMap) -> Option<String> {
        for value in headers.get_all(API_VERSION_HEADER) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split_whitespace();
                if let (Some(service), Some(version)) = (parts.next(), parts.next())
                    && service.eq_ignore_ascii_case(self.service_type)
                {
                    return Some(version.to_string());
                }
            }
        }
        let legacy = self.legacy_header?;
        headers.get(legacy).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// Headers that tell the client which version answered.
    pub fn response_headers(&self, version: Microversion, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&format!("{} {}", self.service_type, version)) {
            headers.insert(API_VERSION_HEADER, v);
        }
        let mut vary = String::from("OpenStack-API-Version");
        if let Some(legacy) = self.legacy_header {
            if let (Ok(name), Ok(v)) = (HeaderName::from_bytes(legacy.as_bytes()), HeaderValue::from_str(&version.to_string())) {
                headers.insert(name, v);
            }
            vary.push_str(", ");
            vary.push_str(legacy);
        }
        if let Ok(v) = HeaderValue::from_str(&vary) {
            headers.insert(header::VARY, v);
        }
    }
}

/// Middleware: negotiates, stores the [`Microversion`] in request extensions, and adds the response headers.
/// Use with `axum::middleware::from_fn_with_state(Arc<VersionRange>, microversion::layer)`.
pub async fn layer(State(range): State<std::sync::Arc<VersionRange>>, mut req: Request, next: Next) -> Response {
    match range.negotiate(req.headers()) {
        Ok(version) => {
            req.extensions_mut().insert(version);
            let mut response = next.run(req).await;
            range.response_headers(version, response.headers_mut());
            response
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> VersionRange {
        VersionRange {
            service_type: "compute",
            legacy_header: Some("x-openstack-nova-api-version"),
            min: Microversion::new(2, 1),
            max: Microversion::new(2, 96),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn default_is_minimum_and_latest_is_maximum() {
        assert_eq!(range().negotiate(&HeaderMap::new()).unwrap(), Microversion::new(2, 1));
        let h = headers(&[("OpenStack-API-Version", "compute latest")]);
        assert_eq!(range().negotiate(&h).unwrap(), Microversion::new(2, 96));
    }

    #[test]
    fn picks_own_service_among_several_and_legacy() {
        let h = headers(&[("OpenStack-API-Version", "volume 3.10, compute 2.53")]);
        assert_eq!(range().negotiate(&h).unwrap(), Microversion::new(2, 53));
        let h = headers(&[("X-OpenStack-Nova-API-Version", "2.10")]);
        assert_eq!(range().negotiate(&h).unwrap(), Microversion::new(2, 10));
        // Another service's header alone means "not asked".
        let h = headers(&[("OpenStack-API-Version", "volume 3.10")]);
        assert_eq!(range().negotiate(&h).unwrap(), Microversion::new(2, 1));
    }

    #[test]
    fn out_of_range_is_406_and_garbage_is_400() {
        let h = headers(&[("OpenStack-API-Version", "compute 2.97")]);
        assert_eq!(range().negotiate(&h).unwrap_err().status, 406);
        let h = headers(&[("OpenStack-API-Version", "compute 3.0")]);
        assert_eq!(range().negotiate(&h).unwrap_err().status, 406);
        for bad in ["compute 2", "compute 2.x", "compute .1", "compute 02.1", "compute 2.1.1"] {
            let h = headers(&[("OpenStack-API-Version", bad)]);
            assert_eq!(range().negotiate(&h).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn ordering_matches_numeric_order() {
        assert!(Microversion::new(2, 10) > Microversion::new(2, 9));
        assert!(Microversion::new(3, 0) > Microversion::new(2, 99));
    }

    #[test]
    fn response_headers_name_the_version() {
        let mut h = HeaderMap::new();
        range().response_headers(Microversion::new(2, 5), &mut h);
        assert_eq!(h[API_VERSION_HEADER], "compute 2.5");
        assert_eq!(h["x-openstack-nova-api-version"], "2.5");
        assert!(h[header::VARY].to_str().unwrap().contains("OpenStack-API-Version"));
    }
}
