//! The `voidbox` binary end to end, with real VMs.

use std::process::Command;

fn voidbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voidbox"))
}

#[test]
fn exec_streams_output_and_returns_the_exit_code() {
    let out = voidbox()
        .args([
            "exec",
            "--env",
            "WHO=tester",
            "--",
            "sh",
            "-c",
            "echo out $WHO; echo err >&2; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out tester\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));
}

#[test]
fn exec_forwards_piped_stdin() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = voidbox()
        .args(["exec", "--", "sh", "-c", "wc -c; sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = vec![b'x'; 300_000];
    stdin.write_all(&data).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `wc -c` consumed all of stdin, so sha256sum hashes the empty rest.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("300000\n"), "{text}");
    assert!(
        text.contains("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        "{text}"
    );
}

#[test]
fn exec_timeout_kills_and_reports() {
    let out = voidbox()
        .args(["exec", "--timeout", "1", "--", "sleep", "60"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + 9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
}

#[test]
fn exec_refuses_a_command_off_the_allowlist_by_name() {
    let out = voidbox().args(["exec", "--", "vi"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`vi`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn image_build_with_no_flags_rebuilds_nothing_after_the_set_up() {
    // scripts/setup.sh passes --agent and --busybox; with no flags the
    // builder must find the same files and so the same cached image.
    let current = || {
        let out = voidbox()
            .args(["image", "info", "--json"])
            .output()
            .unwrap();
        let files: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        files
            .into_iter()
            .filter(|f| f["current"] == true)
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let before = current();
    let out = voidbox().args(["image", "build"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(current(), before);
}

#[test]
fn image_info_shows_the_current_image() {
    let out = voidbox().args(["image", "info"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("* initramfs"), "{text}");
    assert!(text.contains("* kernel"), "{text}");
}

#[test]
fn shell_runs_on_a_real_pty_and_returns_the_exit_code() {
    use std::io::Write;
    use std::process::Stdio;
    // `script` gives voidbox a terminal, as a person's would be.
    let cmd = format!("{} shell", env!("CARGO_BIN_EXE_voidbox"));
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (bsdutils) is installed");
    // Typed after the guest shell is up; a PTY buffers it until then.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"tty; echo marker-$((6*7)); exit 4\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("marker-42"), "{text}");
    assert_eq!(out.status.code(), Some(4), "{text}");
}

#[test]
fn require_kvm_refuses_software_emulation_and_says_why() {
    let flag = voidbox()
        .args(["--require-kvm", "exec", "--", "true"])
        .output()
        .unwrap();
    let env = voidbox()
        .args(["exec", "--", "true"])
        .env("VOIDBOX_ACCEL", "kvm")
        .output()
        .unwrap();
    for out in [flag, env] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        match void_box::vm::accel::kvm_unusable() {
            // These machines: no hardware virtualization behind /dev/kvm.
            Some(why) => {
                assert_eq!(out.status.code(), Some(125), "{stderr}");
                assert!(stderr.contains("KVM is required"), "{stderr}");
                assert!(stderr.contains(&why), "{stderr}");
                assert!(stderr.contains("not a security boundary"), "{stderr}");
            }
            None => assert!(out.status.success(), "{stderr}"),
        }
    }
}
