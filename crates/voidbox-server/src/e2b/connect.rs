//! The Connect protocol as envd speaks it: HTTP/1.1, the JSON codec, no
//! compression. A unary call is one JSON body each way; a
//! server-streaming call sends one enveloped message and gets enveloped
//! messages back (`flags u8`, `length u32` big-endian, then the JSON),
//! the last one flagged end-of-stream and carrying the error, if any.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

/// Flag of an envelope whose payload is compressed (refused: we never
/// negotiate compression).
const COMPRESSED: u8 = 0x01;
/// Flag of the last envelope of a response stream.
const END_STREAM: u8 = 0x02;

/// A Connect error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    fn name(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error (the Connect specification's table).
    fn status(self) -> StatusCode {
        let code = match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// An error of a Connect call.
#[derive(Debug, Clone)]
pub(crate) struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> ConnectError {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ConnectError {
        ConnectError::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> ConnectError {
        ConnectError::new(Code::NotFound, message)
    }

    fn json(&self) -> serde_json::Value {
        json!({"code": self.code.name(), "message": self.message})
    }

    /// A failure of the library, as the code it is.
    pub fn from_sandbox(e: void_box::Error) -> ConnectError {
        use void_box::ErrorKind;
        let code = match &e {
            void_box::Error::Guest { kind, .. } => match kind {
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::PathEscape | ErrorKind::NotAllowed => Code::PermissionDenied,
                ErrorKind::InvalidRequest => Code::InvalidArgument,
                _ => Code::Internal,
            },
            void_box::Error::TooLarge { .. } => Code::ResourceExhausted,
            void_box::Error::Timeout(_) => Code::DeadlineExceeded,
            void_box::Error::Disconnected(_) => Code::Unavailable,
            _ => Code::Internal,
        };
        ConnectError::new(code, e.to_string())
    }
}

impl IntoResponse for ConnectError {
    /// The unary error: the code's status and `{"code", "message"}`.
    fn into_response(self) -> Response {
        (self.code.status(), axum::Json(self.json())).into_response()
    }
}

/// The request message of a unary call (a JSON body; unknown fields
/// ignored, as proto3 JSON readers do).
pub(crate) fn unary_request<T: DeserializeOwned>(body: &Bytes) -> Result<T, ConnectError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| ConnectError::invalid(format!("the request: {e}")))
}

/// A unary call's answer.
pub(crate) fn unary_response(message: impl Serialize) -> Response {
    axum::Json(message).into_response()
}

/// The one request message of a server-streaming call: a single
/// uncompressed envelope.
pub(crate) fn stream_request<T: DeserializeOwned>(body: &Bytes) -> Result<T, ConnectError> {
    let header: [u8; 5] = body
        .get(..5)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| ConnectError::invalid("the request is not an enveloped message"))?;
    if header[0] & COMPRESSED != 0 {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "compressed messages are not supported",
        ));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let payload = body
        .get(5..)
        .filter(|p| p.len() == len)
        .ok_or_else(|| ConnectError::invalid("the envelope's length is not its message's"))?;
    unary_request(&Bytes::copy_from_slice(payload))
}

fn envelope(flags: u8, json: &serde_json::Value) -> Bytes {
    let payload = serde_json::to_vec(json).unwrap_or_default();
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

/// A server-streaming answer: each message of `messages` in its envelope
/// as it comes, then the end-of-stream envelope (with the error that
/// ended it, if one did). Errors of a stream are always sent this way,
/// with status 200.
pub(crate) fn stream_response<S>(messages: S) -> Response
where
    S: Stream<Item = Result<serde_json::Value, ConnectError>> + Send + 'static,
{
    let body = async_stream_of(messages);
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/connect+json"),
    );
    response
}

/// A stream that failed before its first message.
pub(crate) fn stream_error(error: ConnectError) -> Response {
    stream_response(futures::stream::iter([Err(error)]))
}

fn async_stream_of<S>(messages: S) -> impl Stream<Item = Result<Bytes, Infallible>>
where
    S: Stream<Item = Result<serde_json::Value, ConnectError>> + Send + 'static,
{
    // Messages until the first error, then the end: `{}` or that error.
    futures::stream::unfold(
        (Box::pin(messages), false),
        |(mut messages, ended)| async move {
            if ended {
                return None;
            }
            let (bytes, ended) = match messages.next().await {
                Some(Ok(message)) => (envelope(0, &message), false),
                Some(Err(error)) => (envelope(END_STREAM, &json!({"error": error.json()})), true),
                None => (envelope(END_STREAM, &json!({})), true),
            };
            Some((Ok(bytes), (messages, ended)))
        },
    )
}

/// The value of header `name`, if it is text.
pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(json: &str) -> Bytes {
        let mut out = vec![0];
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(json.as_bytes());
        Bytes::from(out)
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Ping {
        n: u32,
    }

    #[test]
    fn an_enveloped_request_is_read_and_a_bad_one_said_so() {
        let ping: Ping = stream_request(&framed(r#"{"n":7,"unknown":1}"#)).unwrap();
        assert_eq!(ping, Ping { n: 7 });
        let mut short = framed(r#"{"n":7}"#).to_vec();
        short.pop();
        for bad in [Bytes::from_static(b"{}"), Bytes::from(short)] {
            let e = stream_request::<Ping>(&bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidArgument, "{}", e.message);
        }
        let mut compressed = framed("{}").to_vec();
        compressed[0] = COMPRESSED;
        let e = stream_request::<Ping>(&Bytes::from(compressed)).unwrap_err();
        assert_eq!(e.code, Code::Unimplemented);
    }

    #[tokio::test]
    async fn a_stream_ends_with_its_error_or_an_empty_end() {
        let body = |items: Vec<Result<serde_json::Value, ConnectError>>| async move {
            let response = stream_response(futures::stream::iter(items));
            axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap()
        };
        let ok = body(vec![Ok(json!({"a": 1}))]).await;
        assert_eq!(&ok[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(&ok[5..12], br#"{"a":1}"#);
        assert_eq!(&ok[12..], &[2, 0, 0, 0, 2, b'{', b'}']);
        let failed = body(vec![
            Err(ConnectError::not_found("no such process")),
            Ok(json!({"never": true})),
        ])
        .await;
        assert_eq!(failed[0], END_STREAM);
        let end: serde_json::Value = serde_json::from_slice(&failed[5..]).unwrap();
        assert_eq!(end["error"]["code"], "not_found");
        assert_eq!(end["error"]["message"], "no such process");
    }
}
