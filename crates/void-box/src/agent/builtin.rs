//! The built-in agent loop. It runs on the host: the model is called from
//! here, and every tool call goes into the sandbox through the guest
//! protocol.

use std::time::Instant;

use serde_json::Value;
use tracing::Instrument;

use super::hooks::{PostToolAction, PreToolAction, ToolCall};
use super::permissions::{Decision, ToolRequest, Verdict};
use super::tools::{self, builtin_specs, summarize, truncate_output, ToolOutcome};
use super::{AgentError, OutputSchema, RunResult, ToolCallRecord, VoidBox};
use crate::event::{EventSink, RunEvent};
use crate::llm::{
    price_per_million, ChatRequest, ContentBlock, Message, Role, TokenUsage, ToolSpec,
};
use crate::skill::Provisioned;
use crate::{Sandbox, WORKSPACE_DIR};

pub(super) async fn run(
    vbox: &VoidBox,
    sandbox: &Sandbox,
    skills: &Provisioned,
    input: Option<&str>,
    events: &EventSink,
) -> Result<RunResult, AgentError> {
    let task = vec![Message::user_text(vbox.task(input))];
    let schema = vbox.inner.config.output_schema.as_ref();
    converse(vbox, sandbox, skills, task, schema, events)
        .await
        .map(|(result, _)| result)
}

/// The loop over `messages` (a conversation ending with the user's turn):
/// model calls and tool calls until the model answers without tools (an
/// answer that validates against `schema`, when there is one). Returns the
/// result and the conversation after it.
pub(super) async fn converse(
    vbox: &VoidBox,
    sandbox: &Sandbox,
    skills: &Provisioned,
    messages: Vec<Message>,
    schema: Option<&OutputSchema>,
    events: &EventSink,
) -> Result<(RunResult, Vec<Message>), AgentError> {
    let c = &vbox.inner.config;
    let name = c.name.as_str();
    let llm = c
        .llm
        .as_ref()
        .expect("build() checks the builtin engine has an LLM");
    let llm_err = |source| AgentError::Llm {
        box_name: name.to_string(),
        source,
    };
    let mut client = llm.connect().map_err(llm_err)?;
    let started = Instant::now();

    let mut request = ChatRequest {
        system: system_prompt(vbox, skills, schema),
        messages,
        tools: tool_specs(skills),
        max_tokens: client.max_tokens(),
    };
    let price = price_per_million(llm.model());
    let mut usage = TokenUsage::default();
    let mut records = Vec::new();
    let mut invalid_answers = 0;
    let on_text = |text: &str| {
        events.emit(RunEvent::TextDelta {
            box_name: name.to_string(),
            text: text.to_string(),
        })
    };

    for turn in 1..=c.max_turns {
        let turn_span = tracing::info_span!("agent.turn", otel.name = %format!("turn {turn}"), voidbox.turn = i64::from(turn));
        events.emit(RunEvent::TurnStarted {
            box_name: name.to_string(),
            turn,
        });
        tracing::debug!(
            box_name = name,
            turn,
            provider = llm.provider_name(),
            model = llm.model(),
            "model call"
        );
        let llm_span = tracing::info_span!(
            parent: &turn_span,
            "chat",
            otel.name = %format!("chat {}", llm.model()),
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.system = llm.provider_name(),
            gen_ai.provider.name = llm.provider_name(),
            gen_ai.request.model = llm.model(),
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            voidbox.cost_usd = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let call_started = Instant::now();
        let response = client
            .complete(&request, &on_text)
            .instrument(llm_span.clone())
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                llm_span.record("otel.status_code", "ERROR");
                return Err(llm_err(e));
            }
        };
        let call_cost =
            price.map(|p| p.cost(response.usage.input_tokens, response.usage.output_tokens));
        llm_span.record("gen_ai.response.model", response.model.as_str());
        llm_span.record(
            "gen_ai.usage.input_tokens",
            response.usage.input_tokens as i64,
        );
        llm_span.record(
            "gen_ai.usage.output_tokens",
            response.usage.output_tokens as i64,
        );
        llm_span.record(
            "gen_ai.response.finish_reasons",
            format!("{:?}", response.stop_reason)
                .to_lowercase()
                .as_str(),
        );
        if let Some(cost) = call_cost {
            llm_span.record("voidbox.cost_usd", cost);
        }
        crate::observe::metrics::llm_call(
            name,
            llm.model(),
            response.usage.input_tokens,
            response.usage.output_tokens,
            call_cost,
            call_started.elapsed(),
        );
        tracing::debug!(
            box_name = name,
            turn,
            input_tokens = response.usage.input_tokens,
            output_tokens = response.usage.output_tokens,
            stop_reason = ?response.stop_reason,
            "model answered"
        );
        usage += response.usage;
        let cost = price.map(|p| p.cost(usage.input_tokens, usage.output_tokens));
        events.emit(RunEvent::Usage {
            box_name: name.to_string(),
            total: usage,
            cost_usd: cost,
        });
        request.messages.push(Message {
            role: Role::Assistant,
            content: response.content.clone(),
        });

        let calls: Vec<(String, String, Value)> = response
            .tool_uses()
            .map(|(id, tool, args)| (id.to_string(), tool.to_string(), args.clone()))
            .collect();
        if calls.is_empty() {
            let text = response.text();
            let output = match schema {
                None => None,
                Some(schema) => match schema.check(&text) {
                    Ok(value) => Some(value),
                    Err(errors) => {
                        invalid_answers += 1;
                        if invalid_answers > c.output_retries {
                            return Err(AgentError::InvalidOutput {
                                box_name: name.to_string(),
                                attempts: invalid_answers,
                                errors,
                            });
                        }
                        request.messages.push(Message::user_text(format!(
                            "Your answer does not validate against the required JSON Schema:\n- {}\n\
                             Reply with only the corrected JSON value.",
                            errors.join("\n- ")
                        )));
                        continue;
                    }
                },
            };
            let result = RunResult {
                box_name: name.to_string(),
                text,
                output,
                file: None,
                tool_calls: records,
                usage,
                cost_usd: cost,
                turns: turn,
                duration: started.elapsed(),
                model: response.model.clone(),
                accel: sandbox.accel(),
            };
            return Ok((result, request.messages));
        }

        let mut results = Vec::with_capacity(calls.len());
        for (id, tool, args) in calls {
            let tool_span = tracing::info_span!(
                parent: &turn_span,
                "execute_tool",
                otel.name = %format!("execute_tool {tool}"),
                gen_ai.operation.name = "execute_tool",
                gen_ai.tool.name = %tool,
                gen_ai.tool.call.id = %id,
                voidbox.r#box = name,
                voidbox.exit_code = tracing::field::Empty,
                voidbox.is_error = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let record = call_tool(vbox, sandbox, skills, events, &id, &tool, args)
                .instrument(tool_span.clone())
                .await;
            tool_span.record("voidbox.is_error", record.1.is_error);
            if let Some(code) = record.1.exit_code {
                tool_span.record("voidbox.exit_code", i64::from(code));
            }
            if record.1.is_error {
                tool_span.record("otel.status_code", "ERROR");
            }
            crate::observe::metrics::tool_call(name, &tool, record.1.is_error);
            results.push(ContentBlock::ToolResult {
                tool_use_id: id,
                content: record.1.content,
                is_error: record.1.is_error,
            });
            records.push(record.0);
        }
        request.messages.push(Message {
            role: Role::User,
            content: results,
        });
    }
    Err(AgentError::MaxTurns {
        box_name: name.to_string(),
        max_turns: c.max_turns,
    })
}

