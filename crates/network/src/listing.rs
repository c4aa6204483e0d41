//! List queries as Neutron answers them: filters on any attribute (repeated keys match any of their values),
//! tag filters, `fields=`, `sort_key`/`sort_dir`, and `limit`/`marker`/`page_reverse` with `<collection>_links`.

use std::cmp::Ordering;

use api_common::QueryPairs;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Query keys that are not attribute filters.
const CONTROL: &[&str] =
    &["fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse", "tags", "tags-any", "not-tags", "not-tags-any"];

/// Whether `doc` matches one filter value (string forms as Neutron's API compares them).
fn matches_value(v: &Value, want: &str) -> bool {
    match v {
        Value::Null => want.is_empty() || want == "None" || want == "null",
        Value::Bool(b) => api_common::query::parse_bool(want) == Some(*b),
        Value::Number(n) => n.to_string() == want,
        Value::String(s) => s == want,
        Value::Array(items) => items.iter().any(|i| matches_value(i, want)),
        Value::Object(_) => false,
    }
}

/// `fixed_ips=ip_address=10.0.0.5` / `fixed_ips=subnet_id=…`.
fn matches_fixed_ips(v: &Value, want: &str) -> bool {
    let Some((k, val)) = want.split_once('=') else { return false };
    v.as_array().is_some_and(|ips| {
        ips.iter().any(|ip| match k {
            "ip_address_substr" => ip["ip_address"].as_str().is_some_and(|a| a.contains(val)),
            _ => ip[k].as_str() == Some(val),
        })
    })
}

