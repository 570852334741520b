//! What can go wrong talking to a model.

use std::time::Duration;

/// A failed model call. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The environment variable that should hold the API key is unset or empty.
    #[error("API key missing: set the environment variable `{env}`")]
    MissingApiKey {
        /// The variable's name.
        env: String,
    },
    /// The provider answered with an error status that is not retried, or
    /// kept failing after every retry.
    #[error("{provider} returned HTTP {status} after {attempts} attempt(s): {body}")]
    Status {
        /// Provider name.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// Start of the response body.
        body: String,
    },
    /// The request or the stream took too long.
    #[error("{provider}: request timed out after {after:?}")]
    Timeout {
        /// Provider name.
        provider: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The connection failed.
    #[error("{provider}: {message}")]
    Transport {
        /// Provider name.
        provider: &'static str,
        /// What failed.
        message: String,
    },
    /// The response did not follow the provider's wire format.
    #[error("{provider}: malformed response: {message}")]
    Malformed {
        /// Provider name.
        provider: &'static str,
        /// What was wrong, and where.
        message: String,
    },
    /// The provider reported an error inside the stream.
    #[error("{provider}: error event in stream: {message}")]
    Remote {
        /// Provider name.
        provider: &'static str,
        /// The provider's message.
        message: String,
    },
    /// The scripted mock provider has no answer left, or its script is invalid.
    #[error("mock provider: {0}")]
    Mock(String),
}
