//! Typed events of a run, whatever runs: an agent box, a pipeline, a
//! workflow or a sandbox command. Callers, progress displays, saved runs
//! (`--save-run`) and the timeline all read this one type.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::llm::TokenUsage;
use crate::sandbox::OutputStream;

/// Something that happened during a run. `box_name` names the box, the
/// workflow step or the sandbox spec it happened in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The box's stage began (before the sandbox boots).
    StageStarted {
        /// Box name.
        box_name: String,
    },
    /// The sandbox is up.
    SandboxReady {
        /// Box name.
        box_name: String,
        /// How long it took to boot.
        #[serde(with = "crate::millis")]
        boot: Duration,
        /// What isolates it: `kvm`, or `tcg` (software emulation). Absent
        /// only in runs saved before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accel: Option<crate::vm::Accel>,
    },
    /// A model turn begins.
    TurnStarted {
        /// Box name.
        box_name: String,
        /// 1-based turn number.
        turn: u32,
    },
    /// Text streamed from the model.
    TextDelta {
        /// Box name.
        box_name: String,
        /// The new text.
        text: String,
    },
    /// The model called a tool (before permission and hooks: a refused
    /// call ends with an error result).
    ToolCallStarted {
        /// Box name.
        box_name: String,
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments as the model gave them.
        arguments: Value,
    },
    /// A tool call waits for a person's decision (an `ask` permission rule).
    ConfirmationRequired {
        /// Box name.
        box_name: String,
        /// The confirmation's id, to answer it by.
        id: String,
        /// Tool name.
        tool: String,
        /// Its arguments.
        arguments: Value,
        /// Seconds until the unattended default applies.
        timeout_secs: u64,
    },
    /// The decision on a confirmation came.
    ConfirmationAnswered {
        /// Box name.
        box_name: String,
        /// The confirmation's id.
        id: String,
        /// `allow` or `deny`.
        decision: String,
        /// `client` (a person answered) or `deadline` (the unattended
        /// default).
        by: String,
    },
    /// A tool call ended (or was refused).
    ToolCallFinished {
        /// Box name.
        box_name: String,
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// First line(s) of the result.
        summary: String,
        /// Failed or refused.
        is_error: bool,
        /// Wall time.
        #[serde(with = "crate::millis")]
        duration: Duration,
    },
    /// Token counts so far in this stage.
    Usage {
        /// Box name.
        box_name: String,
        /// Totals so far.
        total: TokenUsage,
        /// Cost so far, when the model's price is known.
        cost_usd: Option<f64>,
    },
    /// Output of a command a workflow step or sandbox spec runs, as it
    /// is produced.
    Output {
        /// Step or box name.
        box_name: String,
        /// Which stream.
        stream: OutputStream,
        /// The text (lossily decoded).
        text: String,
    },
    /// A connection attempt or DNS question of the box's sandbox (its
    /// egress audit trail).
    Network {
        /// Box name.
        box_name: String,
        /// What happened.
        connection: crate::net::NetworkEvent,
    },
    /// The stage ended.
    StageFinished {
        /// Box name.
        box_name: String,
        /// Whether it succeeded.
        success: bool,
        /// Wall time.
        #[serde(with = "crate::millis")]
        duration: Duration,
        /// The error, when it failed.
        error: Option<String>,
    },
}

/// Most bytes of streamed text (command output, model text) that may wait
/// unread in an event channel. Beyond it such events are dropped, and the
/// next one that fits says how much was lost; every other event always
/// arrives. So a reader that falls behind a command printing gigabytes
/// costs the host at most this much.
pub const MAX_QUEUED_EVENT_TEXT: usize = 8 << 20;

/// Where a run sends its events; sending never blocks and never fails the
/// run (a dropped receiver is fine).
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    channel: Option<(UnboundedSender<RunEvent>, Arc<Channel>)>,
}

/// What sinks and their receiver share. (Not the sender: the channel
/// closes when the last sink goes.)
#[derive(Debug)]
struct Channel {
    /// Bytes of streamed text sent and not yet received.
    queued: AtomicUsize,
    /// Bytes dropped since the last notice.
    unnoticed: AtomicU64,
    /// Bytes dropped in all.
    dropped: AtomicU64,
}

impl EventSink {
    /// Events go nowhere.
    pub fn none() -> Self {
        EventSink { channel: None }
    }