fn tags_of(doc: &Value) -> Vec<&str> {
    doc["tags"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Applies the attribute and tag filters of `q`.
pub fn filter(docs: Vec<Value>, q: &QueryPairs) -> Vec<Value> {
    let mut keys: Vec<&str> = Vec::new();
    for (k, _) in &q.0 {
        if !CONTROL.contains(&k.as_str()) && !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    let list = |key: &str| -> Vec<String> {
        q.get_all(key).flat_map(|v| v.split(',')).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let (all, any, not_all, not_any) = (list("tags"), list("tags-any"), list("not-tags"), list("not-tags-any"));
    docs.into_iter()
        .filter(|doc| {
            keys.iter().all(|k| {
                let Some(v) = doc.get(*k) else { return true };
                let wants: Vec<&str> = q.get_all(k).collect();
                if *k == "fixed_ips" {
                    return wants.iter().all(|w| matches_fixed_ips(v, w));
                }
                wants.iter().any(|w| matches_value(v, w))
            })
        })
        .filter(|doc| {
            let tags = tags_of(doc);
            (all.is_empty() || all.iter().all(|t| tags.contains(&t.as_str())))
                && (any.is_empty() || any.iter().any(|t| tags.contains(&t.as_str())))
                && (not_all.is_empty() || !not_all.iter().all(|t| tags.contains(&t.as_str())))
                && (not_any.is_empty() || !not_any.iter().any(|t| tags.contains(&t.as_str())))
        })
        .collect()
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Sorts by the `sort_key`/`sort_dir` pairs (then by id), pages by `limit`/`marker`, and trims to `fields`.
/// Returns the page and its links (`rel` next/previous) as Neutron renders them.
pub fn page(mut docs: Vec<Value>, q: &QueryPairs, base_url: &str) -> Result<(Vec<Value>, Vec<Value>)> {
    let keys: Vec<&str> = q.get_all("sort_key").collect();
    let dirs: Vec<&str> = q.get_all("sort_dir").collect();
    for d in &dirs {
        if *d != "asc" && *d != "desc" {
            return Err(Error::bad("BadRequest", format!("{d} is an invalid value for sort_dir, valid values are 'asc' and 'desc'")));
        }
    }
    if let Some(first) = docs.first() {
        for k in &keys {
            if first.get(*k).is_none() {
                return Err(Error::bad("BadRequest", format!("{k} is an invalid attribute for sort_key")));
            }
        }
    }
    let reverse = q.get("page_reverse").and_then(api_common::query::parse_bool).unwrap_or(false);
    let order = |a: &Value, b: &Value| {
        for (i, k) in keys.iter().enumerate() {
            let mut o = compare(&a[*k], &b[*k]);
            if dirs.get(i).copied().unwrap_or("asc") == "desc" {
                o = o.reverse();
            }
            if o != Ordering::Equal {
                return o;
            }
        }
        if keys.is_empty() { Ordering::Equal } else { compare(&a["id"], &b["id"]) }
    };
    docs.sort_by(order);
    let limit = match q.get("limit") {
        None | Some("") => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(0) => None,
            _ => return Err(Error::bad("BadRequest", format!("Bad limit request: Limit must be an integer 0 or greater and not '{l}'."))),
        },
    };
    let mut links = Vec::new();
    if reverse {
        docs.reverse();
    }
    let start = match q.get("marker") {
        Some(m) if !m.is_empty() => match docs.iter().position(|d| d["id"].as_str() == Some(m)) {
            Some(i) => i + 1,
            None => return Err(Error::not_found("MarkerNotFound", format!("Marker {m} could not be found."))),
        },
        _ => 0,
    };
    let mut out: Vec<Value> = docs.split_off(start.min(docs.len()));
    let had_previous = start > 0;
    if let Some(n) = limit {
        let more = out.len() > n;
        out.truncate(n);
        if reverse {
            out.reverse();
        }
        let link = |marker: &str, rev: bool| {
            let mut pairs: Vec<(String, String)> =
                q.0.iter().filter(|(k, _)| k != "marker" && k != "page_reverse").cloned().collect();
            pairs.push(("marker".into(), marker.to_string()));
            if rev {
                pairs.push(("page_reverse".into(), "True".into()));
            }
            let qs = url_encode(&pairs);
            format!("{base_url}?{qs}")
        };
        let (first, last) = (out.first().map(|d| d["id"].as_str().unwrap_or("").to_string()), out.last().map(|d| d["id"].as_str().unwrap_or("").to_string()));
        if let (Some(first), Some(last)) = (first, last) {
            let (has_next, has_prev) = if reverse { (had_previous, more) } else { (more, had_previous) };
            if has_next {
                links.push(json!({"rel": "next", "href": link(&last, false)}));
            }
            if has_prev {
                links.push(json!({"rel": "previous", "href": link(&first, true)}));
            }
        }
    } else if reverse {
        out.reverse();
    }
    Ok((out, links))
}

fn url_encode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Keeps only the `fields=` attributes (all of them without the parameter).
pub fn select_fields(doc: Value, q: &QueryPairs) -> Value {
    let fields: Vec<&str> = q.get_all("fields").flat_map(|f| f.split(',')).filter(|f| !f.is_empty()).collect();
    if fields.is_empty() {
        return doc;
    }
    match doc {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(k, _)| fields.contains(&k.as_str())).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QueryPairs {
        QueryPairs::parse(Some(s))
    }

    #[test]
    fn filters_sort_and_pages() {
        let docs = vec![
            json!({"id": "a", "name": "x", "shared": false, "tags": ["t1"]}),
            json!({"id": "b", "name": "y", "shared": true, "tags": ["t1", "t2"]}),
            json!({"id": "c", "name": "z", "shared": false, "tags": []}),
        ];
        assert_eq!(filter(docs.clone(), &q("shared=True")).len(), 1);
        assert_eq!(filter(docs.clone(), &q("name=x&name=z")).len(), 2);
        assert_eq!(filter(docs.clone(), &q("tags=t1,t2")).len(), 1);
        assert_eq!(filter(docs.clone(), &q("tags-any=t1")).len(), 2);
        assert_eq!(filter(docs.clone(), &q("not-tags-any=t1")).len(), 1);
        let (page1, links) = page(docs.clone(), &q("sort_key=name&sort_dir=desc&limit=2"), "http://h/v2.0/networks").unwrap();
        assert_eq!(page1[0]["id"], "c");
        assert_eq!(page1.len(), 2);
        assert_eq!(links[0]["rel"], "next");
        let (page2, links) = page(docs.clone(), &q("sort_key=name&sort_dir=desc&limit=2&marker=b"), "u").unwrap();
        assert_eq!(page2.len(), 1);
        assert_eq!(links[0]["rel"], "previous");
        assert!(page(docs.clone(), &q("sort_dir=up"), "u").is_err());
        assert!(page(docs, &q("marker=nope"), "u").is_err());
        let d = select_fields(json!({"id": "a", "name": "x"}), &q("fields=id"));
        assert_eq!(d, json!({"id": "a"}));
    }

    #[test]
    fn fixed_ip_filters() {
        let docs = vec![json!({"id": "p", "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}]})];
        assert_eq!(filter(docs.clone(), &q("fixed_ips=ip_address%3D10.0.0.5")).len(), 1);
        assert_eq!(filter(docs, &q("fixed_ips=ip_address%3D10.0.0.6")).len(), 0);
    }
}
