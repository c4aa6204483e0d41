//! Query-string handling shared by list calls: repeated keys, `limit`/`marker` pagination with `next` links,
//! and sorting (`sort_key`/`sort_dir` pairs or `sort=key:dir,…`).

use axum::extract::{FromRequestParts, RawQuery};
use http::request::Parts;

use crate::error::ApiError;

/// All query parameters in order, repeated keys kept (axum's `Query` folds them).
#[derive(Clone, Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
            .unwrap_or_default();
        QueryPairs(pairs)
    }
    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
    /// A boolean filter as upstream accepts them (`true/false`, `1/0`, `yes/no`, `on/off`); 400 otherwise.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_bool(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid value '{v}' for '{key}': expected a boolean."))),
        }
    }
    /// The query string with `key` replaced by `value` (or added), for building links.
    pub fn with(&self, key: &str, value: &str) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            if k != key {
                out.append_pair(k, v);
            }
        }
        out.append_pair(key, value);
        out.finish()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let RawQuery(raw) = RawQuery::from_request_parts(parts, state).await.unwrap_or(RawQuery(None));
        Ok(QueryPairs::parse(raw.as_deref()))
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// `limit` and `marker` of a list call. `limit` is capped at the service's maximum page size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub marker: Option<String>,
    /// Whether the client asked for a limit (some services only add `next` links then).
    pub explicit_limit: bool,
}

