//! A JSON body extractor whose failures are 400s naming the offending field, never 422s or 500s.

use axum::{
    extract::{FromRequest, Request},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::ApiError;

/// Request body as `T` (bad input → 400 with the path of the field at fault); as a response, serialises `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        parse(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Parses a JSON document into `T`, turning every failure into a 400 that says what is wrong and where.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Malformed request body: the body is empty, a JSON document was expected."));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => match de.end() {
            Ok(()) => Ok(value),
            Err(e) => Err(ApiError::bad_request(format!("Malformed request body: {e}"))),
        },
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::bad_request(format!("Malformed request body: {inner}")))
            } else if path == "." || path.is_empty() {
                Err(ApiError::bad_request(format!("Invalid input: {}", strip_position(&inner.to_string()))))
            } else {
                Err(ApiError::bad_request(format!(
                    "Invalid input for field '{path}': {}",
                    strip_position(&inner.to_string())
                )))
            }
        }
    }
}

/// serde_json appends " at line X column Y", which is noise once the field path is known.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        auth: Auth,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Auth {
        methods: Vec<String>,
        ttl: Option<u32>,
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse::<Outer>(br#"{"auth": {"methods": ["password"], "ttl": "x"}}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("'auth.ttl'"), "{}", e.message);
        assert!(e.message.contains("expected u32"), "{}", e.message);
    }

    #[test]
    fn missing_field_is_named() {
        let e = parse::<Outer>(br#"{"auth": {}}"#).unwrap_err();
        assert!(e.message.contains("methods"), "{}", e.message);
    }

    #[test]
    fn malformed_and_empty_and_trailing() {
        assert!(parse::<Outer>(b"{").unwrap_err().message.starts_with("Malformed"));
        assert!(parse::<Outer>(b"  ").unwrap_err().message.contains("empty"));
        assert!(parse::<serde_json::Value>(b"{} x").unwrap_err().message.starts_with("Malformed"));
    }
}
