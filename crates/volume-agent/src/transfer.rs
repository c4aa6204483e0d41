//! Data to and from other services, over their public HTTP APIs with the caller's token: image data (the Image
//! API's `/v2/images/{id}/file`) and backups (objects in a container of the caller's object-store account, as
//! Cinder's swift backup driver writes them: zlib-compressed chunks `<prefix>-00001`, `<prefix>-00002`, … and a
//! `<prefix>_metadata` object listing them).

use std::{io::Write, path::Path};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use volume_rpc::ObjectTarget;

use crate::Error;

const AUTH_TOKEN: &str = "x-auth-token";

/// Downloads an image's data into `dest`.
pub async fn download_image(http: &Client, image_url: &str, image_id: &str, token: &str, dest: &Path) -> Result<(), Error> {
    let url = format!("{}/v2/images/{image_id}/file", image_url.trim_end_matches('/'));
    let resp = http.get(&url).header(AUTH_TOKEN, token).send().await.map_err(|e| Error::Remote(format!("GET {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Error::Remote(format!("GET {url}: HTTP {}", resp.status())));
    }
    let mut file = tokio::fs::File::create(dest).await.map_err(|e| Error::io("creating the download", e))?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Remote(format!("GET {url}: {e}")))?;
        file.write_all(&chunk).await.map_err(|e| Error::io("writing the download", e))?;
    }
    file.flush().await.map_err(|e| Error::io("writing the download", e))?;
    Ok(())
}

/// Uploads `source` as an image's data.
pub async fn upload_image(http: &Client, image_url: &str, image_id: &str, token: &str, source: &Path) -> Result<(), Error> {
    let url = format!("{}/v2/images/{image_id}/file", image_url.trim_end_matches('/'));
    let file = tokio::fs::File::open(source).await.map_err(|e| Error::io("opening the export", e))?;
    let len = file.metadata().await.map_err(|e| Error::io("reading the export", e))?.len();
    let stream = futures::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let resp = http
        .put(&url)
        .header(AUTH_TOKEN, token)
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| Error::Remote(format!("PUT {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Error::Remote(format!("PUT {url}: HTTP {}", resp.status())));
    }
    Ok(())
}

async fn swift(http: &Client, target: &ObjectTarget, method: Method, name: Option<&str>, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes), Error> {
    let mut url = format!("{}/{}", target.account_url.trim_end_matches('/'), target.container);
    if let Some(name) = name {
        url.push('/');
        url.push_str(name);
    }
    let mut req = http.request(method.clone(), &url).header(AUTH_TOKEN, &target.auth_token.0);
    if let Some(body) = body {
        req = req.header("content-length", body.len()).body(body);
    } else if method == Method::PUT {
        req = req.header("content-length", 0);
    }
    let resp = req.send().await.map_err(|e| Error::Remote(format!("{method} {url}: {e}")))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| Error::Remote(format!("{method} {url}: {e}")))?;
    if !(status.is_success() || method == Method::DELETE && status == StatusCode::NOT_FOUND) {
        return Err(Error::Remote(format!("{method} {url}: HTTP {status}")));
    }
    Ok((status, bytes))
}

/// The object name of chunk `n` (1-based).
pub fn chunk_name(prefix: &str, n: i64) -> String {
    format!("{prefix}-{n:05}")
}

