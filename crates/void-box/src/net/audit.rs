//! The audit trail: one event per connection attempt and per DNS answer,
//! sent to subscribers (the run's events), to tracing (so OTLP exports
//! them as span events) and to the metrics.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// What a [`NetworkEvent`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkEventKind {
    /// A TCP connection (reported when it ends, or when it is refused).
    Tcp,
    /// A UDP datagram to anything but the guest's DNS server.
    Udp,
    /// A DNS question the guest asked.
    Dns,
    /// A guest port published on the host (reported once, at start).
    Published,
}

impl NetworkEventKind {
    /// Its name: `tcp`, `udp`, `dns`, `published`.
    pub fn name(self) -> &'static str {
        match self {
            NetworkEventKind::Tcp => "tcp",
            NetworkEventKind::Udp => "udp",
            NetworkEventKind::Dns => "dns",
            NetworkEventKind::Published => "published",
        }
    }
}

/// One connection attempt or DNS answer of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkEvent {
    /// What it is.
    pub kind: NetworkEventKind,
    /// Whether the policy let it through.
    pub allowed: bool,
    /// The rule that decided (`allow api.github.com`), or why none did.
    pub reason: String,
    /// The host name it was for: the DNS question, or the name the guest
    /// resolved this address with, or the TLS SNI / HTTP Host it sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The address the guest connected to (for DNS: the first answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The destination port (0 for DNS).
    pub port: u16,
    /// Bytes from the guest to the destination.
    pub bytes_sent: u64,
    /// Bytes from the destination to the guest.
    pub bytes_received: u64,
    /// How long it lasted.
    #[serde(with = "crate::millis")]
    pub duration: Duration,
    /// What went wrong after the policy allowed it (the destination
    /// refused, a timeout, a reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NetworkEvent {
    /// The report of a published port.
    pub fn published(port: super::PortMap) -> NetworkEvent {
        NetworkEvent {
            kind: NetworkEventKind::Published,
            allowed: true,
            reason: format!("guest port {} published", port.guest),
            host: None,
            address: Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            port: port.host,
            bytes_sent: 0,
            bytes_received: 0,
            duration: Duration::ZERO,
            error: None,
        }
    }

    /// Counts the event in the metrics.
    fn count(&self) {
        crate::observe::metrics::network_event(
            self.kind.name(),
            self.allowed,
            self.bytes_sent,
            self.bytes_received,
        );
    }

    /// One line for people: `allowed tcp api.github.com (140.82.112.6):443 ...`.
    pub fn summary(&self) -> String {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        let kind = self.kind.name();
        let mut target = match (&self.host, self.address) {
            (Some(h), Some(a)) => format!("{h} ({a})"),
            (Some(h), None) => h.clone(),
            (None, Some(a)) => a.to_string(),
            (None, None) => "?".into(),
        };
        if self.port != 0 {
            target.push_str(&format!(":{}", self.port));
        }
        let mut line = format!("{verdict} {kind} {target}: {}", self.reason);
        if self.kind == NetworkEventKind::Tcp && self.allowed {
            line.push_str(&format!(
                "; {} B out, {} B in, {} ms",
                self.bytes_sent,
                self.bytes_received,
                self.duration.as_millis()
            ));
        }
        if let Some(e) = &self.error {
            line.push_str(&format!("; {e}"));
        }
        line
    }
}

/// Refusals reported one by one: a burst of this many, then this many a
/// second. A guest refused faster than that (a connect loop, a scan) is
/// summed up in one event, so it cannot flood the run's output, logs and
/// saved runs; the metrics still count every attempt.
const REFUSAL_BURST: f64 = 64.0;
const REFUSALS_PER_SECOND: f64 = 16.0;

/// Where a stack reports its events.
#[derive(Debug)]
pub(crate) struct Audit {
    events: broadcast::Sender<NetworkEvent>,
    sandbox_id: String,
    /// Refusals that may still be reported one by one, refilled with time.
    budget: f64,
    refilled: Instant,
    /// Refusals dropped since the last one reported, and the last's kind.
    unreported: u64,
    unreported_kind: NetworkEventKind,
}

