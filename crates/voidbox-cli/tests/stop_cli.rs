//! How `voidbox` ends when it is told to (SIGTERM, SIGHUP) or killed
//! outright (SIGKILL), with real VMs: no QEMU outlives it, and what a
//! killed process could not clean up is swept by the next one.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

mod common;

use common::{processes_using, runtime_dirs};

/// `voidbox exec` of a command that prints `ready` and then sleeps, with
/// its runtime directories under `tmp`; returns once `ready` is printed.
fn start_sleeper(tmp: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_voidbox"))
        .args(["exec", "--", "sh", "-c", "echo ready; sleep 600"])
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "{what} within {deadline:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, signal: Signal) {
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), signal).unwrap();
}

#[test]
fn sigterm_and_sighup_stop_a_run_like_ctrl_c() {
    for (sig, name) in [(Signal::TERM, "SIGTERM"), (Signal::HUP, "SIGHUP")] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = start_sleeper(tmp.path());
        let dirs = runtime_dirs(tmp.path());
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        let vmm = processes_using(&dirs[0]);
        assert!(!vmm.is_empty(), "QEMU runs");

        signal(&child, sig);
        let started = Instant::now();
        let status = child.wait().unwrap();
        // Handled, not the default death: the exit is ours.
        assert!(status.code().is_some(), "{name}: {status}");
        assert!(started.elapsed() < Duration::from_secs(15), "{name}");
        assert!(
            runtime_dirs(tmp.path()).is_empty(),
            "{name} left its directory"
        );
        for pid in vmm {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "{name}: pid {pid} outlived voidbox"
            );
        }
    }
}

#[test]
fn a_killed_voidbox_takes_its_vm_along_and_the_next_start_sweeps_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = start_sleeper(tmp.path());
    let dirs = runtime_dirs(tmp.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let stale = dirs[0].clone();
    let vmm = processes_using(&stale);
    assert!(!vmm.is_empty(), "QEMU runs");

    // SIGKILL: nothing of ours runs any more; the death signal chain does.
    signal(&child, Signal::KILL);
    child.wait().unwrap();
    wait_until("QEMU dies with voidbox", Duration::from_secs(10), || {
        vmm.iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    assert!(stale.exists(), "nothing removed the directory (yet)");

    let out = Command::new(env!("CARGO_BIN_EXE_voidbox"))
        .args(["exec", "--", "true"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stale.exists(), "the next start swept {}", stale.display());
    assert!(runtime_dirs(tmp.path()).is_empty());
}
