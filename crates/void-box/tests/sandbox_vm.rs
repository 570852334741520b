//! End-to-end tests of the sandbox core with real VMs (TCG on machines
//! without hardware virtualization). They need the guest image: run
//! `voidbox image build` first (the README's test command does).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::raw::{hello, raw_vm};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use void_box::{Error, ErrorKind, Exec, ExecEvent, ResourceLimits, Sandbox};
use void_box_protocol::{GuestMsg, HostMsg};

mod common;

async fn sandbox() -> Sandbox {
    Sandbox::builder()
        .build()
        .await
        .expect("sandbox boots (is the guest image built? `voidbox image build`)")
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Asserts that none of the sandbox's host processes or files remain.
fn assert_nothing_left(pids: &[u32], dir: &Path) {
    for pid in pids {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        assert!(
            !proc_dir.exists(),
            "host process {pid} outlived its sandbox"
        );
    }
    assert!(!dir.exists(), "{} outlived its sandbox", dir.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_and_signals() {
    let sb = sandbox().await;
    let ok = sb.exec("true").await.unwrap();
    assert_eq!((ok.status.code, ok.status.signal), (Some(0), None));
    let seven = sb
        .exec(Exec::shell("echo out; echo err >&2; exit 7"))
        .await
        .unwrap();
    assert_eq!(seven.status.code, Some(7));
    assert_eq!(seven.stdout_text(), "out\n");
    assert_eq!(seven.stderr_text(), "err\n");
    let killed = sb.exec(Exec::shell("kill -TERM $$")).await.unwrap();
    assert_eq!((killed.status.code, killed.status.signal), (None, Some(15)));
    let who = sb.exec(["id", "-u"]).await.unwrap();
    assert_eq!(
        who.stdout_text().trim(),
        "1000",
        "commands run unprivileged"
    );
    // `env` is allowed, /workspace/env does not exist.
    let missing = sb.exec(Exec::new("/workspace/env")).await.unwrap_err();
    assert_eq!(missing.guest_kind(), Some(ErrorKind::NotFound), "{missing}");
    let no_dir = sb
        .exec(Exec::new("true").cwd("/nowhere"))
        .await
        .unwrap_err();
    assert_eq!(no_dir.guest_kind(), Some(ErrorKind::NotFound), "{no_dir}");
    // A script without `#!` runs under /bin/sh, as with execvp.
    sb.write_file_mode("/workspace/env", b"echo script $1\n", 0o755)
        .await
        .unwrap();
    let script = sb
        .exec(Exec::new("/workspace/env").arg("arg"))
        .await
        .unwrap();
    assert_eq!(script.stdout_text(), "script arg\n");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_round_trip_10_mib() {
    let sb = sandbox().await;
    let data = random_bytes(10 << 20);
    let out = sb
        .exec(Exec::new("cat").stdin_bytes(data.clone()))
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256_hex(&out.stdout), sha256_hex(&data));
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_50_mib_streams_with_matching_checksum() {
    let sb = sandbox().await;
    let made = sb
        .exec(Exec::shell(
            "head -c 52428800 /dev/urandom > /tmp/big && sha256sum /tmp/big",
        ))
        .await
        .unwrap();
    assert!(made.status.success(), "{}", made.stderr_text());
    let guest_sum = made
        .stdout_text()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let mut stream = sb
        .exec_stream(Exec::new("cat").arg("/tmp/big"))
        .await
        .unwrap();
    let mut hasher = Sha256::new();
    let (mut total, mut chunks) = (0usize, 0usize);
    let status = loop {
        match stream.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(d) => {
                total += d.len();
                chunks += 1;
                hasher.update(&d);
            }
            ExecEvent::Stderr(d) => panic!("stderr: {}", String::from_utf8_lossy(&d)),
            ExecEvent::Exit(status) => break status,
        }
    };
    assert!(status.success());
    assert_eq!(total, 50 << 20);
    assert!(
        chunks >= 50 * 16,
        "output arrived in {chunks} chunks: not streamed"
    );
    assert_eq!(hex::encode(hasher.finalize()), guest_sum);
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_execs_while_a_long_sleep_runs() {
    let sb = sandbox().await;
    let mut sleeper = sb.exec_stream(Exec::new("sleep").arg("60")).await.unwrap();
    let started = Instant::now();
    let runs = (0..8).map(|i| {
        let sb = &sb;
        async move { sb.exec(Exec::shell(format!("echo job-{i}"))).await }
    });
    let outputs = futures::future::join_all(runs).await;
    for (i, out) in outputs.into_iter().enumerate() {
        let out = out.unwrap();
        assert_eq!(out.stdout_text(), format!("job-{i}\n"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "execs were blocked by the sleep"
    );
    sleeper.cancel().unwrap();
    match sleeper.next().await.unwrap().unwrap() {
        ExecEvent::Exit(status) => {
            assert!(status.cancelled);
            assert_eq!(status.signal, Some(9));
        }
        other => panic!("unexpected {other:?}"),
    }
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_kills_the_whole_process_group() {
    let sb = sandbox().await;
    let started = Instant::now();
    let out = sb
        .exec(
            Exec::shell("sleep 300 & sleep 301 & echo started; wait")
                .timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert!(out.status.timed_out, "{:?}", out.status);
    assert_eq!(out.stdout_text(), "started\n");
    assert!(started.elapsed() < Duration::from_secs(15));
    let ps = sb
        .exec(Exec::shell("ps -o args | grep -c '^sleep 30[01]' || true"))
        .await
        .unwrap();
    assert_eq!(
        ps.stdout_text().trim(),
        "0",
        "children of a timed-out command survived"
    );
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn allowlist_rejects_with_the_command_name() {
    let sb = Sandbox::builder()
        .allowed_commands(["sh", "echo"])
        .build()
        .await
        .unwrap();
    assert!(sb.exec(["echo", "allowed"]).await.unwrap().status.success());
    let err = sb.exec(["cat", "/etc/passwd"]).await.unwrap_err();
    match err {
        Error::Guest { kind, message } => {
            assert_eq!(kind, ErrorKind::NotAllowed);
            assert!(message.contains("`cat`"), "{message}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_secret_and_unauthenticated_requests_are_refused() {
    // A VM of our own, with a secret we know, driven by hand on the
    // agent's one channel.
    let secret = [7u8; 32];
    let (vm, mut raw) = raw_vm(&secret, None).await;

    // The agent speaks first: a fresh nonce every time.
    let nonce = raw.challenge().await;
    // A proof made without the secret: refused, and a new challenge.
    raw.send(0, hello(&[0x42; 32], &nonce)).await;
    match raw.frame().await.map(|f| f.msg) {
        Some(GuestMsg::Error(e)) => assert_eq!(e.kind, ErrorKind::Unauthenticated),
        other => panic!("wrong secret accepted: {other:?}"),
    }
    let nonce2 = raw.challenge().await;
    assert_ne!(nonce, nonce2);
    // A request before the handshake: refused.
    let exec = HostMsg::Exec(void_box_protocol::ExecRequest {
        program: "true".into(),
        ..Default::default()
    });
    raw.send(1, exec.clone()).await;
    match raw.frame().await.map(|f| f.msg) {
        Some(GuestMsg::Error(e)) => assert_eq!(e.kind, ErrorKind::Unauthenticated),
        other => panic!("request before handshake served: {other:?}"),
    }
    // Garbage instead of a frame: refused, and the agent keeps serving.
    let nonce3 = raw.challenge().await;
    assert_ne!(nonce2, nonce3);
    raw.conn.write_all(&[0xff; 64]).await.unwrap();
    let nonce4 = raw.challenge().await;
    // The right secret opens a session that serves.
    raw.send(0, hello(&secret, &nonce4)).await;
    assert!(matches!(
        raw.frame().await.map(|f| f.msg),
        Some(GuestMsg::HelloOk { .. })
    ));
    raw.send(1, exec).await;
    assert!(matches!(
        raw.frame().await.map(|f| f.msg),
        Some(GuestMsg::Started { .. })
    ));
    vm.kill();

    // The secret is gone from the guest before any command runs, and it
    // never was on the kernel command line.
    let sb = sandbox().await;
    let root = sb.exec(["ls", "-a", "/"]).await.unwrap().stdout_text();
    assert!(
        !root.contains(".voidbox"),
        "guest config still present:\n{root}"
    );
    let cmdline = sb
        .exec(["cat", "/proc/cmdline"])
        .await
        .unwrap()
        .stdout_text();
    assert!(cmdline.contains("rdinit=/init"), "{cmdline}");
    assert!(!cmdline.contains("secret"), "{cmdline}");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn file_20_mib_write_read_and_metadata() {
    let sb = sandbox().await;
    let data = random_bytes(20 << 20);
    sb.write_file("/workspace/data/blob.bin", &data)
        .await
        .unwrap();
    let back = sb.read_file("/workspace/data/blob.bin").await.unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    let guest_sum = sb
        .exec(["sha256sum", "/workspace/data/blob.bin"])
        .await
        .unwrap();
    assert!(guest_sum.stdout_text().starts_with(&sha256_hex(&data)));

    let st = sb.stat("/workspace/data/blob.bin").await.unwrap();
    assert_eq!(st.size, data.len() as u64);
    assert_eq!(
        st.uid, 1000,
        "files written by the host belong to the sandbox user"
    );
    sb.mkdir("/tmp/a/b/c").await.unwrap();
    sb.write_file("/tmp/a/b/c/x.txt", b"x").await.unwrap();
    let names: Vec<_> = sb
        .list("/tmp/a/b/c")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["x.txt"]);
    let empty = sb.read_file("/tmp/a/b/c/x.txt").await.unwrap();
    assert_eq!(empty, b"x");
    let missing = sb.read_file("/workspace/missing").await.unwrap_err();
    assert_eq!(missing.guest_kind(), Some(ErrorKind::NotFound), "{missing}");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn path_escapes_are_refused() {
    let sb = sandbox().await;
    let setup = sb
        .exec(Exec::shell("ln -s /etc /workspace/abs && ln -s ../../etc /workspace/rel && ln -s /etc/passwd /tmp/pw"))
        .await
        .unwrap();
    assert!(setup.status.success(), "{}", setup.stderr_text());
    let is_escape =
        |r: Result<(), Error>| r.err().and_then(|e| e.guest_kind()) == Some(ErrorKind::PathEscape);
    assert!(is_escape(sb.read_file("/etc/passwd").await.map(drop)));
    assert!(is_escape(
        sb.read_file("/workspace/../etc/passwd").await.map(drop)
    ));
    assert!(is_escape(
        sb.read_file("/workspace/abs/passwd").await.map(drop)
    ));
    assert!(is_escape(
        sb.read_file("/workspace/rel/passwd").await.map(drop)
    ));
    assert!(is_escape(sb.read_file("/tmp/pw").await.map(drop)));
    assert!(is_escape(sb.write_file("/workspace/abs/evil", b"x").await));
    assert!(is_escape(sb.write_file("/workspaces/evil", b"x").await));
    assert!(is_escape(sb.mkdir("/tmp/../root/x").await));
    assert!(is_escape(sb.list("/").await.map(drop)));
    assert!(is_escape(sb.stat("/workspace/rel/shadow").await.map(drop)));
    let etc = sb.exec(["ls", "/etc"]).await.unwrap().stdout_text();
    assert!(!etc.contains("evil"));
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_runs_as_another_user_and_a_file_root_is_the_users() {
    let sb = Sandbox::builder()
        .file_root("/home/user")
        .allow_command("*")
        .build()
        .await
        .unwrap();
    let as_root = sb
        .exec(Exec::shell("id -u; echo $HOME; echo $USER").user("root"))
        .await
        .unwrap();
    assert_eq!(as_root.stdout_text(), "0\n/root\nroot\n");
    let as_sandbox = sb.exec(["id", "-u"]).await.unwrap();
    assert_eq!(
        as_sandbox.stdout_text(),
        "1000\n",
        "the sandbox's own user stays"
    );
    let numeric = sb
        .exec(Exec::new("id").arg("-u").user("4242"))
        .await
        .unwrap();
    assert_eq!(numeric.stdout_text(), "4242\n");
    let unknown = sb
        .exec(Exec::new("true").user("nobody-here"))
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("nobody-here"), "{unknown}");

    // The extra root was made for the sandbox user: files the host
    // writes there are theirs, and it is theirs to write in.
    sb.write_file("/home/user/notes.txt", b"from the host\n")
        .await
        .unwrap();
    let appended = sb
        .exec(Exec::shell(
            "echo by the user >> /home/user/notes.txt && stat -c %u /home/user",
        ))
        .await
        .unwrap();
    assert!(appended.status.success(), "{}", appended.stderr_text());
    assert_eq!(appended.stdout_text(), "1000\n");
    assert_eq!(
        sb.read_file("/home/user/notes.txt").await.unwrap(),
        b"from the host\nby the user\n"
    );
    let names: Vec<String> = sb
        .list("/home/user")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["notes.txt"]);
    // Beside it, nothing more is reachable.
    let escape = sb.read_file("/home/other").await.unwrap_err();
    assert_eq!(escape.guest_kind(), Some(ErrorKind::PathEscape), "{escape}");
    assert!(escape.to_string().contains("/home/user"), "{escape}");
    assert!(
        sb.remove("/home/user").await.is_err(),
        "a root is not removed"
    );
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_killed_mid_exec_fails_fast_and_leaves_nothing() {
    let sb = sandbox().await;
    let pids = sb.host_pids();
    let dir = sb.runtime_dir();
    let mut sleeper = sb.exec_stream(Exec::new("sleep").arg("100")).await.unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pids[0] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper.next())
        .await
        .expect("exec noticed the dead VM within its deadline")
        .unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let again = sb.exec("true").await.unwrap_err();
    assert!(matches!(again, Error::Disconnected(_)), "{again}");
    drop(sleeper);
    drop(sb);
    assert_nothing_left(&pids, &dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_guest_fails_calls_within_the_liveness_deadline() {
    let sb = Sandbox::builder()
        .liveness_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let pids = sb.host_pids();
    let dir = sb.runtime_dir();
    // SIGSTOP freezes the whole VM: the guest stops answering.
    let qemu = rustix::process::Pid::from_raw(pids[0] as i32).unwrap();
    rustix::process::kill_process(qemu, rustix::process::Signal::STOP).unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), sb.exec(Exec::new("true")))
        .await
        .expect("call returned")
        .unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    drop(sb);
    assert_nothing_left(&pids, &dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn four_sandboxes_boot_in_parallel_and_clean_up() {
    let boots = (0..4).map(|i| async move {
        // Small guests: the kernel's default process limit is lower there.
        let sb = Sandbox::builder()
            .memory_mb(256)
            .env("SANDBOX_INDEX", i.to_string())
            .build()
            .await?;
        let out = sb.exec(Exec::shell("echo $SANDBOX_INDEX")).await?;
        Ok::<_, Error>((sb, out.stdout_text()))
    });
    let results = futures::future::join_all(boots).await;
    let mut leftovers = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        let (sb, out) = result.unwrap();
        assert_eq!(out.trim(), i.to_string());
        leftovers.push((sb.host_pids(), sb.runtime_dir()));
        sb.shutdown().await.unwrap();
    }
    for (pids, dir) in leftovers {
        assert_nothing_left(&pids, &dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pty_limits_env_and_telemetry() {
    let sb = Sandbox::builder()
        .env("GREETING", "hi")
        .limits(ResourceLimits {
            nofile: Some(256),
            ..void_box::sandbox::DEFAULT_LIMITS
        })
        .build()
        .await
        .unwrap();
    let out = sb
        .exec(Exec::shell("echo $GREETING $EXTRA; ulimit -n").env("EXTRA", "there"))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "hi there\n256\n");
    let custom = sb
        .exec(Exec::shell("ulimit -n").limits(ResourceLimits {
            nofile: Some(64),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(custom.stdout_text().trim(), "64");

    let mut tty = sb
        .exec_stream(Exec::shell("tty; read line; stty size; echo got:$line").pty(24, 80))
        .await
        .unwrap();
    tty.resize(40, 120).unwrap();
    tty.stdin().write(b"hello\n").await.unwrap();
    let mut text = String::new();
    let status = loop {
        match tty.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(d) => text.push_str(&String::from_utf8_lossy(&d)),
            ExecEvent::Stderr(_) => panic!("a pty has no separate stderr"),
            ExecEvent::Exit(s) => break s,
        }
    };
    assert!(status.success(), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("40 120"), "{text}");
    assert!(text.contains("got:hello"), "{text}");

    let t = sb.telemetry().await.unwrap();
    assert!(
        t.mem_total_bytes > 256 << 20 && t.mem_total_bytes <= 512 << 20,
        "{t:?}"
    );
    assert!(
        t.mem_available_bytes > 0 && t.process_count >= 1 && t.cpu_count == 1,
        "{t:?}"
    );
    let date = sb.exec(["date", "+%Y"]).await.unwrap().stdout_text();
    assert!(
        date.trim().parse::<u32>().unwrap() >= 2025,
        "guest clock was not set: {date}"
    );
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_boot_reports_reason_and_console() {
    let bogus = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bogus.path(), b"not a kernel").unwrap();
    let image = void_box::vm::image::GuestImage::resolve().unwrap();
    let err = match Sandbox::builder()
        .guest_image(void_box::sandbox::GuestImage {
            kernel: bogus.path().to_path_buf(),
            initramfs: image.initramfs,
        })
        .boot_timeout(Duration::from_secs(20))
        .build()
        .await
    {
        Ok(_) => panic!("booted a bogus kernel"),
        Err(e) => e,
    };
    match err {
        Error::Boot {
            reason,
            console_tail,
        } => {
            assert!(reason.contains("exited"), "{reason}");
            assert!(
                console_tail.contains("qemu"),
                "console tail: {console_tail}"
            );
        }
        other => panic!("expected a boot error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_sandbox_leaves_nothing_behind() {
    let sb = sandbox().await;
    let pids = sb.host_pids();
    let dir = sb.runtime_dir();
    assert!(dir.exists());
    // The VM's files (its initrd holds the secret) are private to us.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    let _running = sb.exec_stream(Exec::new("sleep").arg("100")).await.unwrap();
    drop(sb);
    assert_nothing_left(&pids, &dir);
}