    /// A sink and the receiver its events go to (bounded as
    /// [`MAX_QUEUED_EVENT_TEXT`] says).
    pub fn channel() -> (EventSink, EventReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let channel = Arc::new(Channel {
            queued: AtomicUsize::new(0),
            unnoticed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let receiver = EventReceiver {
            rx,
            channel: channel.clone(),
        };
        (
            EventSink {
                channel: Some((tx, channel)),
            },
            receiver,
        )
    }

    /// Sends one event.
    pub fn emit(&self, mut event: RunEvent) {
        let Some((tx, channel)) = &self.channel else {
            return;
        };
        if let Some(text) = streamed_text(&mut event) {
            let len = text.len();
            if channel.queued.load(Ordering::Acquire) + len > MAX_QUEUED_EVENT_TEXT {
                channel.unnoticed.fetch_add(len as u64, Ordering::AcqRel);
                channel.dropped.fetch_add(len as u64, Ordering::AcqRel);
                return;
            }
            let lost = channel.unnoticed.swap(0, Ordering::AcqRel);
            if lost > 0 {
                text.insert_str(
                    0,
                    &format!(
                        "\n[voidbox: {lost} bytes of output not shown: the reader fell behind]\n"
                    ),
                );
            }
            channel.queued.fetch_add(text.len(), Ordering::AcqRel);
        }
        let _ = tx.send(event);
    }
}

/// The text of an event that streams (and may be dropped).
fn streamed_text(event: &mut RunEvent) -> Option<&mut String> {
    match event {
        RunEvent::Output { text, .. } | RunEvent::TextDelta { text, .. } => Some(text),
        _ => None,
    }
}

/// Receives the events of an [`EventSink::channel`].
#[derive(Debug)]
pub struct EventReceiver {
    rx: UnboundedReceiver<RunEvent>,
    channel: Arc<Channel>,
}

impl EventReceiver {
    /// The next event; `None` once every sink is gone and all was read.
    pub async fn recv(&mut self) -> Option<RunEvent> {
        let event = self.rx.recv().await;
        self.received(event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<RunEvent> {
        let event = self.rx.try_recv().ok();
        self.received(event)
    }

    /// Bytes of streamed text dropped because this receiver fell behind.
    pub fn dropped_bytes(&self) -> u64 {
        self.channel.dropped.load(Ordering::Acquire)
    }

    fn received(&self, mut event: Option<RunEvent>) -> Option<RunEvent> {
        if let Some(text) = event.as_mut().and_then(streamed_text) {
            self.channel.queued.fetch_sub(text.len(), Ordering::AcqRel);
        }
        event
    }
}

/// One event as a saved run holds it (a line of `voidbox run --output
/// json`): when it happened and, when the run was traced, its trace id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The run's trace id, when it was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The event.
    #[serde(flatten)]
    pub event: RunEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(text: &str) -> RunEvent {
        RunEvent::Output {
            box_name: "b".into(),
            stream: OutputStream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn a_reader_that_falls_behind_holds_at_most_the_cap_and_loses_no_other_event() {
        let (sink, mut rx) = EventSink::channel();
        let chunk = "x".repeat(64 << 10);
        sink.emit(RunEvent::StageStarted {
            box_name: "b".into(),
        });
        // 256 MiB offered with nobody reading.
        for _ in 0..4096 {
            sink.emit(output(&chunk));
        }
        sink.emit(RunEvent::StageFinished {
            box_name: "b".into(),
            success: true,
            duration: Duration::ZERO,
            error: None,
        });
        let queued = rx.channel.queued.load(Ordering::Acquire);
        assert!(queued <= MAX_QUEUED_EVENT_TEXT, "{queued}");
        let mut events = Vec::new();
        while let Some(e) = rx.try_recv() {
            events.push(e);
        }
        assert!(matches!(events[0], RunEvent::StageStarted { .. }));
        assert!(matches!(
            events.last(),
            Some(RunEvent::StageFinished { .. })
        ));
        let kept = events.len() - 2;
        assert_eq!(kept, MAX_QUEUED_EVENT_TEXT / chunk.len());
        assert_eq!(rx.dropped_bytes(), ((4096 - kept) * chunk.len()) as u64);
        assert_eq!(rx.channel.queued.load(Ordering::Acquire), 0);

        // Once read, output flows again, after a notice of what was lost.
        sink.emit(output("later"));
        match rx.try_recv() {
            Some(RunEvent::Output { text, .. }) => {
                assert!(text.contains("bytes of output not shown"), "{text}");
                assert!(text.ends_with("later"));
            }
            other => panic!("{other:?}"),
        }
        // The channel ends with its last sink.
        drop(sink);
        assert_eq!(rx.try_recv(), None);
        assert!(rx.rx.is_closed());
    }
}
