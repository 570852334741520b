//! The official E2B SDKs, unmodified (PyPI `e2b` and npm `e2b`, pinned by
//! `scripts/install-e2b-sdks.sh`), against a daemon booting real VMs from
//! an image pulled off a registry on loopback: each SDK runs a script of
//! every call docs/e2b.md lists (tests/e2b/probe.py, probe.mjs), which
//! exits non-zero on the first call that misbehaves.

mod common;
#[path = "../../void-box/tests/common/registry.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::Daemon;
use registry::TestRegistry;
use void_box::sandbox::VmProvider;

/// A token in E2B's own form (`e2b_` + hex), which older SDKs insist on.
const E2B_TOKEN: &str = "e2b_0123456789abcdef0123456789abcdef01234567";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `program script` with the SDK pointed at `daemon`; its output,
/// after checking it ended well.
async fn probe(program: &Path, script: &str, daemon: &Daemon, template: &str) -> String {
    assert!(
        program.exists(),
        "{} is missing: run scripts/install-e2b-sdks.sh (scripts/setup.sh --with-test-tools does)",
        program.display()
    );
    let script = repo().join("crates/voidbox-server/tests/e2b").join(script);
    let mut command = tokio::process::Command::new(program);
    command
        .arg(&script)
        .env("E2B_API_URL", &daemon.base)
        .env("E2B_SANDBOX_URL", &daemon.base)
        .env("E2B_API_KEY", E2B_TOKEN)
        .env("VOIDBOX_E2B_TEMPLATE", template)
        .env(
            "E2B_NODE_MODULES",
            repo().join("target/e2b-sdk/node/node_modules"),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("the probe ends within 10 minutes")
        .expect("the probe starts");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_e2b_sdks_run_every_call_against_the_daemon() {
    let registry = TestRegistry::start();
    registry.push("python", "latest", "python");
    let image = registry.reference("python:latest");
    let alias = image.clone();
    let daemon = Daemon::start_with(Arc::new(VmProvider), move |config| {
        config.token = Some(E2B_TOKEN.into());
        config.max_sandboxes = 4;
        config.e2b.templates.insert("python".into(), alias);
    })
    .await;

    // Python by the image's reference, JavaScript by the daemon's alias.
    let python = repo().join("target/e2b-sdk/venv/bin/python");
    let said = probe(&python, "probe.py", &daemon, &image).await;
    for call in [
        "ok commands.run timeout",
        "ok commands.kill(pid)",
        "ok files.watch_dir",
        "ok Sandbox.connect(id)",
        "ok AsyncSandbox",
    ] {
        assert!(said.contains(call), "python: no `{call}` in\n{said}");
    }
    let node = PathBuf::from("node");
    let node = which(&node);
    let said = probe(&node, "probe.mjs", &daemon, "python").await;
    for call in [
        "ok commands.closeStdin",
        "ok files.watchDir",
        "ok Sandbox.list",
    ] {
        assert!(said.contains(call), "js: no `{call}` in\n{said}");
    }
    let left = daemon
        .anonymous(reqwest::Method::GET, "/v1/sandboxes")
        .bearer_auth(E2B_TOKEN)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        left,
        serde_json::json!([]),
        "the probes killed what they made"
    );
    daemon.stop().await;
}

/// `program` as found on PATH.
fn which(program: &Path) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.to_path_buf())
}