/// Permission, pre-hooks, the call itself, truncation, post-hooks. Refusals
/// and failures become results the model sees; they never end the run.
async fn call_tool(
    vbox: &VoidBox,
    sandbox: &Sandbox,
    skills: &Provisioned,
    events: &EventSink,
    id: &str,
    tool: &str,
    mut args: Value,
) -> (ToolCallRecord, ToolOutcome) {
    let c = &vbox.inner.config;
    let box_name = c.name.as_str();
    let started = Instant::now();
    events.emit(RunEvent::ToolCallStarted {
        box_name: box_name.to_string(),
        id: id.to_string(),
        name: tool.to_string(),
        arguments: args.clone(),
    });

    let mut outcome = permit(vbox, tool, &args).await.err();
    if outcome.is_none() {
        for hook in &c.pre_hooks {
            let call = ToolCall {
                box_name,
                tool,
                arguments: &args,
            };
            match hook(&call) {
                PreToolAction::Continue => {}
                PreToolAction::Block(reason) => {
                    outcome = Some(ToolOutcome::error(format!("Blocked by a hook: {reason}")));
                    break;
                }
                PreToolAction::Rewrite(new_args) => {
                    // A rewritten call must still pass the deny rules.
                    if let Verdict::Deny(why) = c.permissions.check(tool, &new_args) {
                        outcome = Some(denied(tool, &why));
                        break;
                    }
                    args = new_args;
                }
            }
        }
    }
    let mut outcome = match outcome {
        Some(refused) => refused,
        None => {
            let mut out = execute(vbox, sandbox, skills, tool, &args).await;
            out.content = truncate_output(&out.content, c.max_tool_output);
            out
        }
    };
    for hook in &c.post_hooks {
        let call = ToolCall {
            box_name,
            tool,
            arguments: &args,
        };
        if let PostToolAction::Replace(new) = hook(&call, &outcome) {
            outcome = new;
        }
    }
    let duration = started.elapsed();
    let summary = summarize(&outcome.content);
    tracing::debug!(box_name, tool, %args, is_error = outcome.is_error, ?duration, %summary, "tool call");
    events.emit(RunEvent::ToolCallFinished {
        box_name: box_name.to_string(),
        id: id.to_string(),
        name: tool.to_string(),
        summary: summary.clone(),
        is_error: outcome.is_error,
        duration,
    });
    let record = ToolCallRecord {
        id: id.to_string(),
        name: tool.to_string(),
        arguments: args,
        summary,
        is_error: outcome.is_error,
        duration,
    };
    (record, outcome)
}

