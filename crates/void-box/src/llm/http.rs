//! What both HTTP providers share: configuration, the API key, the client,
//! retries with backoff, deadlines and the SSE event stream.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::LlmError;
use crate::error::error_chain;

/// Longest wait between two attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// First backoff step; doubles per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest silence once a stream is flowing (pings count as traffic).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of an error body ends up in [`LlmError::Status`].
const BODY_EXCERPT_CHARS: usize = 500;
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An API key. `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key read from the environment.
    pub fn new(key: String) -> Self {
        ApiKey(key)
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A header value marked sensitive, so that no `Debug` of the headers shows it.
    pub fn header_value(
        &self,
        provider: &'static str,
        prefix: &str,
    ) -> Result<HeaderValue, LlmError> {
        let mut value = HeaderValue::from_str(&format!("{prefix}{}", self.0)).map_err(|_| {
            LlmError::Transport {
                provider,
                message: "the API key contains characters not allowed in an HTTP header".into(),
            }
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Connection settings of one HTTP provider.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Model name sent with every request.
    pub model: String,
    /// Endpoint, without a trailing slash.
    pub base_url: String,
    /// The key, when the provider needs one.
    pub api_key: Option<ApiKey>,
    /// Deadline of one call: every attempt, wait and the whole stream.
    pub timeout: Duration,
    /// Retries on 429, 5xx and failed connections.
    pub max_retries: u32,
}

/// A reqwest client plus the policy both providers share.
#[derive(Debug)]
pub struct HttpClient {
    provider: &'static str,
    client: reqwest::Client,
    config: HttpConfig,
}

impl HttpClient {
    /// Builds the client; `provider` names it in errors and logs.
    pub fn new(provider: &'static str, config: HttpConfig) -> Result<Self, LlmError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
            // A redirect would carry custom key headers (x-api-key) to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("void-box/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Transport {
                provider,
                message: format!("cannot build the HTTP client: {}", error_chain(&e)),
            })?;
        Ok(HttpClient {
            provider,
            client,
            config,
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Runs one whole call (attempts, waits and stream) under the
    /// configured deadline, and scrubs the key from any error.
    pub async fn call<T, F>(&self, call: impl FnOnce(Instant) -> F) -> Result<T, LlmError>
    where
        F: Future<Output = Result<T, LlmError>>,
    {
        let deadline = Instant::now() + self.config.timeout;
        let result = match tokio::time::timeout_at(deadline, call(deadline)).await {
            Ok(result) => result,
            Err(_) => Err(LlmError::Timeout {
                provider: self.provider,
                after: self.config.timeout,
            }),
        };
        result.map_err(|e| self.redact(e))
    }

    /// POSTs `body` as JSON and returns the SSE stream of the first
    /// successful attempt. Retries 429, 5xx and failed connections with
    /// exponential backoff and jitter, honouring `Retry-After`, and never
    /// waits past `deadline`.
    pub async fn post_sse(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &serde_json::Value,
        deadline: Instant,
    ) -> Result<SseStream, LlmError> {
        let body = serde_json::to_vec(body).map_err(|e| LlmError::Malformed {
            provider: self.provider,
            message: format!("cannot encode the request: {e}"),
        })?;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let sent = self
                .client
                .post(url)
                .headers(headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "text/event-stream")
                .body(body.clone())
                .send()
                .await;
            let (failure, retry_after) = match sent {
                Ok(response) if response.status().is_success() => {
                    return self.open_stream(response).await;
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers(), SystemTime::now());
                    let failure = self.redact(LlmError::Status {
                        provider: self.provider,
                        status: status.as_u16(),
                        attempts,
                        body: body_excerpt(response).await,
                    });
                    if !is_retryable(status) {
                        return Err(failure);
                    }
                    (failure, retry_after)
                }
                Err(e) if e.is_builder() => {
                    return Err(self.redact(LlmError::Transport {
                        provider: self.provider,
                        message: format!("invalid request: {}", error_chain(&e)),
                    }));
                }
                // Nothing was received, so sending again cannot duplicate output.
                Err(e) => (
                    self.redact(LlmError::Transport {
                        provider: self.provider,
                        message: format!(
                            "request failed after {attempts} attempt(s): {}",
                            error_chain(&e)
                        ),
                    }),
                    None,
                ),
            };
            if attempts > self.config.max_retries {
                return Err(failure);
            }
            let wait = retry_after.map_or_else(|| backoff(attempts), |d| d.min(MAX_WAIT));
            if Instant::now() + wait >= deadline {
                // The caller learns more from the real failure than from a timeout.
                return Err(failure);
            }
            tracing::warn!(
                provider = self.provider,
                attempt = attempts,
                max_retries = self.config.max_retries,
                wait_ms = wait.as_millis() as u64,
                error = %failure,
                "LLM request failed, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn open_stream(&self, response: reqwest::Response) -> Result<SseStream, LlmError> {
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("text/event-stream") {
            let status = response.status().as_u16();
            let excerpt = body_excerpt(response).await;
            return Err(self.redact(LlmError::Malformed {
                provider: self.provider,
                message: format!(
                    "expected an SSE stream (text/event-stream), got HTTP {status} with \
                     content-type `{content_type}`: {excerpt}"
                ),
            }));
        }
        Ok(SseStream {
            provider: self.provider,
            events: Box::pin(response.bytes_stream().eventsource()),
            idle: None,
            idle_after: IDLE_TIMEOUT.min(self.config.timeout),
        })
    }

    /// Replaces the key wherever it appears in `err` (servers may echo it).
    fn redact(&self, err: LlmError) -> LlmError {
        match &self.config.api_key {
            Some(key) if !key.expose().is_empty() => redact_error(err, key.expose()),
            _ => err,
        }
    }
}

type EventResult = Result<Event, EventStreamError<reqwest::Error>>;

/// Server-sent events of one response.
pub struct SseStream {
    provider: &'static str,
    events: Pin<Box<dyn Stream<Item = EventResult> + Send>>,
    idle: Option<Duration>,
    idle_after: Duration,
}

impl SseStream {
    /// From now on, a silence longer than the idle timeout fails the call.
    /// Providers arm it once the model is producing, because the wait
    /// before the first token can legitimately be long.
    pub fn arm_idle_timeout(&mut self) {
        self.idle = Some(self.idle_after);
    }

    /// The next event, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, LlmError> {
        let item = match self.idle {
            Some(idle) => tokio::time::timeout(idle, self.events.next())
                .await
                .map_err(|_| LlmError::Timeout {
                    provider: self.provider,
                    after: idle,
                })?,
            None => self.events.next().await,
        };
        match item {
            None => Ok(None),
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(EventStreamError::Transport(e))) => Err(LlmError::Transport {
                provider: self.provider,
                message: format!("stream interrupted: {}", error_chain(&e)),
            }),
            Some(Err(EventStreamError::Utf8(_))) => Err(LlmError::Malformed {
                provider: self.provider,
                message: "the event stream is not valid UTF-8".into(),
            }),
            Some(Err(EventStreamError::Parser(e))) => Err(LlmError::Malformed {
                provider: self.provider,
                message: format!("invalid SSE line near `{}`", excerpt(&e.input, 80)),
            }),
        }
    }
}

/// Parses one event's `data` as JSON, or says which event was broken.
pub fn parse_data(provider: &'static str, event: &Event) -> Result<serde_json::Value, LlmError> {
    serde_json::from_str(&event.data).map_err(|e| LlmError::Malformed {
        provider,
        message: format!(
            "invalid JSON in `{}` event ({e}): `{}`",
            event.event,
            excerpt(&event.data, 120)
        ),
    })
}

/// At most `max` characters of `s`, marked when cut.
pub fn excerpt(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Exponential backoff with jitter (50–100 % of the step), so that many
/// clients do not retry in lockstep.
fn backoff(attempt: u32) -> Duration {
    let step = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    step.mul_f64(rand::random_range(0.5..=1.0))
}

/// `Retry-After` as delta-seconds or an HTTP-date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The start of a response body, for error messages; never reads it all,
/// nor waits long for it (the status already says what matters).
async fn body_excerpt(response: reqwest::Response) -> String {
    let give_up = Instant::now() + BODY_READ_TIMEOUT;
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while bytes.len() < BODY_EXCERPT_CHARS * 4 {
        match tokio::time::timeout_at(give_up, stream.next()).await {
            Ok(Some(Ok(chunk))) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    excerpt(&String::from_utf8_lossy(&bytes), BODY_EXCERPT_CHARS)
}

fn redact_error(err: LlmError, key: &str) -> LlmError {
    let scrub = |s: String| {
        if s.contains(key) {
            s.replace(key, "***")
        } else {
            s
        }
    };
    match err {
        LlmError::Status {
            provider,
            status,
            attempts,
            body,
        } => LlmError::Status {
            provider,
            status,
            attempts,
            body: scrub(body),
        },
        LlmError::Transport { provider, message } => LlmError::Transport {
            provider,
            message: scrub(message),
        },
        LlmError::Malformed { provider, message } => LlmError::Malformed {
            provider,
            message: scrub(message),
        },
        LlmError::Remote { provider, message } => LlmError::Remote {
            provider,
            message: scrub(message),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_millis(500)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..40 {
            let step = BASE_BACKOFF
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(MAX_BACKOFF);
            let wait = backoff(attempt);
            assert!(wait >= step / 2 && wait <= step, "{attempt}: {wait:?}");
        }
        assert!(backoff(100) <= MAX_BACKOFF);
    }

    #[test]
    fn excerpt_cuts_on_char_boundaries() {
        assert_eq!(excerpt("  short  ", 10), "short");
        assert_eq!(excerpt("ééééé", 3), "ééé…");
    }

    #[test]
    fn redaction_scrubs_every_message() {
        let key = "sk-secret-123";
        let err = redact_error(
            LlmError::Status {
                provider: "x",
                status: 401,
                attempts: 1,
                body: format!("bad key {key}"),
            },
            key,
        );
        assert!(!format!("{err} {err:?}").contains(key));
        let err = redact_error(
            LlmError::Remote {
                provider: "x",
                message: key.into(),
            },
            key,
        );
        assert!(!format!("{err} {err:?}").contains(key));
    }

    #[test]
    fn api_key_header_is_sensitive() {
        let key = ApiKey::new("sk-secret".into());
        let value = key.header_value("test", "Bearer ").unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{key:?} {value:?}").contains("sk-secret"));
    }
}
