//! How long the host waits for the guest, per kind of request.
//!
//! The heartbeat catches a guest agent that stops answering altogether;
//! these catch one that answers pings but never answers a request (a
//! handler stuck on a hung file system, a buggy or hostile agent). A call
//! whose deadline passes fails with [`Error::Timeout`](crate::Error::Timeout)
//! naming the request, its stream is dropped (late answers are discarded),
//! and a command is cancelled.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-kind deadlines of host requests (part of
/// [`SandboxConfig`](super::SandboxConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestDeadlines {
    /// `stat`, `mkdir`, one page of `list`, telemetry: the whole answer.
    #[serde(rename = "query_ms", with = "crate::millis")]
    pub query: Duration,
    /// File reads and writes: the longest wait for the guest's next
    /// message (each chunk or credit restarts it, so a large file may take
    /// as long as it needs while data moves).
    #[serde(rename = "transfer_idle_ms", with = "crate::millis")]
    pub transfer_idle: Duration,
    /// A command: until the guest says it started.
    #[serde(rename = "exec_start_ms", with = "crate::millis")]
    pub exec_start: Duration,
    /// A command with a timeout: how long after the timeout its exit may
    /// take to arrive (the guest kills it at the timeout and drains its
    /// output for up to 10 s). A command without a timeout may run as long
    /// as it likes.
    #[serde(rename = "exec_grace_ms", with = "crate::millis")]
    pub exec_grace: Duration,
}

impl Default for RequestDeadlines {
    /// 30 s for queries, transfer stalls and starts; 15 s of grace.
    fn default() -> Self {
        RequestDeadlines {
            query: Duration::from_secs(30),
            transfer_idle: Duration::from_secs(30),
            exec_start: Duration::from_secs(30),
            exec_grace: Duration::from_secs(15),
        }
    }
}

impl RequestDeadlines {
    /// The same deadline for every kind (tests, impatient callers).
    pub fn all(deadline: Duration) -> Self {
        RequestDeadlines {
            query: deadline,
            transfer_idle: deadline,
            exec_start: deadline,
            exec_grace: deadline,
        }
    }

    /// The shortest of them, which [`SandboxConfig::validate`](super::SandboxConfig::validate) bounds.
    pub(crate) fn shortest(&self) -> Duration {
        [
            self.query,
            self.transfer_idle,
            self.exec_start,
            self.exec_grace,
        ]
        .into_iter()
        .min()
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::RequestDeadlines;
    use crate::sandbox::fake::FakeProvider;
    use crate::sandbox::{SandboxConfig, SandboxProvider};
    use crate::{Error, Exec};

    const SHORT: Duration = Duration::from_millis(300);

    /// Fails the test if `call` does not fail with a timeout naming `what`
    /// soon after the short deadline.
    async fn times_out<T: std::fmt::Debug>(
        what: &str,
        call: impl std::future::Future<Output = crate::Result<T>>,
    ) {
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("{what}: no deadline"));
        match result {
            Err(Error::Timeout(message)) => assert!(message.contains(what), "{message}"),
            other => panic!("{what}: expected a timeout, got {other:?}"),
        }
        let took = started.elapsed();
        assert!(took >= SHORT && took < SHORT * 5, "{what} took {took:?}");
    }

    #[tokio::test]
    async fn requests_a_guest_never_answers_time_out_and_the_connection_lives_on() {
        let provider = FakeProvider::default();
        let config = SandboxConfig::default().deadlines(RequestDeadlines::all(SHORT));
        let sb = provider.boot(&config).await.unwrap();
        sb.write_file("/workspace/a", b"hello").await.unwrap();
        let guest = provider.guests()[0].clone();
        guest.set_answering(false);

        times_out("stat /workspace/a", sb.stat("/workspace/a")).await;
        times_out("mkdir /workspace/d", sb.mkdir("/workspace/d")).await;
        times_out("list /workspace", sb.list("/workspace")).await;
        times_out("telemetry", sb.telemetry()).await;
        times_out("stat /workspace/a", sb.read_file("/workspace/a")).await;
        times_out(
            "the write of /workspace/b",
            sb.write_file("/workspace/b", b"x"),
        )
        .await;
        times_out("the start of `true`", sb.exec(Exec::new("true"))).await;

        // Heartbeats were answered all along: the sandbox still serves.
        guest.set_answering(true);
        assert_eq!(sb.read_file("/workspace/a").await.unwrap(), b"hello");
        assert!(sb.exec(Exec::new("true")).await.unwrap().status.success());
        sb.shutdown().await.unwrap();
    }

    #[test]
    fn a_deadline_under_10_ms_is_refused() {
        let config = SandboxConfig::default().deadlines(RequestDeadlines {
            exec_grace: Duration::from_millis(1),
            ..Default::default()
        });
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("deadlines"), "{err}");
    }

    #[test]
    fn deadlines_are_plain_data_in_milliseconds() {
        let json = serde_json::to_value(RequestDeadlines::default()).unwrap();
        assert_eq!(json["query_ms"], 30_000);
        let back: RequestDeadlines =
            serde_json::from_value(serde_json::json!({"exec_start_ms": 5})).unwrap();
        assert_eq!(back.exec_start, Duration::from_millis(5));
        assert_eq!(back.query, RequestDeadlines::default().query);
    }
}
