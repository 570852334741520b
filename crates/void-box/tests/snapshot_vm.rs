//! Warm starts in real VMs: snapshots restored with fresh identities,
//! forks of a running sandbox, pause and resume, and the refusals of
//! snapshots that no longer match or are damaged.

mod common;

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use common::raw::{guest_config, raw_vm};
use void_box::sandbox::snapshot::{SnapshotError, SnapshotStore};
use void_box::sandbox::GuestImage;
use void_box::{Error, Exec, Sandbox, SandboxConfig};
use void_box_protocol::{GuestMsg, HostMsg, Restore};

/// Tests that count the machine's QEMU processes and runtime directories
/// take this exclusively; the others share it.
static VMS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

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
    let _vms = VMS.read().await;
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
    // Zero pages are not stored: the snapshot takes about what the guest
    // used, not its RAM.
    assert!(
        made.disk_bytes < (128 << 20),
        "a 256 MiB guest's snapshot takes {} bytes",
        made.disk_bytes
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

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_copies_a_running_sandbox_and_the_copies_diverge() {
    let _vms = VMS.read().await;
    data_dir();
    let parent = Sandbox::builder().memory_mb(256).build().await.unwrap();
    run(&parent, "echo shared > /workspace/a").await;
    let children = parent.fork(2, &SandboxConfig::default()).await.unwrap();
    assert_eq!(children.len(), 2);
    for child in &children {
        assert_eq!(run(child, "cat /workspace/a").await, "shared\n");
    }
    run(&children[0], "echo mine > /workspace/b").await;
    let seen = "ls /workspace";
    assert_eq!(run(&children[0], seen).await, "a\nb\n");
    assert_eq!(run(&children[1], seen).await, "a\n");
    // The parent goes on, untouched by its copies.
    assert_eq!(run(&parent, seen).await, "a\n");
    run(&parent, "echo parent > /workspace/c").await;
    assert_eq!(run(&children[1], seen).await, "a\n");
    let random = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    let (r0, r1, rp) = (
        run(&children[0], random).await,
        run(&children[1], random).await,
        run(&parent, random).await,
    );
    assert!(
        r0 != r1 && r0 != rp && r1 != rp,
        "copies share a random stream"
    );
    for child in children {
        child.shutdown().await.unwrap();
    }
    parent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_sandbox_resumes_with_its_processes_running() {
    let _vms = VMS.read().await;
    let data = data_dir();
    let sandbox = Sandbox::builder().memory_mb(256).build().await.unwrap();
    // A process that outlives the command that started it, counting.
    run(
        &sandbox,
        "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done' \
         </dev/null >/dev/null 2>&1 & sleep 0.5; cat /tmp/count",
    )
    .await;
    let before: u64 = run(&sandbox, "cat /tmp/count")
        .await
        .trim()
        .parse()
        .unwrap();
    let id = sandbox.pause().await.unwrap();
    let paused = data.join("paused").join(&id);
    assert!(paused.join("memory").is_file(), "{}", paused.display());
    let resumed = Sandbox::resume(&id, &SandboxConfig::default())
        .await
        .unwrap();
    let at_resume: u64 = run(&resumed, "cat /tmp/count")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(at_resume >= before, "{at_resume} < {before}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later: u64 = run(&resumed, "cat /tmp/count")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(
        later > at_resume,
        "the process stopped: {later} after {at_resume}"
    );
    assert!(!paused.exists(), "the paused files outlived the resume");
    assert!(Sandbox::resume(&id, &SandboxConfig::default())
        .await
        .is_err());
    resumed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_restore_gets_its_own_secret_and_the_saved_one_is_refused() {
    let _vms = VMS.read().await;
    let saved_secret = [1u8; 32];
    let (vm, mut raw) = raw_vm(&saved_secret, None).await;
    assert!(raw.handshake(&saved_secret).await);
    // Quiesced, the agent answers and then sends nothing: the VM is saved
    // between two frames.
    raw.send(1, HostMsg::Quiesce).await;
    assert!(matches!(
        raw.frame().await.map(|f| f.msg),
        Some(GuestMsg::Done)
    ));
    let dir = tempfile::tempdir().unwrap();
    let state = vm.save(dir.path()).await.unwrap();
    vm.kill();

    for new_secret in [[2u8; 32], [3u8; 32]] {
        let (copy, mut raw) = raw_vm(&new_secret, Some(state.clone())).await;
        copy.resume().await.unwrap();
        let restore = Restore {
            config: guest_config(&new_secret),
            unix_time_ns: 1_800_000_000_000_000_000,
            entropy: new_secret,
        };
        raw.send(0, HostMsg::Restored(Box::new(restore))).await;
        // The saved VM's secret, and the other copy's, are refused.
        assert!(
            !raw.handshake(&saved_secret).await,
            "the saved secret was taken"
        );
        assert!(!raw.handshake(&[2u8 ^ 3 ^ new_secret[0]; 32]).await);
        assert!(
            raw.handshake(&new_secret).await,
            "the new secret was refused"
        );
        copy.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_whose_kernel_changed_or_whose_state_is_damaged_is_refused_and_leaves_nothing() {
    let _vms = VMS.write().await;
    let store = store();
    let source = Sandbox::builder().memory_mb(256).build().await.unwrap();
    let made = source.save_snapshot(&store, "refusals", &[]).await.unwrap();
    let before = leftovers();

    // Another kernel, or another guest initramfs (a rebuilt agent), than
    // it was made with.
    let image = GuestImage::resolve().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (which, says) in [
        ("kernel", "another kernel"),
        ("initramfs", "another guest initramfs"),
    ] {
        let mut other = image.clone();
        let file = if which == "kernel" {
            &mut other.kernel
        } else {
            &mut other.initramfs
        };
        let mut bytes = std::fs::read(&*file).unwrap();
        bytes.extend_from_slice(&[0; 512]);
        *file = dir.path().join(which);
        std::fs::write(&*file, bytes).unwrap();
        let config = SandboxConfig {
            boot: Some(other),
            ..SandboxConfig::default().snapshot("refusals")
        };
        let err = config.build().await.err().expect("refused");
        assert!(
            matches!(&err, Error::Snapshot(SnapshotError::Stale { .. }))
                && err.to_string().contains(says),
            "{err}"
        );
    }

    // A flipped byte in the guest's RAM: caught by the hash before the VM
    // runs.
    let memory = made.dir.join("memory");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&memory)
        .unwrap();
    let middle = file.metadata().unwrap().len() / 2;
    let mut byte = [0u8];
    use std::os::unix::fs::FileExt;
    file.read_exact_at(&mut byte, middle).unwrap();
    file.write_all_at(&[byte[0] ^ 0x55], middle).unwrap();
    let err = SandboxConfig::default()
        .snapshot("refusals")
        .build()
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("damaged") || err.to_string().contains("refused the saved"),
        "{err}"
    );
    // Cut short: refused before QEMU starts.
    file.set_len(middle).unwrap();
    let err = SandboxConfig::default()
        .snapshot("refusals")
        .build()
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Snapshot(SnapshotError::Damaged { .. })),
        "{err}"
    );
    assert_eq!(
        leftovers(),
        before,
        "a refused restore left something behind"
    );
    store.remove("refusals").unwrap();
}

/// This process's QEMU processes and runtime directories.
fn leftovers() -> (usize, usize) {
    let me = std::process::id().to_string();
    let qemus = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
        })
        .count();
    let dirs = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().starts_with("voidbox-"))
        .filter(|d| {
            std::fs::read_to_string(d.path().join("owner"))
                .is_ok_and(|o| o.split_whitespace().next() == Some(me.as_str()))
        })
        .count();
    (qemus, dirs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_hands_each_restored_sandbox_out_once_and_refills() {
    let _vms = VMS.read().await;
    let store = store();
    let source = Sandbox::builder().memory_mb(256).build().await.unwrap();
    source.save_snapshot(&store, "pooled", &[]).await.unwrap();
    let pool = void_box::sandbox::SandboxPool::new(2);
    let config = SandboxConfig::default().snapshot("pooled");
    pool.warm(&config);
    let mut ids = std::collections::HashSet::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let sandbox = pool.acquire(&config).await.unwrap();
        assert!(
            ids.insert(sandbox.id()),
            "{} handed out twice",
            sandbox.id()
        );
        assert_eq!(run(&sandbox, "echo ok").await, "ok\n");
        held.push(sandbox);
    }
    let refilled = std::time::Instant::now();
    while pool.status(&config).ready < 2 {
        assert!(
            refilled.elapsed() < Duration::from_secs(60),
            "{:?}",
            pool.status(&config)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for sandbox in held {
        sandbox.shutdown().await.unwrap();
    }
}