/// Writes `source` (a raw file) as chunks of `chunk_size` bytes plus the metadata object; returns the chunk count
/// and the bytes read.
pub async fn write_backup(http: &Client, target: &ObjectTarget, prefix: &str, chunk_size: u64, source: &Path, backup_id: &str, volume_id: &str) -> Result<(i64, u64), Error> {
    swift(http, target, Method::PUT, None, None).await?;
    let mut file = tokio::fs::File::open(source).await.map_err(|e| Error::io("opening the export", e))?;
    let size = file.metadata().await.map_err(|e| Error::io("reading the export", e))?.len();
    let probe = std::fs::File::open(source).map_err(|e| Error::io("opening the export", e))?;
    let chunk_size = chunk_size.max(1);
    let mut objects = Vec::new();
    let mut offset = 0u64;
    let mut n = 0i64;
    // Volumes are mostly unwritten: chunks that are holes of the (sparse) export are not read, and an all-zero
    // chunk is compressed once and its bytes reused.
    let mut zero_chunk: Option<(u64, Vec<u8>)> = None;
    while offset < size || n == 0 {
        let len = chunk_size.min(size - offset);
        n += 1;
        let data = if len > 0 && is_hole(&probe, offset, len) {
            None
        } else {
            let mut buf = vec![0u8; len as usize];
            file.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| Error::io("reading the export", e))?;
            file.read_exact(&mut buf).await.map_err(|e| Error::io("reading the export", e))?;
            if buf.iter().all(|b| *b == 0) { None } else { Some(buf) }
        };
        let compressed = match (data, &zero_chunk) {
            (None, Some((l, bytes))) if *l == len => bytes.clone(),
            (data, _) => {
                let is_zero = data.is_none();
                let buf = data.unwrap_or_else(|| vec![0u8; len as usize]);
                let compressed = compress(buf).await?;
                if is_zero {
                    zero_chunk = Some((len, compressed.clone()));
                }
                compressed
            }
        };
        let name = chunk_name(prefix, n);
        swift(http, target, Method::PUT, Some(&name), Some(compressed)).await?;
        objects.push(json!({name: {"offset": offset, "length": len, "compression": "zlib"}}));
        offset += len;
    }
    let metadata = json!({
        "version": "1.0.0",
        "backup_id": backup_id,
        "volume_id": volume_id,
        "objects": objects,
    });
    swift(http, target, Method::PUT, Some(&format!("{prefix}_metadata")), Some(metadata.to_string().into_bytes())).await?;
    Ok((n, offset))
}

async fn compress(buf: Vec<u8>) -> Result<Vec<u8>, Error> {
    tokio::task::spawn_blocking(move || {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&buf)?;
        z.finish()
    })
    .await
    .map_err(|e| Error::Backend(e.to_string()))?
    .map_err(|e| Error::io("compressing", e))
}

/// Whether `[offset, offset + len)` of a file is a hole (no data stored), by `SEEK_DATA`.
fn is_hole(file: &std::fs::File, offset: u64, len: u64) -> bool {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(offset)) {
        Ok(next) => next >= offset + len,
        Err(e) => e == rustix::io::Errno::NXIO,
    }
}

/// Reads a backup's chunks back into `dest` (a raw file).
pub async fn read_backup(http: &Client, target: &ObjectTarget, prefix: &str, object_count: i64, dest: &Path) -> Result<(), Error> {
    let mut file = tokio::fs::File::create(dest).await.map_err(|e| Error::io("creating the restore file", e))?;
    let mut total = 0u64;
    let mut zeros: Vec<u8> = Vec::new();
    for n in 1..=object_count {
        let (_, body) = swift(http, target, Method::GET, Some(&chunk_name(prefix, n)), None).await?;
        let data = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut z = flate2::write::ZlibDecoder::new(&mut out);
            z.write_all(&body)?;
            z.finish()?;
            Ok::<_, std::io::Error>(out)
        })
        .await
        .map_err(|e| Error::Backend(e.to_string()))?
        .map_err(|e| Error::Backend(format!("backup chunk {n} is corrupt: {e}")))?;
        if zeros.len() < data.len() {
            zeros.resize(data.len(), 0);
        }
        total += data.len() as u64;
        if data[..] == zeros[..data.len()] {
            // Leave a hole: the restore file stays as sparse as the volume was.
            file.seek(std::io::SeekFrom::Start(total)).await.map_err(|e| Error::io("writing the restore file", e))?;
        } else {
            file.write_all(&data).await.map_err(|e| Error::io("writing the restore file", e))?;
        }
    }
    file.set_len(total).await.map_err(|e| Error::io("writing the restore file", e))?;
    file.flush().await.map_err(|e| Error::io("writing the restore file", e))?;
    Ok(())
}

/// Removes a backup's objects (missing ones are fine).
pub async fn delete_backup(http: &Client, target: &ObjectTarget, prefix: &str, object_count: i64) -> Result<(), Error> {
    for n in 1..=object_count {
        swift(http, target, Method::DELETE, Some(&chunk_name(prefix, n)), None).await?;
    }
    swift(http, target, Method::DELETE, Some(&format!("{prefix}_metadata")), None).await?;
    Ok(())
}

/// The metadata object of a backup, if it can be read (tests and diagnostics).
pub async fn backup_metadata(http: &Client, target: &ObjectTarget, prefix: &str) -> Result<Value, Error> {
    let (_, body) = swift(http, target, Method::GET, Some(&format!("{prefix}_metadata")), None).await?;
    serde_json::from_slice(&body).map_err(|e| Error::Remote(format!("backup metadata: {e}")))
}
