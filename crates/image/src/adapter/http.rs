//! The `http` store: read-only image data at `http://` or `https://` URLs. It serves data (whole or a byte range)
//! streamed chunk by chunk, and is the source `web-download` imports read from; it cannot be uploaded to.

use super::{AdapterError, ByteRange, ByteStream, StoreAdapter};
use async_trait::async_trait;

#[derive(Debug, Clone)]
pub struct HttpAdapter {
    client: reqwest::Client,
}

impl HttpAdapter {
    pub fn new() -> Result<Self, AdapterError> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| AdapterError::Storage(std::io::Error::other(e)))?;
        Ok(HttpAdapter { client })
    }
}

#[async_trait]
impl StoreAdapter for HttpAdapter {
    fn id(&self) -> &str {
        "http"
    }

    fn description(&self) -> &str {
        "Read-only image data at HTTP(S) URLs."
    }

    fn read_only(&self) -> bool {
        true
    }

    fn owns(&self, location: &str) -> bool {
        reqwest::Url::parse(location).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
    }

    async fn add(&self, _image_id: &str, _data: ByteStream, _size: Option<u64>) -> Result<String, AdapterError> {
        Err(AdapterError::ReadOnly("http".into()))
    }

    async fn get(&self, location: &str, range: Option<ByteRange>) -> Result<ByteStream, AdapterError> {
        if !self.owns(location) {
            return Err(AdapterError::NotFound(location.to_string()));
        }
        let mut req = self.client.get(location);
        if let Some(r) = range {
            req = req.header(reqwest::header::RANGE, format!("bytes={}-{}", r.start, r.end));
        }
        let resp = req.send().await.map_err(|e| AdapterError::Storage(std::io::Error::other(e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(AdapterError::NotFound(location.to_string()));
        }
        if !status.is_success() {
            return Err(AdapterError::Storage(std::io::Error::other(format!("{location} answered {status}"))));
        }
        if range.is_some() && status != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(AdapterError::Storage(std::io::Error::other(format!("{location} does not serve ranges"))));
        }
        Ok(super::body_stream(resp))
    }

    async fn delete(&self, _location: &str) -> Result<(), AdapterError> {
        Err(AdapterError::ReadOnly("http".into()))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-shot HTTP server on loopback answering every request with `status` and `body`; returns its URL.
    async fn serve(status: &'static str, body: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body).await;
            }
        });
        format!("http://{addr}/disk.img")
    }

    #[tokio::test]
    async fn reads_urls_and_refuses_writes() {
        let store = HttpAdapter::new().unwrap();
        let url = serve("200 OK", b"remote bytes").await;
        assert!(store.owns(&url));
        assert!(!store.owns("file:///etc/passwd"));
        let data: Vec<u8> = store.get(&url, None).await.unwrap().map(|c| c.unwrap().to_vec()).concat().await;
        assert_eq!(data, b"remote bytes");
        let missing = serve("404 Not Found", b"").await;
        assert!(matches!(store.get(&missing, None).await, Err(AdapterError::NotFound(_))));
        let whole = serve("200 OK", b"no ranges here").await;
        assert!(store.get(&whole, Some(ByteRange { start: 0, end: 1 })).await.is_err());
        assert!(matches!(store.delete(&url).await, Err(AdapterError::ReadOnly(_))));
        let empty: ByteStream = Box::pin(futures::stream::empty());
        assert!(matches!(store.add("x", empty, None).await, Err(AdapterError::ReadOnly(_))));
    }
}
