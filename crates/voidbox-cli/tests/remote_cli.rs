//! The CLI against a daemon, both the real binary: `voidbox serve` on a
//! Unix socket and on TCP with a token; `voidbox run --remote` of an agent
//! (a mock model calling a tool in a real VM) with its output and JSON
//! events; `ps`, `logs`, `cancel` of a long run; a wrong token refused.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn voidbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voidbox"))
}

/// `voidbox serve` listening on `listen`, killed (SIGTERM: it ends its
/// VMs) when dropped.
struct Serve(Child);

impl Serve {
    fn start(listen: &str, token_file: Option<&Path>, state: &Path) -> Serve {
        let mut cmd = voidbox();
        cmd.args(["serve", "--listen", listen, "--state-dir"])
            .arg(state)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(file) = token_file {
            cmd.arg("--token-file").arg(file);
        }
        let child = cmd.spawn().unwrap();
        Serve(child)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the child's own pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn remote(args: &[&str], address: &str, token: Option<&Path>) -> Output {
    let mut cmd = voidbox();
    cmd.args(args).args(["--remote", address]);
    if let Some(file) = token {
        cmd.arg("--remote-token-file").arg(file);
    }
    cmd.output().unwrap()
}

const AGENT: &str = "\
api_version: v1
kind: agent
name: remote-scout
llm:
  provider: mock
  mock:
    turns:
      - text: looking
        tool_calls: [{name: bash, input: {command: 'echo from-the-vm'}}]
      - text: the guest said hello
agent:
  prompt: Look around.
";

#[test]
fn a_spec_runs_on_the_daemon_and_is_followed_listed_and_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("scout.yaml");
    std::fs::write(&spec, AGENT).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "remote-cli-test-token-0123456789\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("http://127.0.0.1:{port}");
    let _daemon = Serve::start(
        &format!("tcp:127.0.0.1:{port}"),
        Some(&token),
        &dir.path().join("state"),
    );
    wait_for("the daemon listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // Human: the model's text and tool call on stderr, the answer on stdout.
    let out = remote(
        &["run", "--file", spec.to_str().unwrap()],
        &address,
        Some(&token),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "the guest said hello");
    assert!(stderr.contains("→ bash"), "{stderr}");
    assert!(stderr.contains("■ remote-scout done"), "{stderr}");

    // JSON: each event a line, then the result with the tool's output.
    let out = remote(
        &["run", "--file", spec.to_str().unwrap(), "--output", "json"],
        &address,
        Some(&token),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let result = lines.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["run"]["status"], "succeeded");
    let finished = lines
        .iter()
        .find(|l| l["event"] == "tool_call_finished")
        .expect("a tool call");
    assert!(
        finished["summary"]
            .as_str()
            .unwrap()
            .contains("from-the-vm"),
        "{finished}"
    );
    let run_id = result["run"]["id"].as_str().unwrap().to_string();

    // Logs: the same events, read back.
    let out = remote(&["logs", &run_id], &address, Some(&token));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        lines.len() - 1,
        "every event but the CLI's own result line"
    );

    // A long run, listed, cancelled, its follower told.
    let long = dir.path().join("long.yaml");
    std::fs::write(
        &long,
        "kind: sandbox\nname: long\nsandbox: {memory_mb: 256}\nrun: {program: sleep, args: ['600']}\n",
    )
    .unwrap();
    let mut follower = voidbox()
        .args([
            "run",
            "--file",
            long.to_str().unwrap(),
            "--remote",
            &address,
        ])
        .arg("--remote-token-file")
        .arg(&token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut long_id = String::new();
    wait_for("the long run is listed as running", || {
        let out = remote(&["ps"], &address, Some(&token));
        let listing = text(&out.stdout);
        match listing
            .lines()
            .find(|l| l.contains(" long ") && l.contains("running"))
        {
            Some(line) => {
                long_id = line.split_whitespace().next().unwrap().to_string();
                true
            }
            None => false,
        }
    });
    let out = remote(&["cancel", &long_id], &address, Some(&token));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("{long_id}: cancelled"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the follower ends with the run");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1), "a cancelled run is not a success");
    let out = remote(&["cancel", &long_id], &address, Some(&token));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has ended"),
        "{}",
        text(&out.stderr)
    );

    // A wrong token changes nothing.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token-at-all-0000").unwrap();
    let out = remote(&["ps"], &address, Some(&wrong));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
}

#[test]
fn ps_finds_the_daemon_on_its_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("voidbox.sock");
    let _daemon = Serve::start(
        &format!("unix:{}", socket.display()),
        None,
        &dir.path().join("state"),
    );
    wait_for("the socket exists", || socket.exists());
    let out = remote(&["ps"], &format!("unix:{}", socket.display()), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("RUN "),
        "{}",
        text(&out.stdout)
    );
    let out = remote(
        &["logs", "run-nope"],
        &format!("unix:{}", socket.display()),
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no run `run-nope`"),
        "{}",
        text(&out.stderr)
    );
}
