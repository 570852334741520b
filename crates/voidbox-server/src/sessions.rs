//! Agent sessions: a conversation with one agent (from an agent spec) in
//! a sandbox of its own that lives across turns. Each turn (`generate`,
//! `stream`, `generate_object`) is one run of the agent loop on the
//! history so far, admitted by the generate lane, cancellable; its events
//! go to whoever streams it. An `ask` permission rule stops the turn at
//! the call and asks the client (`confirmation_required`); the answer, or
//! the unattended default when the deadline passes, lets it go on.
//!
//! A session's spec, options and messages are in the store: after a
//! restart it continues its conversation in a fresh sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use void_box::agent::{AskHook, Decision, OutputSchema, PermissionPolicy, ToolRequest, VoidBox};
use void_box::event::{EventSink, RunEvent};
use void_box::llm::{ChatRequest, Message, Role};
use void_box::sandbox::SandboxProvider;
use void_box::spec::Runnable;
use void_box::Sandbox;

use crate::lanes::{Full, Lane, Lanes};
use crate::registry::unix_ms;
use crate::store::{Store, StoredSession};

/// Most messages a session keeps; a turn that would pass it is refused
/// (compact or clear first).
const MAX_MESSAGES: usize = 2_000;
/// Most sessions alive at once.
const MAX_SESSIONS: usize = 256;

/// How a session is made (the request's body, kept in the store).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionOptions {
    /// An agent spec's text (`kind: agent`, the built-in engine): its
    /// model, skills, sandbox; its `prompt` opens the conversation.
    pub spec: String,
    /// `yaml` (the default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
    /// Standing instructions added to the agent's system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// Permission rules replacing the spec's.
    #[serde(default)]
    pub permissions: Option<Permissions>,
    /// How long a confirmation waits before the unattended default
    /// applies (seconds, default 300).
    #[serde(default)]
    pub confirm_timeout_secs: Option<u64>,
}

/// Allow, deny and ask rules (`bash(rm *)`, `write`, `mcp__*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Permissions {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub ask: Vec<String>,
    /// What a call no rule names gets: `allow` (the default) or `deny`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub default: Option<Decision>,
    /// What an `ask` call gets when nobody answers in time: `deny` (the
    /// default) or `allow`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub unattended: Option<Decision>,
}

impl Permissions {
    fn policy(&self) -> Result<PermissionPolicy, String> {
        let mut policy = PermissionPolicy::default();
        for rule in &self.allow {
            policy = policy.allow(rule)?;
        }
        for rule in &self.deny {
            policy = policy.deny(rule)?;
        }
        for rule in &self.ask {
            policy = policy.ask(rule)?;
        }
        if let Some(d) = self.default {
            policy.default = d;
        }
        if let Some(d) = self.unattended {
            policy.unattended = d;
        }
        Ok(policy)
    }
}

/// One event of a turn, as `stream` sends it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum TurnEvent {
    TextDelta {
        text: String,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: Value,
    },
    ToolResult {
        id: String,
        name: String,
        summary: String,
        is_error: bool,
    },
    ConfirmationRequired {
        id: String,
        tool: String,
        arguments: Value,
        timeout_secs: u64,
    },
    ConfirmationAnswered {
        id: String,
        decision: String,
        by: String,
    },
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        cost_usd: Option<f64>,
    },
    /// The turn ended; nothing follows.
    Done {
        result: Value,
    },
    /// The turn failed or was cancelled; nothing follows.
    Error {
        message: String,
    },
}

/// Why a turn did not run or failed.
#[derive(Debug)]
pub(crate) enum TurnError {
    /// Another turn is under way.
    Busy,
    /// The generate lane is full.
    Full(Full),
    /// The input is refused.
    Invalid(String),
    /// The turn failed (the model, a tool's sandbox, cancelled).
    Failed(String),
}