impl Audit {
    pub fn new(events: broadcast::Sender<NetworkEvent>, sandbox_id: &str) -> Audit {
        Audit {
            events,
            sandbox_id: sandbox_id.to_string(),
            budget: REFUSAL_BURST,
            refilled: Instant::now(),
            unreported: 0,
            unreported_kind: NetworkEventKind::Tcp,
        }
    }

    /// Reports `event`; a refusal beyond the budget is only counted.
    pub fn record(&mut self, event: NetworkEvent) {
        event.count();
        if !event.allowed {
            let now = Instant::now();
            let refill = now.duration_since(self.refilled).as_secs_f64() * REFUSALS_PER_SECOND;
            self.budget = (self.budget + refill).min(REFUSAL_BURST);
            self.refilled = now;
            if self.budget < 1.0 {
                self.unreported += 1;
                self.unreported_kind = event.kind;
                return;
            }
            self.budget -= 1.0;
        }
        self.finish();
        self.emit(event);
    }

    /// Reports the refusals not yet reported, summed up in one event.
    pub fn finish(&mut self) {
        if self.unreported == 0 {
            return;
        }
        let n = std::mem::take(&mut self.unreported);
        self.emit(NetworkEvent {
            kind: self.unreported_kind,
            allowed: false,
            reason: format!(
                "{n} more refused attempts, not reported one by one \
                 (more than {REFUSALS_PER_SECOND} a second)"
            ),
            host: None,
            address: None,
            port: 0,
            bytes_sent: 0,
            bytes_received: 0,
            duration: Duration::ZERO,
            error: None,
        });
    }

    /// Reports a published port to tracing and the metrics only: the
    /// run's events have it from the sandbox's own list, whenever they
    /// subscribe.
    pub fn published(&self, port: super::PortMap) {
        let event = NetworkEvent::published(port);
        event.count();
        self.trace(&event);
    }

    fn emit(&self, event: NetworkEvent) {
        self.trace(&event);
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    fn trace(&self, event: &NetworkEvent) {
        tracing::info!(
            voidbox.sandbox_id = %self.sandbox_id,
            voidbox.net.kind = ?event.kind,
            voidbox.net.allowed = event.allowed,
            voidbox.net.reason = %event.reason,
            voidbox.net.host = event.host.as_deref().unwrap_or(""),
            voidbox.net.address = %event.address.map(|a| a.to_string()).unwrap_or_default(),
            voidbox.net.port = event.port,
            voidbox.net.bytes_sent = event.bytes_sent,
            voidbox.net.bytes_received = event.bytes_received,
            voidbox.net.duration_ms = event.duration.as_millis() as u64,
            voidbox.net.error = event.error.as_deref().unwrap_or(""),
            "network {}",
            if event.allowed { "allowed" } else { "denied" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(port: u16) -> NetworkEvent {
        NetworkEvent {
            kind: NetworkEventKind::Tcp,
            allowed: false,
            reason: "no rule allows it".into(),
            host: None,
            address: None,
            port,
            bytes_sent: 0,
            bytes_received: 0,
            duration: Duration::ZERO,
            error: None,
        }
    }

    #[test]
    fn a_storm_of_refusals_is_summed_up_and_allowed_events_always_pass() {
        let (tx, mut rx) = broadcast::channel(4096);
        let mut audit = Audit::new(tx, "vm-test");
        for port in 1..=1000 {
            audit.record(refusal(port));
        }
        let allowed = NetworkEvent {
            allowed: true,
            ..refusal(1)
        };
        audit.record(allowed.clone());
        audit.finish();
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        // The burst one by one (a little refill while the loop ran at
        // most), then the rest summed up before the allowed event.
        let one_by_one = got.iter().take_while(|e| e.port != 0).count();
        assert!((64..=70).contains(&one_by_one), "{one_by_one}");
        let summary = &got[one_by_one];
        assert!(!summary.allowed);
        let n: usize = summary.reason.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(one_by_one + n, 1000, "{}", summary.reason);
        assert_eq!(got[one_by_one + 1], allowed);
        assert_eq!(got.len(), one_by_one + 2, "finish had nothing left");
    }
}
