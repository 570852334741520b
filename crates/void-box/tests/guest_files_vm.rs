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
             fs/protected_fifos fs/protected_regular kernel/dmesg_restrict kernel/kptr_restrict; \
             dmesg >/dev/null 2>&1; echo dmesg=$?",
        ))
        .await
        .unwrap();
    assert_eq!(
        out.stdout_text(),
        "1\n1\n1\n1\n1\n2\ndmesg=1\n",
        "{}",
        out.stderr_text()
    );
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_write_leaves_the_old_file_and_no_temporary() {
    let sb = Sandbox::builder().build().await.unwrap();
    sb.write_file("/workspace/keep", b"old\n").await.unwrap();
    // 64 MiB takes seconds under any accelerator's guest; give up at once.
    let big = vec![b'n'; 64 << 20];
    let gave_up = tokio::time::timeout(
        Duration::from_millis(20),
        sb.write_file("/workspace/keep", &big),
    )
    .await;
    assert!(gave_up.is_err(), "the write should still have been running");
    // The guest hears the cancel and removes its half-written file.
    let started = std::time::Instant::now();
    loop {
        let out = sb.exec(Exec::shell("ls -A /workspace")).await.unwrap();
        if !out.stdout_text().contains(".voidbox-write-") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a temporary stayed: {}",
            out.stdout_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sb.read_file("/workspace/keep").await.unwrap(), b"old\n");
    // A finished write replaces the file whole, as the sandbox user's.
    sb.write_file("/workspace/keep", b"new\n").await.unwrap();
    let out = sb
        .exec(Exec::shell(
            "cat /workspace/keep; stat -c %u /workspace/keep",
        ))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "new\n1000\n");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_file_that_is_a_fifo_fails_the_stage_promptly() {
    use serde_json::json;
    use void_box::agent::VoidBox;
    use void_box::llm::{LlmProvider, MockScript, MockTurn};
    use void_box::pipeline::Pipeline;

    // The model plants a FIFO where the stage's output file should be.
    let planter = VoidBox::new("planter")
        .llm(LlmProvider::mock(MockScript::new(vec![
            MockTurn::default().call("bash", json!({"command": "mkfifo /workspace/out.md"})),
            MockTurn::text("done"),
        ])))
        .output_file("out.md")
        .build()
        .unwrap();
    // A boot and two model turns: well under a minute unless something hangs.
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Pipeline::named("fifo", planter).run(),
    )
    .await
    .expect("a stage whose output file is a FIFO hung")
    .unwrap_err();
    assert!(err.cause.contains("not a regular file"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_and_rename_stay_below_the_roots_and_never_follow_a_link_out() {
    let sb = Sandbox::builder().build().await.unwrap();
    let setup = "mkdir -p /workspace/d/a/b /tmp/keep && echo x > /workspace/d/a/b/f \
                 && echo kept > /tmp/keep/f && ln -s /tmp/keep /workspace/d/dir \
                 && ln -s /tmp/keep/f /workspace/d/file && ln -s /etc /workspace/d/etc \
                 && echo moved > /workspace/m && echo t > /tmp/t";
    let out = sb.exec(Exec::shell(setup)).await.unwrap();
    assert_eq!(out.status.code, Some(0), "{}", out.stderr_text());
    let etc = "ls /etc | wc -l";
    let etc_before = sb.exec(Exec::shell(etc)).await.unwrap().stdout_text();

    // A tree with links in it goes; what the links point to stays.
    sb.remove("/workspace/d").await.unwrap();
    let left = sb
        .exec(Exec::shell("ls /workspace; cat /tmp/keep/f"))
        .await
        .unwrap()
        .stdout_text();
    assert_eq!(left, "m\nkept\n");
    assert_eq!(
        sb.exec(Exec::shell(etc)).await.unwrap().stdout_text(),
        etc_before
    );

    sb.rename("/workspace/m", "/workspace/n").await.unwrap();
    assert_eq!(sb.read_file("/workspace/n").await.unwrap(), b"moved\n");
    for (what, result, says) in [
        (
            "a root",
            sb.remove("/workspace").await,
            "below a writable root",
        ),
        (
            "outside",
            sb.remove("/etc/passwd").await,
            "not inside a writable root",
        ),
        (
            "missing",
            sb.remove("/workspace/nothing").await,
            "No such file",
        ),
        (
            "across file systems",
            sb.rename("/tmp/t", "/workspace/t").await,
            "not on one file system",
        ),
        (
            "out of the roots",
            sb.rename("/workspace/n", "/etc/n").await,
            "not inside a writable root",
        ),
        (
            "through a .. ",
            sb.rename("/workspace/n", "/workspace/../etc/n").await,
            "",
        ),
    ] {
        let err = result.expect_err(what).to_string();
        assert!(err.contains(says), "{what}: {err}");
    }
    assert_eq!(sb.read_file("/workspace/n").await.unwrap(), b"moved\n");
    sb.shutdown().await.unwrap();
}