/// Confirmations the session's agent waits for.
struct Confirmations {
    /// The agent's name, for its events.
    box_name: String,
    waiting: Mutex<HashMap<String, mpsc::Sender<Decision>>>,
    /// The turn under way's events: confirmations go in line with its
    /// tool calls.
    events: Mutex<Option<EventSink>>,
    timeout: Duration,
    unattended: Decision,
}

impl Confirmations {
    async fn ask(&self, request: ToolRequest) -> Decision {
        let id = format!("confirm-{:016x}", rand::random::<u64>());
        let (tx, mut rx) = mpsc::channel(1);
        lock(&self.waiting).insert(id.clone(), tx);
        let events = lock(&self.events).clone().unwrap_or_default();
        events.emit(RunEvent::ConfirmationRequired {
            box_name: self.box_name.clone(),
            id: id.clone(),
            tool: request.tool.clone(),
            arguments: request.arguments.clone(),
            timeout_secs: self.timeout.as_secs(),
        });
        let (decision, by) = match tokio::time::timeout(self.timeout, rx.recv()).await {
            Ok(Some(decision)) => (decision, "client"),
            _ => (self.unattended, "deadline"),
        };
        lock(&self.waiting).remove(&id);
        events.emit(RunEvent::ConfirmationAnswered {
            box_name: self.box_name.clone(),
            id,
            decision: decision_name(decision).into(),
            by: by.into(),
        });
        decision
    }

    /// Answers confirmation `id`; whether one waited.
    fn answer(&self, id: &str, decision: Decision) -> bool {
        match lock(&self.waiting).remove(id) {
            Some(tx) => tx.try_send(decision).is_ok(),
            None => false,
        }
    }
}

fn decision_name(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Token counts and cost over every turn.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub turns: u64,
    /// The last model call's input: how full the context is.
    pub last_input_tokens: u64,
}

/// One session.
pub(crate) struct Session {
    pub id: String,
    pub name: String,
    pub created_unix_ms: u64,
    agent: VoidBox,
    options: SessionOptions,
    sandbox: tokio::sync::Mutex<Option<Sandbox>>,
    history: Mutex<Vec<Message>>,
    totals: Mutex<Totals>,
    /// The turn under way: its task, to cancel.
    turn: Mutex<Option<tokio::task::AbortHandle>>,
    confirmations: Arc<Confirmations>,
}

impl Session {
    pub fn history(&self) -> Vec<Message> {
        lock(&self.history).clone()
    }

    pub fn totals(&self) -> Totals {
        *lock(&self.totals)
    }

    pub fn busy(&self) -> bool {
        lock(&self.turn).is_some()
    }

    /// Answers a confirmation; whether one waited.
    pub fn confirm(&self, id: &str, decision: Decision) -> bool {
        self.confirmations.answer(id, decision)
    }

    /// Cancels the turn under way; whether there was one. Its followers
    /// see their stream end without `Done`.
    pub fn cancel(&self) -> bool {
        let Some(handle) = lock(&self.turn).take() else {
            return false;
        };
        handle.abort();
        // The turn's last sender, held for confirmations: gone, so the
        // stream ends; waiting confirmations with it.
        lock(&self.confirmations.events).take();
        lock(&self.confirmations.waiting).clear();
        true
    }
}

/// Every session.
pub(crate) struct Sessions {
    provider: Arc<dyn SandboxProvider>,
    store: Arc<Store>,
    lanes: Arc<Lanes>,
    live: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// The sessions the store holds, ready to go on (their sandboxes are
    /// booted at their next turn).
    pub fn load(
        provider: Arc<dyn SandboxProvider>,
        store: Arc<Store>,
        lanes: Arc<Lanes>,
    ) -> Sessions {
        let sessions = Sessions {
            provider,
            store,
            lanes,
            live: Mutex::new(HashMap::new()),
        };
        for stored in sessions.store.sessions().unwrap_or_default() {
            let restored = serde_json::from_str::<SessionOptions>(&stored.options)
                .map_err(|e| e.to_string())
                .and_then(|options| {
                    let history = stored
                        .messages
                        .iter()
                        .map(|m| serde_json::from_str::<Message>(m).map_err(|e| e.to_string()))
                        .collect::<Result<Vec<_>, _>>()?;
                    let totals = serde_json::from_str(&stored.totals).unwrap_or_default();
                    build(&stored.id, stored.created_unix_ms, options, history, totals)
                });
            match restored {
                Ok(session) => {
                    lock(&sessions.live).insert(session.id.clone(), Arc::new(session));
                }
                Err(e) => {
                    tracing::error!(session = %stored.id, "a stored session cannot go on: {e}");
                    let _ = sessions.store.destroy_session(&stored.id, unix_ms());
                }
            }
        }
        sessions
    }

