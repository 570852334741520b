//! LLM providers, chosen per box: Anthropic Messages, any OpenAI-compatible
//! chat-completions endpoint, and a scripted mock for offline runs.
//!
//! [`LlmProvider`] is plain configuration (cheap to clone, holds no key).
//! [`LlmProvider::connect`] reads the API key from the named environment
//! variable and gives a [`ChatClient`] for one run.

mod anthropic;
mod error;
mod http;
mod mock;
mod openai;
mod pricing;
mod types;

use std::time::Duration;

pub use error::LlmError;
pub use mock::{MockScript, MockToolCall, MockTurn};
pub use pricing::{price_per_million, ModelPrice};
pub use types::{
    ChatRequest, ChatResponse, ContentBlock, Message, Role, StopReason, TextSink, TokenUsage,
    ToolSpec,
};

/// Which wire format a provider speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    /// Anthropic Messages API (`POST {base_url}/v1/messages`).
    Anthropic,
    /// OpenAI chat completions (`POST {base_url}/chat/completions`).
    OpenAi,
    /// A deterministic scripted model.
    Mock(MockScript),
}

/// An LLM provider and model, as configured for one box.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmProvider {
    kind: ProviderKind,
    model: String,
    base_url: String,
    api_key_env: Option<String>,
    timeout: Duration,
    max_retries: u32,
    max_tokens: u32,
}

impl LlmProvider {
    fn new(kind: ProviderKind, model: &str, base_url: &str, api_key_env: Option<&str>) -> Self {
        LlmProvider {
            kind,
            model: model.to_string(),
            base_url: base_url.to_string(),
            api_key_env: api_key_env.map(str::to_string),
            timeout: Duration::from_secs(300),
            max_retries: 4,
            max_tokens: 8192,
        }
    }

    /// Anthropic's Messages API; the key comes from `ANTHROPIC_API_KEY`.
    pub fn anthropic(model: &str) -> Self {
        Self::new(
            ProviderKind::Anthropic,
            model,
            "https://api.anthropic.com",
            Some("ANTHROPIC_API_KEY"),
        )
    }

    /// OpenAI's API; the key comes from `OPENAI_API_KEY`.
    pub fn openai(model: &str) -> Self {
        Self::new(
            ProviderKind::OpenAi,
            model,
            "https://api.openai.com/v1",
            Some("OPENAI_API_KEY"),
        )
    }

    /// A local Ollama server (`OLLAMA_HOST`, default `http://localhost:11434`); no key.
    pub fn ollama(model: &str) -> Self {
        let host = std::env::var("OLLAMA_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.starts_with("http") {
                    h
                } else {
                    format!("http://{h}")
                }
            })
            .unwrap_or_else(|| "http://localhost:11434".into());
        Self::new(
            ProviderKind::OpenAi,
            model,
            &format!("{}/v1", host.trim_end_matches('/')),
            None,
        )
    }

    /// Any OpenAI-compatible endpoint (LM Studio, vLLM, DeepSeek, Groq,
    /// Together, ...). `base_url` ends before `/chat/completions`. No key
    /// unless [`api_key_env`](Self::api_key_env) names one.
    pub fn openai_compatible(base_url: &str, model: &str) -> Self {
        Self::new(ProviderKind::OpenAi, model, base_url, None)
    }

    /// The provider for demos that run anywhere: Anthropic (`model`, default
    /// `claude-sonnet-4-5`) when `ANTHROPIC_API_KEY` is set, else Ollama with
    /// `OLLAMA_MODEL` when that is set, else the scripted `offline` model.
    pub fn auto(model: Option<&str>, offline: MockScript) -> Self {
        let set = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        if set("ANTHROPIC_API_KEY").is_some() {
            Self::anthropic(model.unwrap_or("claude-sonnet-4-5"))
        } else if let Some(ollama) = set("OLLAMA_MODEL") {
            Self::ollama(&ollama)
        } else {
            Self::mock(offline)
        }
    }

    /// The scripted mock provider.
    pub fn mock(script: MockScript) -> Self {
        Self::new(ProviderKind::Mock(script), "mock", "", None)
    }

    /// Overrides the endpoint.
    pub fn base_url(mut self, url: &str) -> Self {
        self.base_url = url.trim_end_matches('/').to_string();
        self
    }

    /// Reads the API key from this environment variable.
    pub fn api_key_env(mut self, env: &str) -> Self {
        self.api_key_env = Some(env.to_string());
        self
    }

    /// Deadline of each request, streaming included (default 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries on 429 and 5xx (default 4).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Upper bound of output tokens per call (default 8192).
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = n;
        self
    }

    /// The wire format.
    pub fn kind(&self) -> &ProviderKind {
        &self.kind
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.base_url
    }

    /// The environment variable holding the key, if any.
    pub fn key_env(&self) -> Option<&str> {
        self.api_key_env.as_deref()
    }

    /// Short provider name for logs and results.
    pub fn provider_name(&self) -> &'static str {
        match self.kind {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Mock(_) => "mock",
        }
    }

    /// The key, read from its environment variable (`None` when the
    /// provider names none). For the edge, which swaps it into requests
    /// from the guest; never for the guest itself.
    pub(crate) fn api_key(&self) -> Result<Option<String>, LlmError> {
        match &self.api_key_env {
            None => Ok(None),
            Some(env) => match std::env::var(env) {
                Ok(k) if !k.is_empty() => Ok(Some(k)),
                _ => Err(LlmError::MissingApiKey { env: env.clone() }),
            },
        }
    }

    /// Reads the key (when one is named) and makes a client for one run.
    pub fn connect(&self) -> Result<ChatClient, LlmError> {
        let config = || -> Result<http::HttpConfig, LlmError> {
            let api_key = self.api_key()?.map(http::ApiKey::new);
            Ok(http::HttpConfig {
                model: self.model.clone(),
                base_url: self.base_url.clone(),
                api_key,
                timeout: self.timeout,
                max_retries: self.max_retries,
            })
        };
        Ok(ChatClient {
            inner: match &self.kind {
                ProviderKind::Anthropic => Inner::Anthropic(anthropic::Client::new(config()?)?),
                ProviderKind::OpenAi => Inner::OpenAi(openai::Client::new(config()?)?),
                ProviderKind::Mock(script) => Inner::Mock(mock::MockModel::new(script.clone())),
            },
            max_tokens: self.max_tokens,
        })
    }
}

/// A connected model for one run (the mock keeps its place in the script).
#[derive(Debug)]
pub struct ChatClient {
    inner: Inner,
    max_tokens: u32,
}

#[derive(Debug)]
enum Inner {
    Anthropic(anthropic::Client),
    OpenAi(openai::Client),
    Mock(mock::MockModel),
}

impl ChatClient {
    /// Upper bound of output tokens per call.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    /// Sends one request, streaming text to `on_text` as it arrives.
    pub async fn complete(
        &mut self,
        request: &ChatRequest,
        on_text: TextSink<'_>,
    ) -> Result<ChatResponse, LlmError> {
        match &mut self.inner {
            Inner::Anthropic(c) => c.complete(request, on_text).await,
            Inner::OpenAi(c) => c.complete(request, on_text).await,
            Inner::Mock(m) => m.complete(request, on_text),
        }
    }
}
