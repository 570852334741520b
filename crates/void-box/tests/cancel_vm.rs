//! Cancelling a pipeline (dropping its future, as Ctrl-C does in the CLI)
//! tears every VM down: no QEMU process and no runtime directory remain.
//! Its own test binary, because it points TMPDIR at a directory it watches.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use void_box::agent::VoidBox;
use void_box::event::{EventSink, RunEvent};
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::pipeline::Pipeline;

fn sleeper(name: &str) -> VoidBox {
    VoidBox::new(name)
        .llm(LlmProvider::mock(MockScript::new(vec![
            MockTurn::default().call("bash", json!({"command": "sleep 120"})),
            MockTurn::text("never"),
        ])))
        .build()
        .unwrap()
}

/// A process's command name and parent, from `/proc/PID/stat`.
fn comm_and_parent(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let ppid = stat[close + 2..].split(' ').nth(1)?.parse().ok()?;
    Some((stat[open + 1..close].to_string(), ppid))
}

/// QEMU processes this test process started: its children, or the
/// children of the bubblewrap it started QEMU under.
fn qemu_children() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some((comm, ppid)) = comm_and_parent(pid) else {
            continue;
        };
        let ours = ppid == me || comm_and_parent(ppid).is_some_and(|(_, up)| up == me);
        if ours && comm.starts_with("qemu-system") {
            found.push(pid);
        }
    }
    found
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_run_leaves_no_vm_or_temp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("TMPDIR", tmp.path());
    let seed = VoidBox::new("seed")
        .llm(LlmProvider::mock(MockScript::reply("go")))
        .build()
        .unwrap();
    let pipeline = Pipeline::named("doomed", seed)
        .fan_out(vec![sleeper("left"), sleeper("right")])
        .pipe(sleeper("never-started"));
    let (sink, mut rx) = EventSink::channel();
    // Boxed, so that dropping it drops the future itself.
    let mut run = Box::pin(pipeline.run_with(None, sink));

    // Wait until both fan-out boxes are inside their `sleep`.
    let deadline = tokio::time::sleep(Duration::from_secs(90));
    tokio::pin!(deadline);
    let mut sleeping = 0;
    while sleeping < 2 {
        tokio::select! {
            result = &mut run => panic!("the run ended early: {result:?}"),
            _ = &mut deadline => panic!("the boxes never started sleeping"),
            Some(event) = rx.recv() => {
                if matches!(event, RunEvent::ToolCallStarted { .. }) {
                    sleeping += 1;
                }
            }
        }
    }
    // The tool call event comes just before the exec reaches the guest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(qemu_children().len(), 2, "two VMs should be running");
    assert!(
        !entries(tmp.path()).is_empty(),
        "VM runtime dirs should exist"
    );

    let cancelled = Instant::now();
    drop(run);
    while !(qemu_children().is_empty() && entries(tmp.path()).is_empty()) {
        assert!(
            cancelled.elapsed() < Duration::from_secs(5),
            "left behind after cancel: qemu {:?}, files {:?}",
            qemu_children(),
            entries(tmp.path())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("torn down {:?} after cancel", cancelled.elapsed());
}
