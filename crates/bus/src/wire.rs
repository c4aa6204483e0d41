//! Wire format shared by both transports: JSON envelopes for requests and replies.
//!
//! A request is `{"version": "1.0", "method": ..., "args": ..., "msg_id": ..., "reply_to": ...}`,
//! where `msg_id` and `reply_to` are present only for calls. A reply is
//! `{"version": "1.0", "msg_id": ..., "result": ...}` or, when the handler failed,
//! `{"version": "1.0", "msg_id": ..., "failure": {"kind": ..., "message": ...}}`.
//! Receivers accept any `1.x` version.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, RemoteError};

/// Version written into every envelope.
const VERSION: &str = "1.0";

fn supported(version: &str) -> bool {
    version.split('.').next() == Some("1")
}

/// A call, cast or fan-out as it travels to a server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub version: String,
    pub method: String,
    pub args: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

impl Request {
    /// Encodes `args` as method `method`; `call` carries `(msg_id, reply_to)` for calls.
    pub fn encode<T: Serialize>(
        method: &str,
        args: &T,
        call: Option<(&str, &str)>,
    ) -> Result<Vec<u8>, Error> {
        let request = Request {
            version: VERSION.into(),
            method: method.into(),
            args: serde_json::to_value(args)?,
            msg_id: call.map(|(id, _)| id.to_owned()),
            reply_to: call.map(|(_, to)| to.to_owned()),
        };
        Ok(serde_json::to_vec(&request)?)
    }

    /// Decodes a request; the error text is for the log.
    pub fn decode(body: &[u8]) -> Result<Request, String> {
        let request: Request = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !supported(&request.version) {
            return Err(format!(
                "unsupported envelope version {:?}",
                request.version
            ));
        }
        Ok(request)
    }
}

/// The answer to a call.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub version: String,
    pub msg_id: String,
    #[serde(default)]
    pub result: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RemoteError>,
}

impl Reply {
    pub fn encode(msg_id: &str, outcome: Result<Value, RemoteError>) -> Result<Vec<u8>, Error> {
        let (result, failure) = match outcome {
            Ok(value) => (value, None),
            Err(error) => (Value::Null, Some(error)),
        };
        let reply = Reply {
            version: VERSION.into(),
            msg_id: msg_id.into(),
            result,
            failure,
        };
        Ok(serde_json::to_vec(&reply)?)
    }

    pub fn decode(body: &[u8]) -> Result<Reply, String> {
        let reply: Reply = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !supported(&reply.version) {
            return Err(format!("unsupported envelope version {:?}", reply.version));
        }
        Ok(reply)
    }

    /// The handler's result as the caller's reply type, or its error.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, Error> {
        match self.failure {
            Some(RemoteError { kind, message }) => Err(Error::Remote { kind, message }),
            None => Ok(serde_json::from_value(self.result)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let body =
            Request::encode("ping", &serde_json::json!({"a": 1}), Some(("m1", "r1"))).unwrap();
        let request = Request::decode(&body).unwrap();
        assert_eq!(request.method, "ping");
        assert_eq!(request.args, serde_json::json!({"a": 1}));
        assert_eq!(
            (request.msg_id.as_deref(), request.reply_to.as_deref()),
            (Some("m1"), Some("r1"))
        );

        let cast = Request::decode(&Request::encode("ping", &(), None).unwrap()).unwrap();
        assert_eq!((cast.msg_id, cast.reply_to), (None, None));
        let text = String::from_utf8(Request::encode("ping", &(), None).unwrap()).unwrap();
        assert!(!text.contains("msg_id"), "{text}");
    }

    #[test]
    fn rejects_garbage_and_other_versions() {
        assert!(Request::decode(b"not json").is_err());
        assert!(Request::decode(br#"{"version":"2.0","method":"m","args":null}"#).is_err());
        assert!(Request::decode(br#"{"version":"1.3","method":"m","args":null}"#).is_ok());
        assert!(Reply::decode(br#"{"msg_id":"x"}"#).is_err());
    }

    #[test]
    fn reply_carries_unit_results_and_failures() {
        let ok = Reply::decode(&Reply::encode("m", Ok(Value::Null)).unwrap()).unwrap();
        ok.into_result::<()>().unwrap();

        let failed = Reply::encode("m", Err(RemoteError::new("NotFound", "gone"))).unwrap();
        match Reply::decode(&failed).unwrap().into_result::<()>() {
            Err(Error::Remote { kind, message }) => {
                assert_eq!((kind.as_str(), message.as_str()), ("NotFound", "gone"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn reply_of_wrong_type_is_a_codec_error() {
        let reply = Reply::decode(&Reply::encode("m", Ok(Value::from("text"))).unwrap()).unwrap();
        assert!(matches!(reply.into_result::<u32>(), Err(Error::Codec(_))));
    }
}