    /// Makes a session of `options`.
    pub fn create(&self, options: SessionOptions) -> Result<Arc<Session>, String> {
        if lock(&self.live).len() >= MAX_SESSIONS {
            return Err(format!(
                "{MAX_SESSIONS} sessions are open, the daemon's limit"
            ));
        }
        let id = format!("session-{:016x}", rand::random::<u64>());
        let session = build(&id, unix_ms(), options, Vec::new(), Totals::default())?;
        let options = serde_json::to_string(&session.options).unwrap_or_default();
        self.store
            .insert_session(&StoredSession {
                id: id.clone(),
                created_unix_ms: session.created_unix_ms,
                options,
                totals: "{}".into(),
                messages: Vec::new(),
            })
            .map_err(|e| e.to_string())?;
        let session = Arc::new(session);
        lock(&self.live).insert(id, session.clone());
        Ok(session)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.live).get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<_> = lock(&self.live).values().cloned().collect();
        all.sort_by_key(|s| (s.created_unix_ms, s.id.clone()));
        all
    }

    /// Ends a session: its turn cancelled, its sandbox killed, its record
    /// marked; whether it was open.
    pub async fn destroy(&self, id: &str) -> bool {
        let Some(session) = lock(&self.live).remove(id) else {
            return false;
        };
        session.cancel();
        if let Some(sandbox) = session.sandbox.lock().await.take() {
            sandbox.kill();
        }
        let _ = self.store.destroy_session(id, unix_ms());
        true
    }

    /// Ends every session's sandbox (the daemon stops); the sessions stay
    /// in the store.
    pub async fn end_all(&self) {
        for session in self.list() {
            session.cancel();
            // The cancelled turn lets go of the sandbox as its task ends.
            if let Some(sandbox) = session.sandbox.lock().await.take() {
                sandbox.kill();
            }
        }
    }

    /// Forgets the conversation (the sandbox stays).
    pub fn clear(&self, session: &Session) -> Result<(), TurnError> {
        if session.busy() {
            return Err(TurnError::Busy);
        }
        lock(&session.history).clear();
        self.save(session);
        Ok(())
    }

    fn save(&self, session: &Session) {
        let messages: Vec<String> = lock(&session.history)
            .iter()
            .map(|m| serde_json::to_string(m).unwrap_or_default())
            .collect();
        let totals = serde_json::to_string(&session.totals()).unwrap_or_default();
        if let Err(e) = self.store.save_session(&session.id, &totals, &messages) {
            tracing::error!(session = %session.id, "saving a session: {e}");
        }
    }

    /// Starts a turn: the user's `message` (answered in `schema`'s shape
    /// when given); its events, ending with `Done` or `Error`, come on the
    /// returned channel. Refused at once when another turn is under way or
    /// the generate lane is full.
    pub fn turn(
        self: &Arc<Self>,
        session: &Arc<Session>,
        message: String,
        schema: Option<Value>,
    ) -> Result<mpsc::Receiver<TurnEvent>, TurnError> {
        let schema = schema
            .map(|s| OutputSchema::compile(s).map_err(TurnError::Invalid))
            .transpose()?;
        if message.trim().is_empty() {
            return Err(TurnError::Invalid("the message is empty".into()));
        }
        if lock(&session.history).len() + 2 > MAX_MESSAGES {
            return Err(TurnError::Invalid(format!(
                "the session holds {MAX_MESSAGES} messages: compact or clear it"
            )));
        }
        let mut turn = lock(&session.turn);
        if turn.is_some() {
            return Err(TurnError::Busy);
        }
        let place = self.lanes.enter(Lane::Generate).map_err(TurnError::Full)?;
        let (tx, rx) = mpsc::channel(64);
        let sessions = self.clone();
        let this = session.clone();
        let task = tokio::spawn(async move {
            let _turn = place.admitted().await;
            let ended = sessions
                .run_turn(&this, message, schema.as_ref(), &tx)
                .await;
            *lock(&this.confirmations.events) = None;
            lock(&this.turn).take();
            let last = match ended {
                Ok(result) => TurnEvent::Done { result },
                Err(message) => TurnEvent::Error { message },
            };
            let _ = tx.send(last).await;
        });
        *turn = Some(task.abort_handle());
        Ok(rx)
    }

    async fn run_turn(
        &self,
        session: &Session,
        message: String,
        schema: Option<&OutputSchema>,
        events: &mpsc::Sender<TurnEvent>,
    ) -> Result<Value, String> {
        let mut sandbox = session.sandbox.lock().await;
        if sandbox.is_none() {
            let config = session
                .agent
                .conversation_sandbox()
                .await
                .map_err(|e| e.to_string())?;
            let booted = self
                .provider
                .boot(&config)
                .await
                .map_err(|e| format!("the session's sandbox did not boot: {e}"))?;
            *sandbox = Some(booted);
        }
        let sandbox = sandbox.as_ref().expect("booted above");
        let history = session.history();
        let (sink, mut run_events) = EventSink::channel();
        *lock(&session.confirmations.events) = Some(sink.clone());
        let forward = async {
            while let Some(event) = run_events.recv().await {
                if let Some(event) = turn_event(event) {
                    // A client that went away does not stop the turn.
                    let _ = events.send(event).await;
                }
            }
        };
        let conversed = session
            .agent
            .converse_in(sandbox, history, &message, schema, sink);
        // The loop's sink ends with the call; the confirmations' clone must
        // go too, for the forwarding to see the end.
        let conversed = async {
            let result = conversed.await;
            lock(&session.confirmations.events).take();
            result
        };
        let (result, ()) = tokio::join!(conversed, forward);
        let (result, messages) = result.map_err(|e| e.to_string())?;
        *lock(&session.history) = messages;
        {
            let mut totals = lock(&session.totals);
            totals.input_tokens += result.usage.input_tokens;
            totals.output_tokens += result.usage.output_tokens;
            totals.cost_usd += result.cost_usd.unwrap_or(0.0);
            totals.turns += 1;
            totals.last_input_tokens = result.usage.input_tokens;
        }
        self.save(session);
        Ok(json!({
            "text": result.text,
            "output": result.output,
            "tool_calls": result.tool_calls.iter().map(|c| json!({
                "id": c.id, "name": c.name, "arguments": c.arguments,
                "summary": c.summary, "is_error": c.is_error,
            })).collect::<Vec<_>>(),
            "usage": result.usage,
            "cost_usd": result.cost_usd,
            "model_calls": result.turns,
        }))
    }

    /// Replaces the conversation by a summary the model writes of it.
    pub async fn compact(&self, session: &Session) -> Result<(usize, usize), TurnError> {
        if session.busy() {
            return Err(TurnError::Busy);
        }
        let history = session.history();
        if history.len() < 2 {
            return Ok((history.len(), history.len()));
        }
        let llm = session
            .agent
            .llm()
            .ok_or_else(|| TurnError::Invalid("the session's agent has no model".into()))?;
        let mut client = llm
            .connect()
            .map_err(|e| TurnError::Failed(e.to_string()))?;
        let mut messages = history.clone();
        messages.push(Message::user_text(
            "Summarise our conversation so far for your own later use: the task, what was \
             done and found, decisions, open questions, and the files that matter. Reply \
             with the summary only.",
        ));
        let request = ChatRequest {
            system: "You summarise conversations faithfully and briefly.".into(),
            messages,
            tools: Vec::new(),
            max_tokens: client.max_tokens(),
        };
        let answer = client
            .complete(&request, &|_| {})
            .await
            .map_err(|e| TurnError::Failed(e.to_string()))?;
        let summary = answer.text();
        let compacted = vec![
            Message::user_text(format!("Summary of our conversation so far:\n\n{summary}")),
            Message {
                role: Role::Assistant,
                content: vec![void_box::llm::ContentBlock::Text {
                    text: "Understood; I will go on from this summary.".into(),
                }],
            },
        ];
        let before = history.len();
        *lock(&session.history) = compacted;
        self.save(session);
        Ok((before, 2))
    }
}

