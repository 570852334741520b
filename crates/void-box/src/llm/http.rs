//! What both HTTP providers share: configuration, the API key, retries.

use std::time::Duration;

/// An API key. `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Self {
        ApiKey(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
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
    pub model: String,
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    pub timeout: Duration,
    pub max_retries: u32,
}
