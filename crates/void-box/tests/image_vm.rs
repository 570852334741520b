//! OCI images as the root of real VMs: pulled from a registry on
//! loopback, booted as an erofs disk under an overlay. Python and node run,
//! the image's Env, WorkingDir and User apply, the layers' whiteouts,
//! links, modes and xattrs are what the guest sees, an agent runs a script
//! it writes, image skills mount read-only, and a second boot needs no
//! registry. Needs the guest image and the test images
//! (`scripts/setup.sh --with-test-tools`).

mod common;

use common::mock_llm::{turn, MockLlmServer, Wire};
use common::registry::TestRegistry;
use serde_json::json;
use void_box::agent::VoidBox;
use void_box::event::EventSink;
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::skill::Skill;
use void_box::{Exec, Sandbox, SandboxConfig};

async fn boot(config: SandboxConfig) -> Sandbox {
    config
        .build()
        .await
        .expect("sandbox boots (guest image built? test images pushed?)")
}

async fn sh(sandbox: &Sandbox, script: &str) -> String {
    let out = sandbox.exec(Exec::shell(script)).await.unwrap();
    assert!(
        out.status.success(),
        "`{script}` {}: {}{}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_node_run_with_the_image_config_and_boot_again_without_the_registry() {
    let registry = TestRegistry::start();
    registry.push("python", "latest", "python");
    let reference = registry.reference("python:latest");
    let config = Sandbox::builder().image(&reference).memory_mb(512);
    let sandbox = boot(config.clone()).await;
    let py = sh(
        &sandbox,
        "python3 -c 'import sys, json; print(json.dumps([sys.version_info[0], 6*7]))'",
    )
    .await;
    assert_eq!(py.trim(), "[3, 42]");
    // Below 1024, where the agent listens, only guest root may bind a port.
    let bind = sh(
        &sandbox,
        "python3 -c \"import socket\ntry:\n    socket.socket(socket.AF_VSOCK).bind((socket.VMADDR_CID_ANY, 1000)); print('bound')\nexcept PermissionError: print('refused')\"",
    )
    .await;
    assert_eq!(bind.trim(), "refused");
    let node = sh(
        &sandbox,
        "node -e 'console.log([1,2,3].map(x => x * 2).join(\",\"))'",
    )
    .await;
    assert_eq!(node.trim(), "2,4,6");
    // Env, WorkingDir and User from the image; HOME from its /etc/passwd.
    let who = sh(
        &sandbox,
        "id -un; id -u; pwd; echo $VOIDBOX_IMAGE_TEST; echo $HOME",
    )
    .await;
    assert_eq!(
        who.lines().collect::<Vec<_>>(),
        ["app", "1234", "/srv/app", "1", "/home/app"]
    );
    // The agent tools' directory is /workspace, owned by the command user.
    let ws = sh(
        &sandbox,
        "cd /workspace && echo hi > f && stat -c '%U %a' /workspace",
    )
    .await;
    assert_eq!(ws.trim(), "app 755");
    // The image is read-only underneath, writable through the overlay.
    sh(
        &sandbox,
        "test -w /srv/app && echo new > /srv/app/new.txt && cat /srv/app/new.txt",
    )
    .await;
    let mounts = sh(&sandbox, "cat /proc/mounts").await;
    assert!(mounts.contains(" / overlay "), "{mounts}");
    sandbox.shutdown().await.unwrap();

    // The registry is gone; the cache serves the next boot.
    registry.stop();
    let again = boot(config.clone()).await;
    let fresh = sh(&again, "ls /srv/app; python3 -c 'print(7)'").await;
    assert!(
        !fresh.contains("new.txt"),
        "a fresh overlay per sandbox: {fresh}"
    );
    assert!(fresh.ends_with("7\n"), "{fresh}");

    // The configuration's user wins over the image's.
    let as_root = boot(config.user("root")).await;
    assert_eq!(sh(&as_root, "id -u; echo $HOME").await, "0\n/root\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_sees_what_the_layers_say() {
    let registry = TestRegistry::start();
    registry.push("layers", "latest", "layers");
    registry.push("python", "latest", "python");
    // The multi-layer image as the root (its busybox), and mounted
    // read-only into a Debian root whose tools and python read it.
    let layers = registry.reference("layers:latest");
    let root = boot(
        Sandbox::builder()
            .image(&layers)
            .allowed_commands(["*"])
            .user("root"),
    )
    .await;
    let out = sh(
        &root,
        "cat /arch /a/keep /d/new /z/zstd; /bin/busybox ls /d",
    )
    .await;
    assert_eq!(out, "amd64\nkeep\nnew v3\nfrom a zstd layer\nnew\n");
    root.shutdown().await.unwrap();

    let sandbox = boot(
        Sandbox::builder()
            .image(registry.reference("python:latest"))
            .image_mount(&layers, "/l")
            .allowed_commands(["*"]),
    )
    .await;
    let out = sh(
        &sandbox,
        "cd /l; test ! -e a/gone && test ! -e d/old1 && test ! -e WRONG-PLATFORM && echo absent; \
         stat -c '%i' h/one h/two; readlink s; stat -c '%a %u %g' x/suid tmp; \
         python3 -c \"import os; print(os.getxattr('/l/x/xattr', 'user.test').decode())\"; \
         touch /l/new 2>/dev/null && echo WROTE || echo read-only",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "absent",
        "whiteouts, the opaque dir and the index: {out}"
    );
    assert_eq!(lines[1], lines[2], "a hard link shares its inode");
    assert_eq!(lines[3], "/a/keep");
    assert_eq!(&lines[4..6], ["4755 1234 5678", "1777 0 0"]);
    assert_eq!(
        lines[6], "hello",
        "the xattr, read through the guest kernel"
    );
    assert_eq!(lines[7], "read-only");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_writes_and_runs_a_python_script_in_the_image() {
    let registry = TestRegistry::start();
    registry.push("python", "latest", "python");
    let agent = VoidBox::new("pythonista")
        .image(&registry.reference("python:latest"))
        .llm(LlmProvider::mock(MockScript::new(vec![
            MockTurn::text("Writing a script.").call(
                "write",
                json!({"path": "primes.py", "content": "print(sum(n for n in range(2, 50) if all(n % d for d in range(2, n))))\n"}),
            ),
            MockTurn::default().call("bash", json!({"command": "python3 primes.py"})),
            MockTurn::text("The sum of primes below 50 is 328."),
        ])))
        .prompt("Sum the primes below 50 with Python.")
        .build()
        .unwrap();
    let result = agent.run_with(None, EventSink::none()).await.unwrap();
    assert_eq!(
        result.tool_calls[1].summary, "328",
        "{:?}",
        result.tool_calls
    );
    assert!(result.tool_calls.iter().all(|c| !c.is_error));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_skill_is_mounted_read_only_and_announced() {
    let registry = TestRegistry::start();
    registry.push("layers", "amd64", "tools");
    let reference = registry.reference("tools:amd64");
    std::env::set_var("VB_IMAGE_SKILL_KEY", "sk-test");
    let server = MockLlmServer::with_turns([
        turn(
            "",
            &[(
                "bash",
                json!({"command": "touch /skills/tools/x 2>/dev/null && echo WROTE || echo refused; cat /skills/tools/a/keep"}),
            )],
        ),
        turn("ok", &[]),
    ])
    .await;
    let agent = VoidBox::new("reader")
        .skill(Skill::image(&reference, "/skills/tools"))
        .llm(server.provider(Wire::Anthropic, "VB_IMAGE_SKILL_KEY"))
        .prompt("Look at the tools.")
        .build()
        .unwrap();
    let result = agent.run_with(None, EventSink::none()).await.unwrap();
    assert_eq!(result.tool_calls[0].summary, "refused (+1 lines)");
    let system = server.requests()[0].body["system"].to_string();
    assert!(
        system.contains("/skills/tools") && system.contains(&reference),
        "{system}"
    );
    let answer = server.requests()[1].body["messages"].to_string();
    assert!(answer.contains("keep"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_cannot_redirect_the_agents_mount_points() {
    // A hostile image: its /workspace, /tmp, /dev and a mount point are
    // symlinks out to the root (the agent, not chrooted, must not follow them).
    let work = tempfile::tempdir().unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    };
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", &busybox[..])
        .unwrap();
    for (link, target) in [
        ("bin/sh", "busybox"),
        ("workspace", "/"),
        ("tmp", "/etc"),
        ("dev", "/run"),
        ("data", "../../../"),
    ] {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, link, target).unwrap();
    }
    let layer = work.path().join("hostile.tar");
    std::fs::write(&layer, tar.into_inner().unwrap()).unwrap();
    let reference = format!("local/hostile-{}:1", std::process::id());
    let store = void_box::oci::Store::default_location();
    void_box::oci::import(&store, &reference, &[layer], Default::default()).unwrap();
    let share = tempfile::tempdir().unwrap();
    std::fs::write(share.path().join("shared.txt"), "shared\n").unwrap();

    let sandbox = boot(
        Sandbox::builder()
            .image(&reference)
            .mount(share.path(), "/data", void_box::sandbox::MountMode::Ro)
            .allowed_commands(["*"]),
    )
    .await;
    sandbox
        .write_file("/workspace/probe.txt", b"probe")
        .await
        .unwrap();
    let out = sh(
        &sandbox,
        "cd /; for p in workspace tmp dev data; do test -d $p && test ! -L $p && echo $p; done; \
         cat /workspace/probe.txt /data/shared.txt; test -c /dev/null && echo devnull",
    )
    .await;
    assert_eq!(out, "workspace\ntmp\ndev\ndata\nprobeshared\ndevnull\n");
    store
        .remove(&void_box::oci::parse_reference(&reference).unwrap().whole())
        .unwrap();
}
