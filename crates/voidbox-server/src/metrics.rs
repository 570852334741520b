//! The daemon's figures, in Prometheus' text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::lanes::LaneFigures;

/// Counters the handlers bump.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: [AtomicU64; 5],
    created: AtomicU64,
    create_failed: AtomicU64,
    boot_ms_total: AtomicU64,
    expired: AtomicU64,
}

impl Metrics {
    pub fn request(&self, status: u16) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn created(&self, boot_ms: u64) {
        self.created.fetch_add(1, Ordering::Relaxed);
        self.boot_ms_total.fetch_add(boot_ms, Ordering::Relaxed);
    }

    pub fn create_failed(&self) {
        self.create_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }

    /// The text format, with `live` sandboxes and the lanes' `figures` now.
    pub fn render(&self, live: usize, lanes: &[LaneFigures]) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP voidbox_http_requests_total Requests answered, by status class.\n");
        out.push_str("# TYPE voidbox_http_requests_total counter\n");
        for (i, c) in self.requests.iter().enumerate() {
            let _ = writeln!(
                out,
                "voidbox_http_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                get(c)
            );
        }
        for (name, help, kind, value) in [
            (
                "voidbox_sandboxes_live",
                "Sandboxes the daemon holds now.",
                "gauge",
                live as u64,
            ),
            (
                "voidbox_sandboxes_created_total",
                "Sandboxes created.",
                "counter",
                get(&self.created),
            ),
            (
                "voidbox_sandbox_create_failures_total",
                "Creates that failed.",
                "counter",
                get(&self.create_failed),
            ),
            (
                "voidbox_sandboxes_expired_total",
                "Sandboxes ended by their timeout.",
                "counter",
                get(&self.expired),
            ),
            (
                "voidbox_sandbox_boot_milliseconds_total",
                "Boot time of the sandboxes created.",
                "counter",
                get(&self.boot_ms_total),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        for (name, help, kind, value) in [
            (
                "voidbox_lane_running",
                "Requests and runs under way, by lane.",
                "gauge",
                (|f: &LaneFigures| f.running as u64) as fn(&LaneFigures) -> u64,
            ),
            (
                "voidbox_lane_waiting",
                "Requests and runs waiting for a turn, by lane.",
                "gauge",
                |f| f.waiting as u64,
            ),
            (
                "voidbox_lane_rejected_total",
                "Requests and runs refused (429) by a full lane.",
                "counter",
                |f| f.rejected,
            ),
            (
                "voidbox_lane_concurrency",
                "Each lane's concurrency limit.",
                "gauge",
                |f| f.limit.concurrency as u64,
            ),
            (
                "voidbox_lane_queue_bound",
                "Each lane's queue bound.",
                "gauge",
                |f| f.limit.queue as u64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for f in lanes {
                let _ = writeln!(out, "{name}{{lane=\"{}\"}} {}", f.lane.name(), value(f));
            }
        }
        out
    }
}
