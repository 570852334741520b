//! `voidbox snapshot` and `exec --snapshot` with real VMs: a snapshot made
//! with set-up commands, listed, started from; a `voidbox` killed while it
//! restores takes its VM along and its files are swept; a damaged snapshot
//! is refused, listed as such and pruned.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

mod common;

use common::{processes_using, runtime_dirs};

/// `voidbox` with its own data directory (snapshots) and runtime
/// directories under `tmp`.
fn voidbox(data: &Path, tmp: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voidbox"));
    cmd.env("VOIDBOX_DATA_DIR", data).env("TMPDIR", tmp);
    cmd
}

fn ok(out: Output) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    stdout
}

#[test]
fn snapshots_are_made_listed_used_and_a_killed_restore_leaves_nothing() {
    let data = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let vb = || voidbox(data.path(), tmp.path());

    let made = ok(vb()
        .args(["snapshot", "create", "base", "--memory-mb", "256"])
        .args(["--setup", "echo prepared > /workspace/state"])
        .output()
        .unwrap());
    assert!(made.starts_with("created base:"), "{made}");
    let listed = ok(vb().args(["snapshot", "ls"]).output().unwrap());
    let row = listed
        .lines()
        .find(|l| l.starts_with("base "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.contains("256 MiB") && row.trim_end().ends_with("ok"),
        "{row}"
    );
    let out = ok(vb()
        .args([
            "exec",
            "--snapshot",
            "base",
            "--",
            "cat",
            "/workspace/state",
        ])
        .output()
        .unwrap());
    assert_eq!(out, "prepared\n");
    // The name is taken: refused before anything boots.
    let again = vb().args(["snapshot", "create", "base"]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    // Killed while it restores: QEMU goes with it, and the next start
    // sweeps what it left.
    let mut child = vb()
        .args(["exec", "--snapshot", "base", "--", "sleep", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (dir, vmm) = loop {
        assert!(started.elapsed() < Duration::from_secs(30), "no VM started");
        if let Some(dir) = runtime_dirs(tmp.path()).pop() {
            let vmm = processes_using(&dir);
            if !vmm.is_empty() {
                break (dir, vmm);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), Signal::KILL).unwrap();
    child.wait().unwrap();
    // QEMU dies with voidbox; one that a kill caught before its wrapper
    // had armed its death signal is ended by the next start's sweep. Either
    // way, after the next start nothing of the killed VM runs.
    ok(vb()
        .args(["exec", "--snapshot", "base", "--", "true"])
        .output()
        .unwrap());
    assert!(!dir.exists(), "the next start swept {}", dir.display());
    assert!(runtime_dirs(tmp.path()).is_empty());
    let gone = Instant::now();
    while let Some(pid) = vmm
        .iter()
        .chain(&processes_using(&dir))
        .find(|pid| running(**pid))
    {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "process {pid} of the killed VM runs on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Damaged: refused with the reason, listed so, pruned.
    let memory = data.path().join("snapshots/base/memory");
    let len = std::fs::metadata(&memory).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&memory)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let refused = vb()
        .args(["exec", "--snapshot", "base", "--", "true"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("damaged") && why.contains("cut short"),
        "{why}"
    );
    let listed = ok(vb().args(["snapshot", "ls"]).output().unwrap());
    assert!(listed.contains("damaged"), "{listed}");
    let pruned = ok(vb().args(["snapshot", "prune"]).output().unwrap());
    assert!(pruned.starts_with("removed base"), "{pruned}");
    let listed = ok(vb().args(["snapshot", "ls"]).output().unwrap());
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");
    assert!(runtime_dirs(tmp.path()).is_empty());
}

/// Whether `pid` is a process that runs (not gone, not a zombie waiting
/// for its parent to reap it).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}
