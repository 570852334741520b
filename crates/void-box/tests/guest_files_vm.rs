//! The file API against what a hostile command can plant under its roots:
//! FIFOs that would stall the agent, hard links that would make root write
//! another file, and the kernel settings that back them (issue 11, item 4).

use std::time::Duration;

use void_box::{Exec, Sandbox};

/// Fails the test if `call` takes longer than a stalled agent would allow.
async fn promptly<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test(flavor = "multi_thread")]
async fn fifos_and_hard_links_under_workspace_are_refused_and_the_agent_stays_up() {
    let sb = Sandbox::builder().build().await.unwrap();
    let setup =
        "mkfifo /workspace/pipe && echo mine > /workspace/a && ln /workspace/a /workspace/b \
                 && (ln /etc/passwd /workspace/pw 2>&1 || true)";
    let out = sb.exec(Exec::shell(setup)).await.unwrap();
    assert_eq!(out.status.code, Some(0), "{}", out.stderr_text());
    // protected_hardlinks: uid 1000 may not link a file it does not own.
    assert!(
        out.stdout_text().contains("Operation not permitted"),
        "{}",
        out.stdout_text()
    );

    let err = promptly("read of a FIFO", sb.read_file("/workspace/pipe"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let err = promptly("write to a FIFO", sb.write_file("/workspace/pipe", b"x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pipe"), "{err}");
    // With a reader waiting on it, the FIFO opens, and is still refused.
    let reader = sb
        .exec_stream(Exec::shell("cat /workspace/pipe"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = promptly(
        "write to a read FIFO",
        sb.write_file("/workspace/pipe", b"x"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a regular file"), "{err}");
    drop(reader);

    let err = promptly(
        "write to a hard link",
        sb.write_file("/workspace/b", b"overwritten"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("hard links"), "{err}");
    // Neither name was touched.
    assert_eq!(sb.read_file("/workspace/a").await.unwrap(), b"mine\n");

    // The agent still serves everything else.
    sb.write_file("/workspace/fresh", b"ok").await.unwrap();
    assert_eq!(sb.read_file("/workspace/fresh").await.unwrap(), b"ok");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_sets_its_hardening_sysctls_at_boot() {
    let sb = Sandbox::builder().build().await.unwrap();
    let out = sb
        .exec(Exec::shell(
            "cd /proc/sys && cat fs/protected_hardlinks fs/protected_symlinks \
             fs/protected_fifos kernel/dmesg_restrict kernel/kptr_restrict; dmesg >/dev/null 2>&1; echo dmesg=$?",
        ))
        .await
        .unwrap();
    assert_eq!(
        out.stdout_text(),
        "1\n1\n1\n1\n2\ndmesg=1\n",
        "{}",
        out.stderr_text()
    );
    sb.shutdown().await.unwrap();
}