fn denied(tool: &str, why: &str) -> ToolOutcome {
    ToolOutcome::error(format!(
        "Permission denied: the call to `{tool}` {why}. Do not retry it; find another way or explain what you need."
    ))
}

async fn permit(vbox: &VoidBox, tool: &str, args: &Value) -> Result<(), ToolOutcome> {
    let c = &vbox.inner.config;
    match c.permissions.check(tool, args) {
        Verdict::Allow => Ok(()),
        Verdict::Deny(why) => Err(denied(tool, &why)),
        Verdict::Ask(rule) => {
            let decision = match &c.ask_hook {
                Some(hook) => {
                    hook(ToolRequest {
                        box_name: c.name.clone(),
                        tool: tool.to_string(),
                        arguments: args.clone(),
                    })
                    .await
                }
                None => c.permissions.unattended,
            };
            match decision {
                Decision::Allow => Ok(()),
                Decision::Deny => Err(denied(
                    tool,
                    &format!("needs approval (rule `{rule}`) and was refused"),
                )),
            }
        }
    }
}

async fn execute(
    vbox: &VoidBox,
    sandbox: &Sandbox,
    skills: &Provisioned,
    tool: &str,
    args: &Value,
) -> ToolOutcome {
    let timeout = vbox.inner.config.tool_timeout;
    let max_output = vbox.inner.config.max_tool_output;
    if let Some(out) = tools::run_builtin(sandbox, tool, args, timeout, max_output).await {
        return out;
    }
    for session in &skills.mcp {
        if session.tools().iter().any(|t| t.name == tool) {
            return match session.call(tool, args.clone(), timeout).await {
                Ok(r) => ToolOutcome {
                    content: r.text,
                    is_error: r.is_error,
                    exit_code: None,
                },
                Err(e) => ToolOutcome::error(format!("MCP call failed: {e}")),
            };
        }
    }
    ToolOutcome::error(format!("unknown tool `{tool}`"))
}

fn system_prompt(vbox: &VoidBox, skills: &Provisioned, schema: Option<&OutputSchema>) -> String {
    let c = &vbox.inner.config;
    let network = match &c.sandbox.network {
        crate::net::NetworkPolicy::Off => "no network".to_string(),
        crate::net::NetworkPolicy::On { rules, .. } => {
            let allow: Vec<String> = rules.allow.iter().map(|r| r.to_string()).collect();
            format!("network access limited to: {}", allow.join(", "))
        }
    };
    let mut s = format!(
        "You are `{}`, an AI agent working inside an isolated Linux micro-VM with its own kernel \
         and {network}. Your working directory is {WORKSPACE_DIR}. Use the tools to inspect and change \
         files and to run commands; they run inside the VM. When the task is done, reply with \
         your final answer and no tool calls.\n",
        c.name
    );
    if let Some(instructions) = &c.instructions {
        s.push('\n');
        s.push_str(instructions);
        s.push('\n');
    }
    let announced = skills.announcement();
    if !announced.is_empty() {
        s.push('\n');
        s.push_str(&announced);
    }
    if let Some(schema) = schema {
        s.push_str(&format!(
            "\nYour final answer must be only a JSON value (no prose, no code fence) that \
             validates against this JSON Schema:\n{}\n",
            schema.schema()
        ));
    }
    s
}

/// The tools the model sees: the built-ins, then every MCP skill's tools.
fn tool_specs(skills: &Provisioned) -> Vec<ToolSpec> {
    let mut specs = builtin_specs();
    for session in &skills.mcp {
        specs.extend(session.tools().iter().cloned());
    }
    specs
}