impl Page {
    pub fn from_query(q: &QueryPairs, max_limit: usize) -> Result<Page, ApiError> {
        let (limit, explicit_limit) = match q.get("limit") {
            None => (max_limit, false),
            Some(v) => {
                let n: i64 = v
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("Invalid limit '{v}': limit must be an integer.")))?;
                if n < 0 {
                    return Err(ApiError::bad_request(format!("Invalid limit '{v}': limit must be >= 0.")));
                }
                (usize::try_from(n).unwrap_or(usize::MAX).min(max_limit), true)
            }
        };
        let marker = q.get("marker").filter(|m| !m.is_empty()).map(str::to_string);
        Ok(Page { limit, marker, explicit_limit })
    }

    /// Applies the page to items already in list order: skips through `marker` (404 if it is unknown, as
    /// upstream's "marker not found") and keeps `limit` items. Returns the page and whether more follow.
    pub fn apply<T>(&self, items: Vec<T>, id_of: impl Fn(&T) -> &str) -> Result<(Vec<T>, bool), ApiError> {
        let start = match &self.marker {
            None => 0,
            Some(marker) => {
                let pos = items
                    .iter()
                    .position(|i| id_of(i) == marker)
                    .ok_or_else(|| ApiError::bad_request(format!("marker [{marker}] not found")))?;
                pos + 1
            }
        };
        let rest: Vec<T> = items.into_iter().skip(start).collect();
        let more = rest.len() > self.limit;
        Ok((rest.into_iter().take(self.limit).collect(), more))
    }

    /// The `next` link for a page whose last item has id `last`: the same URL with `marker` set.
    pub fn next_link(base: &str, q: &QueryPairs, last: &str) -> String {
        format!("{base}?{}", q.with("marker", last))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortDir {
    Asc,
    Desc,
}

/// Sort keys in priority order. `allowed` lists the keys a resource can be sorted by; others are a 400.
pub fn parse_sort(
    q: &QueryPairs,
    allowed: &[&str],
    default: &[(&str, SortDir)],
) -> Result<Vec<(String, SortDir)>, ApiError> {
    let dir = |d: &str| match d.to_ascii_lowercase().as_str() {
        "asc" => Ok(SortDir::Asc),
        "desc" => Ok(SortDir::Desc),
        other => Err(ApiError::bad_request(format!("Invalid sort direction '{other}': must be 'asc' or 'desc'."))),
    };
    let check = |k: &str| {
        if allowed.contains(&k) {
            Ok(k.to_string())
        } else {
            Err(ApiError::bad_request(format!("Invalid sort key '{k}'.")))
        }
    };
    let mut out = Vec::new();
    if let Some(sort) = q.get("sort") {
        for item in sort.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, d) = item.split_once(':').unwrap_or((item, "desc"));
            out.push((check(k)?, dir(d)?));
        }
    }
    let keys: Vec<&str> = q.get_all("sort_key").collect();
    let dirs: Vec<&str> = q.get_all("sort_dir").collect();
    if !out.is_empty() && (!keys.is_empty() || !dirs.is_empty()) {
        return Err(ApiError::bad_request("The 'sort' parameter cannot be combined with 'sort_key'/'sort_dir'."));
    }
    if dirs.len() > keys.len().max(1) {
        return Err(ApiError::bad_request("More sort directions than sort keys were given."));
    }
    for (i, k) in keys.iter().enumerate() {
        let d = dirs.get(i).or(dirs.last()).copied().unwrap_or("desc");
        out.push((check(k)?, dir(d)?));
    }
    if out.is_empty() {
        let d = dirs.first().map(|d| dir(d)).transpose()?;
        out = default.iter().map(|(k, dd)| (k.to_string(), d.unwrap_or(*dd))).collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QueryPairs {
        QueryPairs::parse(Some(s))
    }

    #[test]
    fn repeated_keys_are_kept() {
        let p = q("tag=a&tag=b&name=x%20y");
        assert_eq!(p.get_all("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.get("name"), Some("x y"));
    }

    #[test]
    fn limit_validation() {
        assert_eq!(Page::from_query(&q("limit=5"), 100).unwrap().limit, 5);
        assert_eq!(Page::from_query(&q("limit=500"), 100).unwrap().limit, 100);
        assert_eq!(Page::from_query(&q(""), 100).unwrap().limit, 100);
        assert_eq!(Page::from_query(&q("limit=-1"), 100).unwrap_err().status, 400);
        assert_eq!(Page::from_query(&q("limit=abc"), 100).unwrap_err().status, 400);
    }

    #[test]
    fn paging_walks_the_list() {
        let items: Vec<String> = (0..5).map(|i| format!("id{i}")).collect();
        let page = Page::from_query(&q("limit=2&marker=id1"), 100).unwrap();
        let (got, more) = page.apply(items.clone(), |s| s).unwrap();
        assert_eq!(got, ["id2", "id3"]);
        assert!(more);
        let page = Page::from_query(&q("limit=2&marker=id3"), 100).unwrap();
        let (got, more) = page.apply(items.clone(), |s| s).unwrap();
        assert_eq!(got, ["id4"]);
        assert!(!more);
        let page = Page::from_query(&q("marker=nope"), 100).unwrap();
        assert_eq!(page.apply(items, |s| s).unwrap_err().status, 400);
    }

    #[test]
    fn next_link_replaces_marker() {
        let link = Page::next_link("http://h/v2.1/servers", &q("limit=2&marker=a&name=x"), "b");
        assert_eq!(link, "http://h/v2.1/servers?limit=2&name=x&marker=b");
    }

    #[test]
    fn sort_forms() {
        let allowed = ["name", "created_at", "id"];
        let def = [("created_at", SortDir::Desc)];
        assert_eq!(
            parse_sort(&q("sort=name:asc,id"), &allowed, &def).unwrap(),
            vec![("name".into(), SortDir::Asc), ("id".into(), SortDir::Desc)]
        );
        assert_eq!(
            parse_sort(&q("sort_key=name&sort_dir=asc&sort_key=id&sort_dir=desc"), &allowed, &def).unwrap(),
            vec![("name".into(), SortDir::Asc), ("id".into(), SortDir::Desc)]
        );
        assert_eq!(parse_sort(&q(""), &allowed, &def).unwrap(), vec![("created_at".into(), SortDir::Desc)]);
        assert_eq!(parse_sort(&q("sort_key=bogus"), &allowed, &def).unwrap_err().status, 400);
        assert_eq!(parse_sort(&q("sort_dir=up"), &allowed, &def).unwrap_err().status, 400);
        assert_eq!(parse_sort(&q("sort=name&sort_key=id"), &allowed, &def).unwrap_err().status, 400);
    }
}
