//! Swift's TempURL middleware: `?temp_url_sig=…&temp_url_expires=…` grants one method on one object (or, with
//! `temp_url_prefix`, on every object under a prefix) until the expiry, to whoever holds the URL, signed with a
//! `Temp-URL-Key(-2)` of the account or the container. A bad, expired or unsigned URL is a 401 whatever token comes
//! with it. Answers drop `X-Object-Meta-*` (but `X-Object-Meta-Public-*`) and, for downloads, say how to save the
//! file (`Content-Disposition`, from `filename`/`inline` or the object name) and until when (`Expires`).

use std::collections::HashMap;

use axum::{
    http::{HeaderMap, Method},
    response::Response,
};
use serde_json::{Value, json};

use super::{header_str, percent_encode, put_header};
use crate::{error::Error, service::ObjectStore, signature, store::Metadata};

pub(super) const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE"];

/// What `/info` says about temporary URLs.
pub(super) fn info() -> Value {
    json!({
        "methods": METHODS,
        "incoming_remove_headers": ["x-timestamp"],
        "incoming_allow_headers": [],
        "outgoing_remove_headers": ["x-object-meta-*"],
        "outgoing_allow_headers": ["x-object-meta-public-*"],
        "allowed_digests": signature::ALLOWED_DIGESTS,
    })
}

/// The temporary-URL parameters of a request's query.
#[derive(Clone, Debug)]
pub(super) struct TempUrl {
    sig: Option<String>,
    expires: Option<String>,
    prefix: Option<String>,
    filename: Option<String>,
    inline: bool,
    ip_range: Option<String>,
}

/// The account and container keys, `Temp-URL-Key` and `Temp-URL-Key-2` (metadata keys are lower case).
pub(super) fn keys(m: &Metadata) -> Vec<String> {
    ["temp-url-key", "temp-url-key-2"].iter().filter_map(|k| m.get(*k).filter(|v| !v.is_empty()).cloned()).collect()
}

fn invalid() -> Error {
    Error::Unauthorized("Temp URL invalid".into())
}

impl TempUrl {
    /// The parameters, when the query names a temporary URL at all.
    pub(super) fn from_query(q: &HashMap<String, String>) -> Option<TempUrl> {
        if !q.contains_key("temp_url_sig") && !q.contains_key("temp_url_expires") {
            return None;
        }
        Some(TempUrl {
            sig: q.get("temp_url_sig").cloned(),
            expires: q.get("temp_url_expires").cloned(),
            prefix: q.get("temp_url_prefix").cloned(),
            filename: q.get("filename").cloned(),
            inline: q.contains_key("inline"),
            ip_range: q.get("temp_url_ip_range").cloned(),
        })
    }

    fn expires_at(&self) -> Option<i64> {
        self.expires.as_deref().and_then(signature::parse_expires)
    }

    /// Checks the URL lets `method` act on `/v1/<account>/<container>/<object>` now. `mount` is where the API is
    /// served (`/object-store`): a signature over the path clients see is accepted too.
    pub(super) async fn authorize(
        &self,
        store: &ObjectStore,
        method: &Method,
        (account, container, object): (&str, &str, &str),
        mount: &str,
        headers: &HeaderMap,
    ) -> Result<(), Error> {
        let (Some(sig), Some(expires)) = (self.sig.as_deref().filter(|s| !s.is_empty()), self.expires_at()) else {
            return Err(invalid());
        };
        if expires < chrono::Utc::now().timestamp() || !METHODS.contains(&method.as_str()) || object.is_empty() {
            return Err(invalid());
        }
        // The client's address is not known here, so an address-bound URL cannot be honoured.
        if self.ip_range.is_some() {
            return Err(invalid());
        }
        let (digest, sig) = signature::parse(sig, false).ok_or_else(invalid)?;
        let mut keys = match store.store().account_get(account).await? {
            Some(a) => self::keys(&a.metadata),
            None => Vec::new(),
        };
        if let Ok(c) = store.container(account, container).await {
            keys.extend(self::keys(&c.metadata));
        }
        if keys.is_empty() {
            return Err(invalid());
        }
        let path = match &self.prefix {
            Some(prefix) if !object.starts_with(prefix.as_str()) => return Err(invalid()),
            Some(prefix) => format!("/v1/{account}/{container}/{prefix}"),
            None => format!("/v1/{account}/{container}/{object}"),
        };
        let paths = if mount.is_empty() { vec![path] } else { vec![format!("{mount}{path}"), path] };
        let methods: &[&str] = if *method == Method::HEAD { &["HEAD", "GET", "POST", "PUT"] } else { &[method.as_str()] };
        // An ISO 8601 expiry is signed as Unix seconds.
        let mut bodies = Vec::new();
        for m in methods {
            for p in &paths {
                let p = if self.prefix.is_some() { format!("prefix:{p}") } else { p.clone() };
                bodies.push(format!("{m}\n{expires}\n{p}"));
            }
        }
        if !signature::verify(digest, &sig, &keys, &bodies) {
            return Err(invalid());
        }
        if !matches!(*method, Method::GET | Method::HEAD) {
            for h in ["x-object-manifest", "x-symlink-target"] {
                if headers.contains_key(h) {
                    let name = h.split('-').map(title).collect::<Vec<_>>().join("-");
                    return Err(Error::BadRequest(format!("The header '{name}' is not allowed in this tempurl")));
                }
            }
        }
        Ok(())
    }

    /// Shapes a response to a temporary URL: no private metadata; downloads get a disposition and an expiry.
    pub(super) fn finish(&self, resp: &mut Response, method: &Method, object: &str) {
        let private: Vec<_> = resp
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("x-object-meta-") && !k.as_str().starts_with("x-object-meta-public-"))
            .cloned()
            .collect();
        for k in private {
            resp.headers_mut().remove(k);
        }
        if !matches!(*method, Method::GET | Method::HEAD) || !resp.status().is_success() {
            return;
        }
        let existing = header_str(resp.headers(), "content-disposition").map(str::to_string);
        let disposition = match (self.inline, &self.filename, existing) {
            (true, Some(f), _) => disposition("inline", f),
            (true, None, _) => "inline".to_string(),
            (false, Some(f), _) => disposition("attachment", f),
            (false, None, Some(e)) => e,
            (false, None, None) => {
                disposition("attachment", object.trim_end_matches('/').rsplit('/').next().unwrap_or(object))
            }
        };
        put_header(resp, "content-disposition", disposition.replace('\n', "%0A"));
        if let Some(at) = self.expires_at() {
            put_header(resp, "expires", super::http_date(at * 1_000_000));
        }
    }
}

fn title(word: &str) -> String {
    let mut c = word.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// `attachment; filename="a b.txt"; filename*=UTF-8''a%20b.txt` (RFC 6266).
fn disposition(kind: &str, filename: &str) -> String {
    let plain: String = percent_encode(filename).replace("%20", " ");
    format!("{kind}; filename=\"{plain}\"; filename*=UTF-8''{}", percent_encode(filename).replace('/', "%2F"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_quote_names() {
        assert_eq!(disposition("attachment", "a b.txt"), "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt");
        assert_eq!(disposition("inline", "é/x"), "inline; filename=\"%C3%A9/x\"; filename*=UTF-8''%C3%A9%2Fx");
        assert_eq!(title("manifest"), "Manifest");
    }
}
