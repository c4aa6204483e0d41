//! Reports of operations on many objects at once (a static large object's deletion; later bulk delete and archive
//! extraction), in the format Swift's bulk middleware uses: `Key: value` lines then `Errors:` and one
//! `<name>, <status>` line per failure in plain text, or the same as JSON or XML, as `Accept` asks.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

use super::{header_str, xml_escape};
use crate::large::BulkOutcome;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Text,
    Json,
    Xml(&'static str),
}

/// The format `Accept` prefers among plain text, JSON and XML (plain text by default).
fn format(headers: &HeaderMap) -> Format {
    let Some(accept) = header_str(headers, "accept") else { return Format::Text };
    let mut best: Option<(f32, usize, Format)> = None;
    for (i, item) in accept.split(',').enumerate() {
        let mut parts = item.split(';');
        let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q: f32 = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .next()
            .and_then(|q| q.parse().ok())
            .unwrap_or(1.0);
        let f = match mime.as_str() {
            "text/plain" | "*/*" | "text/*" => Format::Text,
            "application/json" => Format::Json,
            "application/xml" => Format::Xml("application/xml"),
            "text/xml" => Format::Xml("text/xml"),
            _ => continue,
        };
        if q > 0.0 && best.as_ref().is_none_or(|(bq, _, _)| q > *bq) {
            best = Some((q, i, f));
        }
    }
    best.map_or(Format::Text, |(_, _, f)| f)
}

/// Renders a report: `fields` in key order, then the errors.
fn render(headers: &HeaderMap, root: &str, fields: Vec<(&str, Value)>, errors: &[(String, String)]) -> Response {
    let (body, content_type) = match format(headers) {
        Format::Json => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            let errs: Vec<Value> = errors.iter().map(|(n, s)| Value::Array(vec![n.clone().into(), s.clone().into()])).collect();
            m.insert("Errors".into(), Value::Array(errs));
            (Value::Object(m).to_string(), "application/json")
        }
        Format::Xml(ct) => {
            let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}>\n");
            for (k, v) in fields {
                let key = k.replace(' ', "_").to_ascii_lowercase();
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                s.push_str(&format!("<{key}>{}</{key}>\n", xml_escape(&v)));
            }
            s.push_str("<errors>\n");
            for (n, st) in errors {
                s.push_str(&format!("<object><name>{}</name><status>{}</status></object>\n", xml_escape(n), xml_escape(st)));
            }
            s.push_str(&format!("</errors>\n</{root}>\n"));
            (s, ct)
        }
        Format::Text => {
            let mut s = String::new();
            for (k, v) in fields {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                s.push_str(&format!("{k}: {v}\n"));
            }
            s.push_str("Errors:\n");
            for (n, st) in errors {
                s.push_str(&format!("{n}, {st}\n"));
            }
            (s, "text/plain")
        }
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The report of a deletion of many objects.
pub(super) fn deleted(headers: &HeaderMap, outcome: &BulkOutcome) -> Response {
    let status = if outcome.errors.is_empty() { "200 OK" } else { "400 Bad Request" };
    let fields = vec![
        ("Number Deleted", Value::from(outcome.deleted)),
        ("Number Not Found", Value::from(outcome.not_found)),
        ("Response Body", Value::from("")),
        ("Response Status", Value::from(status)),
    ];
    render(headers, "delete", fields, &outcome.errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_format() {
        let mut h = HeaderMap::new();
        assert_eq!(format(&h), Format::Text);
        h.insert("accept", HeaderValue::from_static("application/json"));
        assert_eq!(format(&h), Format::Json);
        h.insert("accept", HeaderValue::from_static("text/plain;q=0.5, application/xml"));
        assert_eq!(format(&h), Format::Xml("application/xml"));
        h.insert("accept", HeaderValue::from_static("image/png"));
        assert_eq!(format(&h), Format::Text);
    }
}
