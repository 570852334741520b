//! `voidbox bench daemon`: what the daemon adds. The exec round trip of
//! `true` through `POST /v1/sandboxes/{id}/exec` and through envd's
//! Connect API (E2B's) beside the same exec through the library,
//! interleaved on one sandbox of each; E2B's `Sandbox.create` to its first
//! command through the official SDK beside the library's starts; and the
//! requests per second `GET /v1/health` sustains.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use void_box::Sandbox;
use voidbox_server::{Bound, Listen, ServeConfig};

use super::e2b::{self as e2b_rows, BenchSnapshot};
use super::{ms, pct, row};

const TOKEN: &str = "voidbox-bench-daemon-token";

/// An in-process daemon on loopback whose `warm` E2B template is
/// `snapshot`, `pool` sandboxes booted ahead: its address, its stop, its
/// task.
async fn serve(
    snapshot: &str,
    pool: usize,
) -> Result<(
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), voidbox_server::ServeError>>,
)> {
    let mut config = ServeConfig::new(Listen::Tcp("127.0.0.1:0".parse()?), Some(TOKEN.into()));
    config.e2b.templates.insert("warm".into(), snapshot.into());
    config.e2b.pool = pool;
    let bound = Bound::bind(config).await?;
    let base = format!("http://{}", bound.address().trim_start_matches("tcp:"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(bound.run(async move {
        let _ = stopped.await;
    }));
    Ok((base, stop, served))
}

pub async fn run(
    execs: usize,
    health_secs: u64,
    clients: usize,
    starts: usize,
) -> Result<ExitCode> {
    if execs == 0 || clients == 0 || starts == 0 {
        bail!("--execs, --clients and --starts must be positive");
    }
    let snapshot = BenchSnapshot::make().await?;
    let (base, stop, served) = serve(&snapshot.name, 0).await?;
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{base}/v1/sandboxes"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().context("no sandbox id")?.to_string();
    let exec_url = format!("{base}/v1/sandboxes/{id}/exec");
    let library = Sandbox::builder().build().await?;
    let e2b = e2b_rows::create(&http, &base, TOKEN, "base").await?;

    // Interleaved, so a slow stretch of the machine weighs on all.
    let (mut through_daemon, mut through_library) = (Vec::new(), Vec::new());
    let mut through_e2b = Vec::new();
    for _ in 0..execs {
        let started = Instant::now();
        e2b_rows::exec_true(&http, &base, &e2b).await?;
        through_e2b.push(started.elapsed());
        let started = Instant::now();
        let out: serde_json::Value = http
            .post(&exec_url)
            .bearer_auth(TOKEN)
            .json(&json!({"command": ["true"]}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        through_daemon.push(started.elapsed());
        if out["exit_code"] != 0 {
            bail!("`true` failed through the daemon: {out}");
        }
        let started = Instant::now();
        library.exec("true").await?;
        through_library.push(started.elapsed());
    }
    library.shutdown().await?;
    http.delete(format!("{base}/sandboxes/{}", e2b.id))
        .header("x-api-key", TOKEN)
        .send()
        .await?
        .error_for_status()?;

    // Starts: the SDK's create to its first command, cold and from the
    // snapshot, beside the library's.
    let sdk_cold =
        e2b_rows::sdk_create_to_first_command(&base, TOKEN, "base", starts, Duration::ZERO).await?;
    let sdk_warm =
        e2b_rows::sdk_create_to_first_command(&base, TOKEN, "warm", starts, Duration::ZERO).await?;
    // A daemon keeping one sandbox of the template booted ahead.
    let (pooled_base, pooled_stop, pooled_served) = serve(&snapshot.name, 1).await?;
    let sdk_pooled = e2b_rows::sdk_create_to_first_command(
        &pooled_base,
        TOKEN,
        "warm",
        starts,
        Duration::from_millis(1500),
    )
    .await?;
    let _ = pooled_stop.send(());
    pooled_served.await??;
    let library_starts = e2b_rows::library_starts(&snapshot.name, starts).await?;

    // Health: `clients` connections asking as fast as they can.
    let answered = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(health_secs);
    let askers: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, answered) =
                (http.clone(), format!("{base}/v1/health"), answered.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    if http
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                    {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for asker in askers {
        asker.await?;
    }
    let per_second = answered.load(Ordering::Relaxed) as f64 / health_secs as f64;
    let _ = stop.send(());
    served.await??;

    let added = pct(&through_daemon, 50.0).saturating_sub(pct(&through_library, 50.0));
    let e2b_added = pct(&through_e2b, 50.0).saturating_sub(pct(&through_library, 50.0));
    println!(
        "voidbox bench daemon: {execs} execs each way, {starts} starts each way, \
         {clients} health clients for {health_secs} s"
    );
    row("measure", "p50", "p90", "p95", "against");
    for (name, samples) in [
        ("exec round trip through the daemon (ms)", &through_daemon),
        ("exec round trip through envd's API, E2B (ms)", &through_e2b),
        ("exec round trip through the library (ms)", &through_library),
    ] {
        row(
            name,
            &ms(pct(samples, 50.0)),
            &ms(pct(samples, 90.0)),
            &ms(pct(samples, 95.0)),
            "",
        );
    }
    row(
        "what the daemon adds, p50 (ms)",
        &ms(added),
        "",
        "",
        "target < 1 ms",
    );
    row(
        "what the E2B API adds, p50 (ms)",
        &ms(e2b_added),
        "",
        "",
        "target < 1 ms",
    );
    let cold_p50 = pct(&library_starts.cold, 50.0);
    let mut start_rows: Vec<(&str, Option<&Vec<Duration>>)> = vec![
        (
            "e2b SDK: create to first command, cold (ms)",
            sdk_cold.as_ref(),
        ),
        (
            "e2b SDK: create to first command, snapshot (ms)",
            sdk_warm.as_ref(),
        ),
        (
            "e2b SDK: create to first command, pooled (ms)",
            sdk_pooled.as_ref(),
        ),
    ];
    start_rows.extend([
        (
            "library: cold start to first exec (ms)",
            Some(&library_starts.cold),
        ),
        (
            "library: restore to first exec (ms)",
            Some(&library_starts.restore),
        ),
        (
            "library: pool acquire to first exec (ms)",
            Some(&library_starts.pool),
        ),
    ]);
    for (name, samples) in start_rows {
        match samples {
            Some(samples) => {
                let p50 = pct(samples, 50.0);
                row(
                    name,
                    &ms(p50),
                    &ms(pct(samples, 90.0)),
                    &ms(pct(samples, 95.0)),
                    &format!(
                        "{:.3}x the library's cold start",
                        p50.as_secs_f64() / cold_p50.as_secs_f64()
                    ),
                );
            }
            None => row(
                name,
                "-",
                "",
                "",
                &format!(
                    "no e2b SDK at {}: scripts/install-e2b-sdks.sh",
                    e2b_rows::SDK_PYTHON
                ),
            ),
        }
    }
    row(
        "GET /v1/health (requests/s)",
        &format!("{per_second:.0}"),
        "",
        "",
        "keep-alive HTTP/1.1 on loopback",
    );
    Ok(ExitCode::SUCCESS)
}
