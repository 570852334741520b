//! Warm starts in real VMs: snapshots restored with fresh identities,
//! forks of a running sandbox, pause and resume, and the refusals of
//! snapshots that no longer match or are damaged.

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use void_box::sandbox::snapshot::SnapshotStore;
use void_box::{Exec, Sandbox, SandboxConfig};

/// Every test of this binary keeps its snapshots and paused sandboxes in
/// one directory of its own under the target directory.
fn data_dir() -> PathBuf {
    static SET: Once = Once::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("snapshot_vm-{}", std::process::id()));
    SET.call_once(|| {
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY of the environment: set once, before any sandbox of this
        // process reads it.
        std::env::set_var("VOIDBOX_DATA_DIR", &dir);
    });
    dir
}

fn store() -> SnapshotStore {
    SnapshotStore::at(data_dir().join("snapshots"))
}

async fn run(sandbox: &Sandbox, script: &str) -> String {
    let out = sandbox
        .exec(Exec::shell(script).timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}`: {}{}",
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_restores_of_one_snapshot_answer_each_as_itself() {
    let store = store();
    let source = Sandbox::builder().memory_mb(256).build().await.unwrap();
    run(&source, "echo before > /workspace/marker").await;
    let made = source
        .save_snapshot(
            &store,
            "two-restores",
            &["echo before > /workspace/marker".into()],
        )
        .await
        .unwrap();
    eprintln!(
        "snapshot: {} bytes of state, {} on disk",
        made.snapshot.state_bytes, made.disk_bytes
    );
    let config = |n: &str| SandboxConfig {
        hostname: n.into(),
        ..SandboxConfig::default()
            .snapshot("two-restores")
            .env("WHO", n)
    };
    let (ca, cb) = (config("copy-a"), config("copy-b"));
    let (a, b) = tokio::join!(ca.build(), cb.build());
    let (a, b) = (a.unwrap(), b.unwrap());
    for (sb, name) in [(&a, "copy-a"), (&b, "copy-b")] {
        assert_eq!(run(sb, "cat /workspace/marker").await, "before\n");
        assert_eq!(
            run(sb, "echo $WHO; hostname").await,
            format!("{name}\n{name}\n")
        );
    }
    let random = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    let (ra, rb) = (run(&a, random).await, run(&b, random).await);
    assert_eq!(ra.len(), 64, "{ra}");
    assert_ne!(ra, rb, "two restores share their random stream");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
