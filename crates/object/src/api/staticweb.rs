//! Swift's staticweb: a container serves as a website to anonymous browsers (and to anyone sending
//! `X-Web-Mode: true`) when its metadata asks for it — `X-Container-Meta-Web-Index` (the object served for the
//! container and each pseudo-directory), `-Web-Listings` (HTML listings, styled by `-Web-Listings-CSS`) and
//! `-Web-Error` (a missing object answers 404 with the object `404<web-error>`). Reading still needs the
//! container's read ACL (`.r:*` for the public). Also Swift's crossdomain policy document.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{header_str, is_true, xml_escape};
use crate::{
    error::Error,
    service::{Entry, ListQuery, ObjectStore},
    store::{Metadata, ObjectRow},
};

/// What a container's metadata asks staticweb to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Site {
    pub index: Option<String>,
    pub listings: bool,
    pub css: Option<String>,
    pub error: Option<String>,
}

impl Site {
    pub fn of(m: &Metadata) -> Site {
        let get = |k: &str| m.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Site {
            index: get("web-index"),
            listings: is_true(get("web-listings").as_deref()),
            css: get("web-listings-css"),
            error: get("web-error"),
        }
    }

    /// Whether the container is a website at all.
    pub fn enabled(&self) -> bool {
        self.index.is_some() || self.listings
    }
}

/// Staticweb answers anonymous requests, and authenticated ones that ask with `X-Web-Mode: true`.
pub(super) fn web_mode(anonymous: bool, headers: &HeaderMap) -> bool {
    anonymous || is_true(header_str(headers, "x-web-mode"))
}

/// A permanent redirect to the same path with a trailing slash (so relative links resolve inside it).
pub(super) fn redirect_to_dir(path: &str) -> Response {
    let mut r = super::status(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&format!("{path}/")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The HTML listing of a pseudo-directory (`prefix` empty for the container itself, else ending in `/`); `title`
/// is the path the browser asked for.
pub(super) async fn listing(
    store: &ObjectStore,
    (account, container): (&str, &str),
    prefix: &str,
    title: &str,
    site: &Site,
) -> Result<Response, Error> {
    let q = ListQuery { prefix: prefix.to_string(), delimiter: Some("/".into()), limit: 10_000, ..Default::default() };
    let entries = store.list_objects(account, container, &q).await?;
    if entries.is_empty() && !prefix.is_empty() {
        return Err(Error::NotFound("Not Found".into()));
    }
    let depth = prefix.matches('/').count();
    let style = match &site.css {
        Some(css) if css.starts_with('/') || css.contains("://") => link(css),
        Some(css) => link(&format!("{}{css}", "../".repeat(depth))),
        None => "  <style type=\"text/css\">\n   h1 {font-size: 1em; font-weight: bold;}\n   th {text-align: left; padding: 0px 1em 0px 1em;}\n   td {padding: 0px 1em 0px 1em;}\n   a {text-decoration: none;}\n  </style>\n".to_string(),
    };
    let title = xml_escape(title);
    let mut html = format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\" \"http://www.w3.org/TR/html4/loose.dtd\">\n\
         <html>\n <head>\n  <title>Listing of {title}</title>\n{style} </head>\n <body>\n  <h1 id=\"title\">Listing of {title}</h1>\n\
         \x20 <table id=\"listing\">\n   <tr id=\"heading\">\n    <th class=\"colname\">Name</th>\n    <th class=\"colsize\">Size</th>\n    <th class=\"coldate\">Date</th>\n   </tr>\n"
    );
    if !prefix.is_empty() {
        html.push_str("   <tr id=\"parent\" class=\"item\">\n    <td class=\"colname\"><a href=\"../\">../</a></td>\n    <td class=\"colsize\">&nbsp;</td>\n    <td class=\"coldate\">&nbsp;</td>\n   </tr>\n");
    }
    for e in &entries {
        match e {
            Entry::Subdir(d) => {
                let name = xml_escape(d.strip_prefix(prefix).unwrap_or(d));
                html.push_str(&format!(
                    "   <tr class=\"item subdir\">\n    <td class=\"colname\"><a href=\"{name}\">{name}</a></td>\n    <td class=\"colsize\">&nbsp;</td>\n    <td class=\"coldate\">&nbsp;</td>\n   </tr>\n"
                ));
            }
            Entry::Item(o) => html.push_str(&item(o, prefix)),
        }
    }
    html.push_str("  </table>\n </body>\n</html>\n");
    let mut r = Body::from(html).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=UTF-8"));
    Ok(r)
}

fn link(href: &str) -> String {
    format!("  <link rel=\"stylesheet\" type=\"text/css\" href=\"{}\" />\n", xml_escape(href))
}

fn item(o: &ObjectRow, prefix: &str) -> String {
    let name = xml_escape(o.name.strip_prefix(prefix).unwrap_or(&o.name));
    let kind = o.content_type.split(['/', ';']).map(str::trim).filter(|s| !s.is_empty()).map(|s| format!(" type-{}", xml_escape(s))).collect::<String>();
    let date = super::iso(o.last_modified).replace('T', " ");
    let date = date.split('.').next().unwrap_or(&date).to_string();
    format!(
        "   <tr class=\"item{kind}\">\n    <td class=\"colname\"><a href=\"{name}\">{name}</a></td>\n    <td class=\"colsize\">{}</td>\n    <td class=\"coldate\">{date}</td>\n   </tr>\n",
        human_size(o.size)
    )
}

/// Swift's listing sizes: bytes below 1024, then one decimal with K, M, G, …
fn human_size(n: i64) -> String {
    let mut v = n as f64;
    let mut unit = "";
    for u in ["K", "M", "G", "T", "P"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if unit.is_empty() { n.to_string() } else { format!("{v:.1}{unit}") }
}

/// Swift's crossdomain middleware: the Flash/Silverlight policy at `/crossdomain.xml`.
pub(super) async fn crossdomain() -> Response {
    let body = "<?xml version=\"1.0\"?>\n<!DOCTYPE cross-domain-policy SYSTEM \"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd\" >\n\
                <cross-domain-policy>\n<allow-access-from domain=\"*\" secure=\"false\" />\n</cross-domain-policy>";
    let mut r = Body::from(body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_settings_and_sizes() {
        let m: Metadata = [("web-index", "index.html"), ("web-listings", "yes"), ("web-error", " "), ("web-listings-css", "s.css")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let site = Site::of(&m);
        assert_eq!(site, Site { index: Some("index.html".into()), listings: true, css: Some("s.css".into()), error: None });
        assert!(site.enabled());
        assert!(!Site::of(&Metadata::new()).enabled());
        assert_eq!((human_size(1000), human_size(2048), human_size(5 << 30)), ("1000".into(), "2.0K".into(), "5.0G".into()));
        let mut h = HeaderMap::new();
        assert!(web_mode(true, &h) && !web_mode(false, &h));
        h.insert("x-web-mode", HeaderValue::from_static("true"));
        assert!(web_mode(false, &h));
    }
}
