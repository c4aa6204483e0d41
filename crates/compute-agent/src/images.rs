//! The agent's client of the image service: uploading snapshots on the user's behalf, streamed from disk.

use std::path::Path;

use tokio::io::AsyncReadExt;

use crate::Error;
use crate::hypervisor::SnapshotFormat;

const CHUNK: usize = 1 << 20;

/// Streams `file` into image `image_id` (`PUT {image_url}/v2/images/{id}/file`) with the user's `token`, after
/// setting the disk and container formats the driver wrote.
pub async fn upload(image_url: &str, token: &str, image_id: &str, file: &Path, format: &SnapshotFormat) -> Result<(), Error> {
    let base = image_url.trim_end_matches('/');
    let client = reqwest::Client::new();
    let http = |e: reqwest::Error| Error::Hypervisor(format!("image service: {e}"));
    let patch = serde_json::json!([
        {"op": "replace", "path": "/disk_format", "value": format.disk_format},
        {"op": "replace", "path": "/container_format", "value": format.container_format},
    ]);
    let _ = client
        .patch(format!("{base}/v2/images/{image_id}"))
        .header("x-auth-token", token)
        .header("content-type", "application/openstack-images-v2.1-json-patch")
        .body(patch.to_string())
        .send()
        .await
        .map_err(http)?;
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|source| Error::Io { context: format!("opening the snapshot {}", file.display()), source })?;
    let stream = futures::stream::unfold(f, |mut f| async move {
        let mut buf = vec![0u8; CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let resp = client
        .put(format!("{base}/v2/images/{image_id}/file"))
        .header("x-auth-token", token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(http)?;
    if !resp.status().is_success() {
        return Err(Error::Hypervisor(format!("the image service refused the snapshot upload: {}", resp.status())));
    }
    Ok(())
}
