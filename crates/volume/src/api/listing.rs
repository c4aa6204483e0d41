//! List calls as Cinder answers them: filters on the listed attributes (`metadata` as a dict literal), sorting
//! (`sort=key:dir,…` or `sort_key`/`sort_dir`; newest first by default), `offset`, and `limit`/`marker` paging
//! with a `<collection>_links` next link.

use std::cmp::Ordering;

use api_common::{ApiError, QueryPairs};
use serde_json::{Map, Value, json};

/// Query keys that are not filters.
const CONTROL: &[&str] = &["limit", "marker", "sort", "sort_key", "sort_dir", "offset", "all_tenants", "with_count", "project_id", "is_public", "usage", "fields"];

/// Parses a `metadata` filter: a JSON object or a Python dict literal (`{'k': 'v'}`), as clients send it.
fn metadata_filter(raw: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<Value>(raw)
        .ok()
        .or_else(|| serde_json::from_str::<Value>(&raw.replace('\'', "\"")).ok())
        .and_then(|v| v.as_object().cloned())
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Keeps the documents matching every filter of `q` (unknown attributes are ignored, as upstream does).
pub fn filter(docs: Vec<Value>, q: &QueryPairs, aliases: &[(&str, &str)]) -> Vec<Value> {
    let filters: Vec<(String, String)> = q
        .0
        .iter()
        .filter(|(k, _)| !CONTROL.contains(&k.as_str()))
        .map(|(k, v)| (aliases.iter().find(|(a, _)| a == k).map(|(_, t)| t.to_string()).unwrap_or_else(|| k.clone()), v.clone()))
        .collect();
    docs.into_iter()
        .filter(|d| {
            filters.iter().all(|(k, want)| {
                if k == "metadata" {
                    let Some(m) = metadata_filter(want) else { return true };
                    return m.iter().all(|(mk, mv)| d["metadata"].get(mk).map(as_text) == Some(as_text(mv)));
                }
                match d.get(k) {
                    Some(v) => as_text(v).eq_ignore_ascii_case(want) || (k != "status" && as_text(v) == *want),
                    None => true,
                }
            })
        })
        .collect()
}

/// `(key, descending)` pairs from `sort` or `sort_key`/`sort_dir`; 400 on a bad direction.
pub fn sort_keys(q: &QueryPairs) -> Result<Vec<(String, bool)>, ApiError> {
    let dir = |d: &str| match d.to_ascii_lowercase().as_str() {
        "asc" => Ok(false),
        "desc" => Ok(true),
        other => Err(ApiError::bad_request(format!("Invalid input received: Unknown sort direction, must be 'desc' or 'asc' (got {other})."))),
    };
    let mut keys = Vec::new();
    if let Some(sort) = q.get("sort") {
        if q.contains("sort_key") || q.contains("sort_dir") {
            return Err(ApiError::bad_request("The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter."));
        }
        for item in sort.split(',').filter(|s| !s.trim().is_empty()) {
            let (k, d) = item.split_once(':').unwrap_or((item, "desc"));
            keys.push((alias(k.trim()), dir(d.trim())?));
        }
    } else {
        let ks: Vec<&str> = q.get_all("sort_key").collect();
        let ds: Vec<&str> = q.get_all("sort_dir").collect();
        for (i, k) in ks.iter().enumerate() {
            keys.push((alias(k), dir(ds.get(i).or(ds.last()).copied().unwrap_or("desc"))?));
        }
        if ks.is_empty() && !ds.is_empty() {
            keys.push(("created_at".into(), dir(ds[0])?));
        }
    }
    if keys.is_empty() {
        keys.push(("created_at".into(), true));
    }
    if !keys.iter().any(|(k, _)| k == "id") {
        let desc = keys.last().map(|(_, d)| *d).unwrap_or(true);
        keys.push(("id".into(), desc));
    }
    Ok(keys)
}

/// Upstream's sort keys with their old names.
fn alias(key: &str) -> String {
    match key {
        "display_name" => "name".into(),
        "display_description" => "description".into(),
        other => other.to_string(),
    }
}

/// 400 unless every sort key is one of `allowed`.
pub fn check_sort(q: &QueryPairs, allowed: &[&str]) -> Result<(), ApiError> {
    for (k, _) in sort_keys(q)? {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!("Invalid input received: Invalid sort key {k}")));
        }
    }
    Ok(())
}

