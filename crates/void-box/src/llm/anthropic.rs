//! Anthropic Messages API with SSE streaming.

use super::http::HttpConfig;
use super::{ChatRequest, ChatResponse, LlmError, TextSink};

#[derive(Debug)]
pub struct Client {
    config: HttpConfig,
}

impl Client {
    pub fn new(config: HttpConfig) -> Result<Self, LlmError> {
        Ok(Client { config })
    }

    pub async fn complete(
        &self,
        _request: &ChatRequest,
        _on_text: TextSink<'_>,
    ) -> Result<ChatResponse, LlmError> {
        Err(LlmError::Transport {
            provider: "anthropic",
            message: format!("not implemented yet ({})", self.config.base_url),
        })
    }
}
