//! The metrics void-box records. Instruments exist only once an exporter
//! is installed; before that every call returns at once.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge, Histogram};
use opentelemetry::KeyValue;

use super::enabled;

struct Instruments {
    stage_duration: Histogram<f64>,
    token_usage: Histogram<u64>,
    tokens: Counter<u64>,
    cost: Counter<f64>,
    llm_duration: Histogram<f64>,
    tool_calls: Counter<u64>,
    boot_duration: Histogram<f64>,
    exec_duration: Histogram<f64>,
    guest_cpu: Gauge<f64>,
    guest_memory: Gauge<u64>,
    net_events: Counter<u64>,
    net_bytes: Counter<u64>,
}

fn instruments() -> Option<&'static Instruments> {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    if !enabled() {
        return None;
    }
    Some(INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("void-box");
        Instruments {
            stage_duration: meter
                .f64_histogram("voidbox.stage.duration")
                .with_unit("s")
                .with_description("Wall time of a box or workflow step, boot included")
                .build(),
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Tokens per model call")
                .build(),
            tokens: meter
                .u64_counter("voidbox.tokens")
                .with_unit("{token}")
                .with_description("Tokens used, by box and type")
                .build(),
            cost: meter
                .f64_counter("voidbox.cost")
                .with_unit("USD")
                .with_description("Model cost at list price, where known")
                .build(),
            llm_duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of a model call")
                .build(),
            tool_calls: meter
                .u64_counter("voidbox.tool.calls")
                .with_unit("{call}")
                .with_description("Tool calls, by tool and outcome")
                .build(),
            boot_duration: meter
                .f64_histogram("voidbox.sandbox.boot.duration")
                .with_unit("s")
                .with_description("Sandbox boot, launch to authenticated agent")
                .build(),
            exec_duration: meter
                .f64_histogram("voidbox.exec.duration")
                .with_unit("s")
                .with_description("Command round trip in a sandbox")
                .build(),
            guest_cpu: meter
                .f64_gauge("voidbox.guest.cpu.utilization")
                .with_unit("1")
                .with_description("Guest CPU busy share since the previous sample")
                .build(),
            guest_memory: meter
                .u64_gauge("voidbox.guest.memory.used")
                .with_unit("By")
                .with_description("Guest memory in use")
                .build(),
            net_events: meter
                .u64_counter("voidbox.network.attempts")
                .with_unit("{attempt}")
                .with_description(
                    "Guest connection attempts and DNS questions, by kind and verdict",
                )
                .build(),
            net_bytes: meter
                .u64_counter("voidbox.network.io")
                .with_unit("By")
                .with_description("Bytes relayed for guest connections, by direction")
                .build(),
        }
    }))
}

fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

/// A box or step finished.
pub fn stage_finished(box_name: &str, success: bool, took: Duration) {
    if let Some(m) = instruments() {
        m.stage_duration.record(
            took.as_secs_f64(),
            &[
                kv("voidbox.box", box_name.to_string()),
                kv("voidbox.success", success),
            ],
        );
    }
}

/// A model call answered.
pub fn llm_call(
    box_name: &str,
    model: &str,
    input: u64,
    output: u64,
    cost: Option<f64>,
    took: Duration,
) {
    let Some(m) = instruments() else { return };
    let common = [
        kv("gen_ai.operation.name", "chat"),
        kv("gen_ai.request.model", model.to_string()),
        kv("voidbox.box", box_name.to_string()),
    ];
    m.llm_duration.record(took.as_secs_f64(), &common);
    for (kind, n) in [("input", input), ("output", output)] {
        let mut attrs = common.to_vec();
        attrs.push(kv("gen_ai.token.type", kind));
        m.token_usage.record(n, &attrs);
        m.tokens.add(n, &attrs);
    }
    if let Some(cost) = cost {
        m.cost.add(cost, &common);
    }
}

/// A tool call ended.
pub fn tool_call(box_name: &str, tool: &str, is_error: bool) {
    if let Some(m) = instruments() {
        m.tool_calls.add(
            1,
            &[
                kv("voidbox.box", box_name.to_string()),
                kv("gen_ai.tool.name", tool.to_string()),
                kv("error", is_error),
            ],
        );
    }
}

/// A sandbox booted.
pub fn sandbox_booted(took: Duration) {
    if let Some(m) = instruments() {
        m.boot_duration.record(took.as_secs_f64(), &[]);
    }
}

/// A command ran in a sandbox.
pub fn exec_finished(program: &str, took: Duration) {
    if let Some(m) = instruments() {
        m.exec_duration.record(
            took.as_secs_f64(),
            &[kv("voidbox.program", program.to_string())],
        );
    }
}

/// One sample of a guest's resource use.
pub fn guest_sample(box_name: &str, cpu_utilization: f64, memory_used: u64) {
    if let Some(m) = instruments() {
        let attrs = [kv("voidbox.box", box_name.to_string())];
        m.guest_cpu.record(cpu_utilization, &attrs);
        m.guest_memory.record(memory_used, &attrs);
    }
}

/// A guest connection ended or was refused, or a DNS question answered:
/// its kind (`tcp`, `udp`, `dns`, `published`), verdict and bytes each way.
pub fn network_event(kind: &'static str, allowed: bool, sent: u64, received: u64) {
    let Some(m) = instruments() else { return };
    m.net_events.add(
        1,
        &[
            kv("voidbox.network.kind", kind),
            kv("voidbox.network.allowed", allowed),
        ],
    );
    for (direction, n) in [("sent", sent), ("received", received)] {
        if n > 0 {
            m.net_bytes
                .add(n, &[kv("voidbox.network.direction", direction)]);
        }
    }
}
