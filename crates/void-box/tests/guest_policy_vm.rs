//! What holds inside the guest against a hostile command (issue 11, item
//! 4): the system-call filter and the kernel without user namespaces, the
//! control groups that kill everything an exec started and cap what all
//! commands may use together. Each test is an attack on a real VM.

use std::time::{Duration, Instant};

use void_box::{Exec, Sandbox};

async fn sh(sb: &Sandbox, script: &str) -> void_box::Output {
    sb.exec(Exec::shell(script)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn user_namespaces_and_mounts_are_out_of_reach_even_for_root() {
    // Root in the guest has every capability; only the filter stops it.
    let sb = Sandbox::builder().user("root").build().await.unwrap();
    let out = sh(
        &sb,
        "id -u; unshare -U true; echo userns=$?; \
         mkdir -p /tmp/mnt; mount -t tmpfs none /tmp/mnt; echo mount=$?; \
         test -e /proc/self/ns/user; echo ns_user_file=$?",
    )
    .await;
    let stdout = out.stdout_text();
    let stderr = out.stderr_text();
    assert!(stdout.starts_with("0\n"), "runs as root: {stdout}");
    // unshare(CLONE_NEWUSER) and mount(2) are denied.
    assert!(stdout.contains("userns=1"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("mount=0"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Operation not permitted"),
        "the filter's EPERM: {stderr}"
    );
    // The kernel has no user namespaces at all (no /proc/self/ns/user).
    assert!(stdout.contains("ns_user_file=1"), "{stdout}");
    // No new privileges: the flag is set on every command.
    let status = sh(&sb, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status").await;
    assert_eq!(
        status.stdout_text(),
        "NoNewPrivs:\t1\nSeccomp:\t2\n",
        "{}",
        status.stderr_text()
    );
    sb.shutdown().await.unwrap();
}

/// Whether a `sleep 100N` (N one of `digits`) is alive. The brackets
/// keep the pattern from matching the shell that runs the search itself.
async fn running(sb: &Sandbox, digits: &str) -> bool {
    let out = sh(sb, &format!("ps | grep -c '[s]leep 100[{digits}]'")).await;
    out.stdout_text().trim() != "0"
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_processes_that_left_the_session() {
    let sb = Sandbox::builder().build().await.unwrap();
    let out = sb
        .exec(
            Exec::shell("setsid sleep 1001 & setsid sh -c 'sleep 1002' & sleep 60")
                .timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert!(out.status.timed_out, "{:?}", out.status);
    // cgroup.kill is asynchronous; give the kernel a moment.
    let started = Instant::now();
    while running(&sb, "12").await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a setsid child outlived its exec's timeout"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Cancel kills them too.
    let stream = sb
        .exec_stream(Exec::shell("setsid sleep 1003 & sleep 60"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(running(&sb, "3").await, "the daemon started");
    stream.cancel().unwrap();
    stream.collect().await.unwrap();
    let started = Instant::now();
    while running(&sb, "3").await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cancel left a setsid child"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A normal exit ends the process group only: a daemon that started a
    // session of its own is meant to live on (once it has called setsid:
    // until then it is in the leader's group).
    let out = sh(
        &sb,
        "setsid sleep 1004 >/dev/null 2>&1 </dev/null & sleep 1; echo started",
    )
    .await;
    assert_eq!(out.stdout_text(), "started\n");
    assert!(running(&sb, "4").await, "the daemon lives on");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_share_a_memory_and_task_cap_and_an_oom_kills_only_the_hog() {
    let sb = Sandbox::builder().memory_mb(256).build().await.unwrap();
    let limits = sh(
        &sb,
        "cat /sys/fs/cgroup/sandbox/memory.max /sys/fs/cgroup/sandbox/pids.max; \
         grep MemTotal /proc/meminfo",
    )
    .await;
    let text = limits.stdout_text();
    let mut lines = text.lines();
    let memory_max: u64 = lines.next().unwrap().parse().unwrap();
    assert_eq!(lines.next(), Some("4096"), "{text}");
    let total_kib: u64 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(memory_max < total_kib * 1024, "{text}");

    // 100 KB strings, one after another, until the group's cap.
    let hog = sb
        .exec(
            Exec::new("awk")
                .arg("BEGIN { s = sprintf(\"%0100000d\", 0); while (1) a[i++] = s i }")
                .timeout(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    assert_eq!(
        hog.status.signal,
        Some(9),
        "killed by the OOM killer: {:?}",
        hog.status
    );
    let events = sh(
        &sb,
        "grep -E '^oom_kill ' /sys/fs/cgroup/sandbox/memory.events",
    )
    .await;
    let kills: u64 = events
        .stdout_text()
        .trim()
        .strip_prefix("oom_kill ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(kills >= 1, "{}", events.stdout_text());
    // The agent, outside the group, serves on.
    sb.write_file("/workspace/after", b"fine").await.unwrap();
    assert_eq!(sb.read_file("/workspace/after").await.unwrap(), b"fine");
    sb.shutdown().await.unwrap();
}