fn cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().unwrap_or(0.0).total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => as_text(a).cmp(&as_text(b)),
    }
}

pub fn sort(docs: &mut [Value], keys: &[(String, bool)]) {
    docs.sort_by(|a, b| {
        for (k, desc) in keys {
            let o = cmp(&a[k.as_str()], &b[k.as_str()]);
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
}

fn non_negative(q: &QueryPairs, key: &str) -> Result<Option<usize>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().ok().filter(|n| *n >= 0).map(|n| Some(n as usize)).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid input received: {key} must be an integer greater than or equal to 0 (got {v})."))
        }),
    }
}

/// Sorts and pages `docs`; the page and the `next` link (when more follow).
pub fn page(mut docs: Vec<Value>, q: &QueryPairs, link_base: &str) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let keys = sort_keys(q)?;
    sort(&mut docs, &keys);
    let limit = non_negative(q, "limit")?;
    let offset = non_negative(q, "offset")?.unwrap_or(0);
    let mut start = 0;
    if let Some(marker) = q.get("marker") {
        start = docs
            .iter()
            .position(|d| d["id"] == json!(marker))
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::not_found(format!("Marker {marker} could not be found.")))?;
    }
    let start = (start + offset).min(docs.len());
    let rest = docs.split_off(start);
    // As upstream: a full page gets a next link, even when nothing follows it.
    let (page, more) = match limit {
        Some(l) if l <= rest.len() => (rest[..l].to_vec(), l > 0),
        _ => (rest, false),
    };
    let mut links = Vec::new();
    if more && let Some(last) = page.last() {
        let query = q.with("marker", last["id"].as_str().unwrap_or_default());
        links.push(json!({"href": format!("{link_base}?{query}"), "rel": "next"}));
    }
    Ok((page, links))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QueryPairs {
        QueryPairs::parse(Some(s))
    }

    #[test]
    fn filters_sort_and_pages() {
        let docs: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("id{i}"), "name": format!("n{}", i % 2), "status": "available", "created_at": format!("2020-01-0{}", i + 1), "metadata": {"k": format!("{i}")}}))
            .collect();
        assert_eq!(filter(docs.clone(), &q("name=n1"), &[]).len(), 2);
        assert_eq!(filter(docs.clone(), &q("metadata=%7B%27k%27%3A+%273%27%7D"), &[]).len(), 1);
        assert_eq!(filter(docs.clone(), &q("status=bogus"), &[]).len(), 0);
        let (first, links) = page(docs.clone(), &q("limit=2"), "http://x/volumes").unwrap();
        assert_eq!(first.iter().map(|d| d["id"].as_str().unwrap()).collect::<Vec<_>>(), ["id4", "id3"]);
        assert!(links[0]["href"].as_str().unwrap().contains("marker=id3"));
        let (sorted, links) = page_of(&docs, "sort=display_name:asc,id:asc&marker=id0&limit=10");
        assert_eq!(sorted, ["id2", "id4", "id1", "id3"]);
        assert!(links.is_empty());
        assert!(check_sort(&q("sort_key=name"), &["name", "id", "created_at"]).is_ok());
        assert!(check_sort(&q("sort_key=invalid"), &["name", "id", "created_at"]).is_err());
        assert_eq!(page_of(&docs, "limit=0").0.len(), 0);
        assert_eq!(page_of(&docs, "offset=3&sort_key=id&sort_dir=asc").0, ["id3", "id4"]);
        assert_eq!(page_of(&docs, "sort_key=id&sort_dir=asc").0, ["id0", "id1", "id2", "id3", "id4"]);
        assert!(page(docs.clone(), &q("marker=nope"), "").is_err());
        assert!(page(docs, &q("limit=-1"), "").is_err());
    }

    fn page_of(docs: &[Value], query: &str) -> (Vec<String>, Vec<Value>) {
        let (p, l) = page(docs.to_vec(), &q(query), "").unwrap();
        (p.iter().map(|d| d["id"].as_str().unwrap().to_string()).collect(), l)
    }
}
