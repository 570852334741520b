//! A VMM wrapper that never reports its pids fails the launch within its
//! deadline and is killed, while the host process lives on. Its own test
//! binary: it points VOIDBOX_BWRAP at a stand-in for the whole process.

use std::time::{Duration, Instant};

use void_box::Sandbox;

/// Processes whose command line is exactly `argv` (NUL-separated).
fn running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrapper_that_never_reports_is_killed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("bwrap");
    // Takes the arguments, reports nothing, never exits on its own.
    std::fs::write(&wrapper, "#!/bin/sh\nexec sleep 611.777\n").unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // Before any thread of ours reads the environment.
    std::env::set_var("VOIDBOX_BWRAP", &wrapper);

    let started = Instant::now();
    let err = match Sandbox::builder().build().await {
        Ok(_) => panic!("booted through a wrapper that runs nothing"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("did not start within"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let sleeper = ["sleep", "611.777"];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !running(&sleeper).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the wrapper outlived its failed launch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
