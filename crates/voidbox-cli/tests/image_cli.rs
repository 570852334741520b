//! `voidbox image`, `exec --image --mount`, `run` with an image and
//! `volume` end to end: a real registry on loopback
//! (`scripts/test-registry.sh`, stopped when the test ends) and real VMs.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

fn voidbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voidbox"))
}

/// `voidbox` with empty image and volume caches of its own, booting the
/// current guest image of the default cache: what it pulls is really pulled.
fn isolated(cache: &std::path::Path) -> Command {
    let out = voidbox()
        .args(["image", "info", "--json"])
        .output()
        .unwrap();
    let files: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let current = |kind: &str| {
        files
            .iter()
            .find(|f| f["kind"] == kind && f["current"] == true)
            .and_then(|f| f["path"].as_str())
            .unwrap_or_else(|| panic!("no current {kind}: run `voidbox image build`"))
            .to_string()
    };
    let mut cmd = voidbox();
    cmd.env("VOIDBOX_KERNEL", current("kernel"))
        .env("VOIDBOX_INITRAMFS", current("initramfs"))
        .env("VOIDBOX_CACHE_DIR", cache.join("cache"))
        .env("VOIDBOX_DATA_DIR", cache.join("data"));
    cmd
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A registry instance of scripts/test-registry.sh, stopped on drop.
struct Registry {
    name: String,
    address: String,
}

/// A port whose next one is free too (the token server's).
fn free_port_pair() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

impl Registry {
    fn start() -> Registry {
        Registry::start_with("none", "python:latest")
    }

    /// `auth`: none, basic or token (user voidbox, password s3cret).
    fn start_with(auth: &str, image: &str) -> Registry {
        let port = free_port_pair();
        // Tests of one binary run side by side: one name per instance.
        let name = format!("cli-test-{}-{auth}-{port}", std::process::id());
        let script = repo().join("scripts/test-registry.sh");
        let run = |args: &[&str]| {
            let out = Command::new(&script).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "test-registry.sh {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let registry = Registry {
            address: format!("127.0.0.1:{port}"),
            name: name.clone(),
        };
        run(&[
            "start",
            "--name",
            &name,
            "--port",
            &port.to_string(),
            "--auth",
            auth,
            "--creds",
            "voidbox:s3cret",
        ]);
        run(&["push", "--name", &name, image]);
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/test-registry.sh"))
            .args(["stop", "--name", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(repo().join("target/test-registry").join(&self.name));
    }
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pull_list_run_exec_with_a_mount_and_remove() {
    let registry = Registry::start();
    let reference = format!("{}/python:latest", registry.address);
    let cache = tempfile::tempdir().unwrap();
    let voidbox = || isolated(cache.path());

    // kind: sandbox without a program runs the image's Cmd in its WorkingDir,
    // as its User, with its Env; the image is pulled first, its progress
    // as image_pull lines before the run's events.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("hello.yaml");
    std::fs::write(
        &spec,
        format!("api_version: v1\nkind: sandbox\nname: hello\nsandbox:\n  image: \"{reference}\"\nrun: {{}}\n"),
    )
    .unwrap();
    let out = voidbox()
        .args(["run", "--output", "json", "--file"])
        .arg(&spec)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "image_pull");
    assert_eq!(lines[0]["phase"], "resolved");
    assert!(lines
        .iter()
        .any(|e| e["event"] == "image_pull" && e["phase"] == "layer"));
    let done = lines
        .iter()
        .position(|e| e["event"] == "image_pull" && e["phase"] == "done")
        .unwrap();
    assert_eq!(lines[done]["cached"], false);
    let started = lines
        .iter()
        .position(|e| e["event"] == "stage_started")
        .unwrap();
    assert!(done < started, "pulled before the VM boots");
    let result = lines.last().unwrap();
    assert_eq!(result["event"], "result");
    assert!(
        result["output"]
            .as_str()
            .unwrap()
            .contains("hello from python 1234 /srv/app 1"),
        "{stdout}"
    );

    // A pull now finds it cached: one `done` line, nothing downloaded.
    let out = voidbox()
        .args(["image", "pull", "--json", &reference])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{stdout}");
    assert_eq!(
        (&events[0]["phase"], &events[0]["cached"]),
        (&"done".into(), &true.into())
    );

    let out = voidbox().args(["image", "ls", "--json"]).output().unwrap();
    let (stdout, _) = text(&out);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert!(
        rows.iter().any(|r| r["references"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == &serde_json::Value::String(reference.clone()))),
        "{stdout}"
    );

    // exec with the image and a read-only mount of a host directory.
    std::fs::write(dir.path().join("input.txt"), "from the host\n").unwrap();
    let out = voidbox()
        .args(["exec", "--image", &reference, "--mount"])
        .arg(format!("{}:/data", dir.path().display()))
        .args([
            "--",
            "sh",
            "-c",
            "cat /data/input.txt; python3 -c 'print(2**10)'",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "from the host\n1024\n");

    let out = voidbox()
        .args(["image", "rm", &reference])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = voidbox().args(["image", "ls"]).output().unwrap();
    assert!(!text(&out).0.contains(&reference));
    let out = voidbox()
        .args(["image", "rm", &reference])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "removing it twice is an error");
}

#[test]
fn volumes_are_created_listed_and_removed() {
    let name = format!("cli-volume-{}", std::process::id());
    let data = tempfile::tempdir().unwrap();
    let voidbox = || isolated(data.path());
    let out = voidbox()
        .args(["volume", "create", &name])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = voidbox()
        .args([
            "exec",
            "--volume",
            &format!("{name}:/v"),
            "--",
            "sh",
            "-c",
            "echo kept > /v/f",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    let out = voidbox().args(["volume", "ls"]).output().unwrap();
    assert!(text(&out).0.contains(&name));
    let out = voidbox().args(["volume", "rm", &name]).output().unwrap();
    assert!(out.status.success());
    let out = voidbox().args(["volume", "rm", &name]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).1.contains(&format!("no volume named `{name}`")));
    let out = voidbox()
        .args(["volume", "create", "../escape"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_bearer_token_registry_is_pulled_from_with_credentials() {
    // The flow Docker Hub and GHCR use: 401 with a Bearer challenge, a
    // token from the realm for the credentials, then the pull with it.
    let registry = Registry::start_with("token", "layers:amd64");
    let reference = format!("{}/layers:amd64", registry.address);
    let cache = tempfile::tempdir().unwrap();
    let out = isolated(cache.path())
        .env("DOCKER_CONFIG", cache.path())
        .args(["image", "pull", &reference])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "anonymous pulls are refused");
    assert!(stderr.contains(&reference), "{stderr}");
    let out = isolated(cache.path())
        .env("VOIDBOX_REGISTRY_AUTH", "voidbox:s3cret")
        .args(["image", "pull", &reference])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("sha256:"), "{stdout}");
}

/// The stand-in HN API (examples/specs/hn_standin.py) on a free port,
/// killed on drop.
struct StandIn(std::process::Child, u16);

impl StandIn {
    fn start() -> StandIn {
        use std::io::BufRead;
        let port = free_port_pair();
        let mut child = Command::new("python3")
            .arg(repo().join("examples/specs/hn_standin.py"))
            .arg(port.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("stand-in HN API"), "{line}");
        StandIn(child, port)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_seeds_hn_researcher_runs_against_a_stand_in_api_allowed_by_one_rule() {
    let registry = Registry::start();
    let api = StandIn::start();
    let cache = tempfile::tempdir().unwrap();
    let rule = format!("host.voidbox.internal:{}", api.1);
    let run = |extra: &[&str]| {
        let out = isolated(cache.path())
            .args(["run", "--file"])
            .arg(repo().join("examples/specs/hackernews_agent.yaml"))
            .args(extra)
            .arg("--image")
            .arg(format!("{}/python:latest", registry.address))
            .env("HN_API", format!("http://{rule}/v0"))
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OLLAMA_MODEL")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = run(&["--allow", &rule, "--output", "json"]);
    assert!(ok, "{stdout}{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let tool = events
        .iter()
        .find(|e| e["event"] == "tool_call_finished")
        .expect("the scripted bash call ran");
    assert_eq!(tool["is_error"], false, "{tool}");
    let summary = tool["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("412\t133\tShow HN: A micro-VM per agent stage"),
        "{summary}"
    );
    // The stand-in was reached through the one rule; nothing was refused.
    let network: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "network")
        .map(|e| &e["connection"])
        .collect();
    assert!(
        network
            .iter()
            .any(|c| c["allowed"] == true && c["port"] == api.1 && c["kind"] == "tcp"),
        "{network:?}"
    );
    assert!(network.iter().all(|c| c["allowed"] == true), "{network:?}");

    // Without the rule the same run cannot reach the host, and the
    // people's output says so on the box's `net` line.
    let (_, stdout, stderr) = run(&[]);
    let shown = format!("{stdout}{stderr}");
    // (without the rule the alias does not even resolve)
    let refused = shown.lines().any(|l| {
        l.contains("[vm:hackernews-researcher] net denied ") && l.contains("host.voidbox.internal")
    });
    assert!(refused && !shown.contains("Show HN"), "{shown}");
}
