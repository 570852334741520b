//! The E2B rows of `voidbox bench daemon`: an exec through envd's Connect
//! `Start` (as the SDKs send it), and `Sandbox.create` to the first
//! command's end through the official Python SDK (the venv of
//! `scripts/install-e2b-sdks.sh`), from a cold boot and from a snapshot,
//! beside the library's cold start, restore and pool.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use void_box::sandbox::snapshot::SnapshotStore;
use void_box::sandbox::SandboxPool;
use void_box::{Sandbox, SandboxConfig};

/// Where `scripts/install-e2b-sdks.sh` puts the Python SDK.
pub const SDK_PYTHON: &str = "target/e2b-sdk/venv/bin/python";

/// A sandbox made through the E2B API: its id and access token.
pub struct E2bSandbox {
    pub id: String,
    pub token: String,
}

/// Creates a sandbox of `template` through `POST /v2/sandboxes`.
pub async fn create(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    template: &str,
) -> Result<E2bSandbox> {
    let made: Value = http
        .post(format!("{base}/v2/sandboxes"))
        .header("x-api-key", key)
        .json(&json!({"templateID": template, "allow_internet_access": false}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(E2bSandbox {
        id: made["sandboxID"].as_str().context("no sandboxID")?.into(),
        token: made["envdAccessToken"].as_str().context("no token")?.into(),
    })
}

/// Runs `true` through envd's `process.Process/Start` and reads its stream
/// to the end.
pub async fn exec_true(http: &reqwest::Client, base: &str, sandbox: &E2bSandbox) -> Result<()> {
    let message = serde_json::to_vec(&json!({"process": {"cmd": "true"}, "stdin": false}))?;
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let answer = http
        .post(format!("{base}/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("e2b-sandbox-id", &sandbox.id)
        .header("x-access-token", &sandbox.token)
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    // The last envelope ends the stream: `{}`, or an error.
    let tail = String::from_utf8_lossy(&answer);
    if !tail.contains(r#""exitCode":0"#) || !tail.ends_with("{}") {
        bail!("`true` through envd: {tail}");
    }
    Ok(())
}

/// `Sandbox.create(template)` to `commands.run("true")`'s end, `runs`
/// times, through the Python SDK, `pause` between runs (untimed: a pool's
/// refill); `None` when the SDK is not installed.
pub async fn sdk_create_to_first_command(
    base: &str,
    key: &str,
    template: &str,
    runs: usize,
    pause: Duration,
) -> Result<Option<Vec<Duration>>> {
    if !Path::new(SDK_PYTHON).exists() {
        return Ok(None);
    }
    let script = r#"
import sys, time
from e2b import Sandbox
for _ in range(int(sys.argv[2])):
    time.sleep(float(sys.argv[3]))
    started = time.perf_counter()
    sandbox = Sandbox.create(template=sys.argv[1], allow_internet_access=False)
    sandbox.commands.run("true")
    print((time.perf_counter() - started) * 1e6, flush=True)
    sandbox.kill()
"#;
    let out = tokio::process::Command::new(SDK_PYTHON)
        .args([
            "-c",
            script,
            template,
            &runs.to_string(),
            &pause.as_secs_f64().to_string(),
        ])
        .env("E2B_API_URL", base)
        .env("E2B_SANDBOX_URL", base)
        .env("E2B_API_KEY", key)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "the e2b SDK failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let samples = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.trim()
                .parse::<f64>()
                .map(|us| Duration::from_micros(us as u64))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(samples))
}

/// What the library takes for the same: build (cold, or from
/// `snapshot`) to `true`'s end, and a pool's acquire to it.
pub struct LibraryStarts {
    pub cold: Vec<Duration>,
    pub restore: Vec<Duration>,
    pub pool: Vec<Duration>,
}

pub async fn library_starts(snapshot: &str, runs: usize) -> Result<LibraryStarts> {
    let mut starts = LibraryStarts {
        cold: Vec::new(),
        restore: Vec::new(),
        pool: Vec::new(),
    };
    for (config, samples) in [
        (SandboxConfig::default(), &mut starts.cold),
        (
            SandboxConfig::default().snapshot(snapshot),
            &mut starts.restore,
        ),
    ] {
        for _ in 0..runs {
            let started = Instant::now();
            let sandbox = config.build().await?;
            sandbox.exec("true").await?;
            samples.push(started.elapsed());
            sandbox.shutdown().await?;
        }
    }
    let config = SandboxConfig::default().snapshot(snapshot);
    let pool = SandboxPool::new(1);
    pool.warm(&config);
    for _ in 0..runs {
        let ready = Instant::now();
        while pool.status(&config).ready == 0 {
            if ready.elapsed() > Duration::from_secs(60) {
                bail!("the pool did not refill");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let sandbox = pool.acquire(&config).await?;
        sandbox.exec("true").await?;
        starts.pool.push(started.elapsed());
        sandbox.shutdown().await?;
    }
    Ok(starts)
}

/// A snapshot of an E2B-shaped guest (its home a file root, every
/// command allowed), removed when dropped.
pub struct BenchSnapshot {
    store: SnapshotStore,
    pub name: String,
}

impl BenchSnapshot {
    pub async fn make() -> Result<BenchSnapshot> {
        let store = SnapshotStore::default_location();
        let name = format!("voidbox-bench-e2b-{}", std::process::id());
        let _ = store.remove(&name);
        let source = Sandbox::builder()
            .file_root("/home/user")
            .allow_command("*")
            .build()
            .await?;
        source.save_snapshot(&store, &name, &[]).await?;
        Ok(BenchSnapshot { store, name })
    }
}

impl Drop for BenchSnapshot {
    fn drop(&mut self) {
        let _ = self.store.remove(&self.name);
    }
}