/// The session of `options`, its agent's confirmations wired to it.
fn build(
    id: &str,
    created_unix_ms: u64,
    options: SessionOptions,
    history: Vec<Message>,
    totals: Totals,
) -> Result<Session, String> {
    let spec = crate::spec_text::parse(&options.spec, options.format.as_deref())
        .map_err(|e| e.message())?;
    let Runnable::Agent(agent) = spec.runnable().map_err(|e| e.to_string())? else {
        return Err(format!(
            "a session needs `kind: agent`, not `{}`",
            spec.kind()
        ));
    };
    let policy = match &options.permissions {
        Some(p) => Some(p.policy()?),
        None => None,
    };
    let unattended = policy
        .as_ref()
        .map_or_else(|| agent.permissions().unattended, |p| p.unattended);
    let confirmations = Arc::new(Confirmations {
        box_name: agent.name().to_string(),
        waiting: Mutex::new(HashMap::new()),
        events: Mutex::new(None),
        timeout: Duration::from_secs(options.confirm_timeout_secs.unwrap_or(300).clamp(1, 86_400)),
        unattended,
    });
    let asking = confirmations.clone();
    let hook: AskHook = Arc::new(move |request| {
        let asking = asking.clone();
        Box::pin(async move { asking.ask(request).await })
    });
    let mut agent = agent.with_ask_hook(hook);
    if let Some(system) = &options.system {
        agent = agent.with_instructions(system);
    }
    if let Some(policy) = policy {
        agent = agent.with_permissions(policy);
    }
    Ok(Session {
        id: id.to_string(),
        name: agent.name().to_string(),
        created_unix_ms,
        agent,
        options,
        sandbox: tokio::sync::Mutex::new(None),
        history: Mutex::new(history),
        totals: Mutex::new(totals),
        turn: Mutex::new(None),
        confirmations,
    })
}

/// What a stream shows of a run event.
fn turn_event(event: RunEvent) -> Option<TurnEvent> {
    Some(match event {
        RunEvent::TextDelta { text, .. } => TurnEvent::TextDelta { text },
        RunEvent::ToolCallStarted {
            id,
            name,
            arguments,
            ..
        } => TurnEvent::ToolCall {
            id,
            name,
            arguments,
        },
        RunEvent::ToolCallFinished {
            id,
            name,
            summary,
            is_error,
            ..
        } => TurnEvent::ToolResult {
            id,
            name,
            summary,
            is_error,
        },
        RunEvent::ConfirmationRequired {
            id,
            tool,
            arguments,
            timeout_secs,
            ..
        } => TurnEvent::ConfirmationRequired {
            id,
            tool,
            arguments,
            timeout_secs,
        },
        RunEvent::ConfirmationAnswered {
            id, decision, by, ..
        } => TurnEvent::ConfirmationAnswered { id, decision, by },
        RunEvent::Usage {
            total, cost_usd, ..
        } => TurnEvent::Usage {
            input_tokens: total.input_tokens,
            output_tokens: total.output_tokens,
            cost_usd,
        },
        _ => return None,
    })
}
