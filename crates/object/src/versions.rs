//! Object versioning, as Swift's versioned_writes middleware keeps it: a container with `X-Versions-Location`
//! (stack mode) or `X-History-Location` (history mode) names a container of the same account where replaced objects
//! go, as `<length of the name, 3 hex digits><name>/<X-Timestamp of the replaced version>`.
//!
//! * Overwriting an object archives the current one first (both modes).
//! * Deleting one, in stack mode, brings back the newest archived version (the object is gone only when none is
//!   left); in history mode, archives it and deletes it.
//!
//! Archived and restored copies are the service's own writes: raw (a manifest is copied as a manifest), not held to
//! quotas and not versioned again.

use crate::{
    error::Error,
    service::{ObjectStore, PutRequest, check_container_name, x_timestamp},
    store::{ContainerRow, ObjectRow, Page},
};

/// Where a container keeps its versioning header: with its metadata, as a header it answers with.
pub const VERSIONS_LOCATION: &str = "header:x-versions-location";
pub const HISTORY_LOCATION: &str = "header:x-history-location";

/// A container's versioning.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// `X-Versions-Location`: deletes restore the previous version.
    Stack(String),
    /// `X-History-Location`: deletes archive, then delete.
    History(String),
}

pub fn mode(container: &ContainerRow) -> Option<Mode> {
    let get = |k: &str| container.metadata.get(k).filter(|v| !v.is_empty()).cloned();
    get(VERSIONS_LOCATION).map(Mode::Stack).or_else(|| get(HISTORY_LOCATION).map(Mode::History))
}

/// Checks a versions location: a container name, without a slash.
pub fn check_location(value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::PreconditionFailed("Container name cannot be empty".into()));
    }
    if value.contains('/') {
        return Err(Error::PreconditionFailed("Container name cannot contain a slash".into()));
    }
    check_container_name(value)
}

/// The prefix of an object's archived versions.
pub fn versions_prefix(name: &str) -> String {
    format!("{:03x}{name}/", name.len())
}

impl ObjectStore {
    /// Copies an object's current data and metadata to `dest`, as the service's own write (boxed: a PUT archives
    /// through this, and this PUTs).
    fn copy_raw<'a>(
        &'a self,
        source: &'a ObjectRow,
        dest: (&'a str, &'a str),
    ) -> futures::future::BoxFuture<'a, Result<ObjectRow, Error>> {
        Box::pin(async move {
            let body = self.read_object(source, None).await?;
            let req = PutRequest {
                content_type: source.content_type.clone(),
                expected_etag: Some(source.etag.clone()),
                metadata: source.metadata.clone(),
                length: Some(source.size as u64),
                internal: true,
            };
            self.put_object(&source.account, dest.0, dest.1, body, req).await
        })
    }

    /// Before an object of a versioned container is replaced: archives the current version, if any.
    pub(crate) async fn archive_current(&self, container: &ContainerRow, name: &str) -> Result<(), Error> {
        let Some(Mode::Stack(location) | Mode::History(location)) = mode(container) else { return Ok(()) };
        let current = match self.object(&container.account, &container.name, name).await {
            Ok(row) => row,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let archived = format!("{}{}", versions_prefix(name), x_timestamp(current.last_modified));
        match self.copy_raw(&current, (&location, &archived)).await {
            Ok(_) => Ok(()),
            Err(Error::NotFound(_)) => {
                Err(Error::PreconditionFailed(format!("The versions container {location} does not exist.")))
            }
            Err(e) => Err(e),
        }
    }

    /// A client's DELETE in a versioned container; `false` when the container is not versioned (a plain delete
    /// follows).
    pub(crate) async fn delete_versioned(&self, container: &ContainerRow, name: &str) -> Result<bool, Error> {
        match mode(container) {
            None => Ok(false),
            Some(Mode::History(_)) => {
                self.object(&container.account, &container.name, name).await?;
                self.archive_current(container, name).await?;
                self.remove_object(&container.account, &container.name, name).await?;
                Ok(true)
            }
            Some(Mode::Stack(location)) => {
                let mut versions = self.versions_of(&container.account, &location, name).await?;
                while let Some(version) = versions.pop() {
                    match self.copy_raw(&version, (&container.name, name)).await {
                        Ok(_) => {
                            match self.remove_object(&version.account, &version.container, &version.name).await {
                                Ok(()) | Err(Error::NotFound(_)) => {}
                                Err(e) => return Err(e),
                            }
                            return Ok(true);
                        }
                        // Deleted meanwhile: the next older one.
                        Err(Error::NotFound(_)) | Err(Error::Unavailable(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Ok(false)
            }
        }
    }

    /// An object's archived versions, oldest first.
    async fn versions_of(&self, account: &str, location: &str, name: &str) -> Result<Vec<ObjectRow>, Error> {
        if self.store().container_get(account, location).await?.is_none() {
            return Ok(Vec::new());
        }
        let prefix = versions_prefix(name);
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = Page { after: after.as_deref(), from: &prefix, reverse: false, limit: 1000 };
            let rows = self.store().object_page(account, location, &page).await?;
            let full = rows.len() == 1000;
            for r in rows {
                if !r.name.starts_with(&prefix) {
                    return Ok(out);
                }
                after = Some(r.name.clone());
                out.push(r);
            }
            if !full {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_names_sort_by_object_then_time() {
        assert_eq!(versions_prefix("obj"), "003obj/");
        assert_eq!(versions_prefix(&"a".repeat(300)), format!("12c{}/", "a".repeat(300)));
        assert_eq!(versions_prefix("é"), "002é/", "bytes, not characters");
        assert!(check_location("v").is_ok());
        assert!(matches!(check_location("a/b"), Err(Error::PreconditionFailed(_))));
        assert!(matches!(check_location(""), Err(Error::PreconditionFailed(_))));
    }
}
