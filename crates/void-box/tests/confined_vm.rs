//! QEMU, seen from the host while it runs a real VM: what an escape from
//! the guest into QEMU would find (issue 11, item 3).

use std::path::{Path, PathBuf};

use void_box::{Exec, Sandbox};

fn proc_file(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{name}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{name}: {e}"))
}

fn status_field(pid: u32, field: &str) -> String {
    proc_file(pid, "status")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn namespace(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_runs_with_no_environment_no_host_files_and_no_privileges() {
    let home = std::env::var("HOME").expect("the tests run with a HOME");
    let sb = Sandbox::builder().build().await.unwrap();
    let qemu = sb.host_pids()[0];
    assert!(
        proc_file(qemu, "cmdline").contains("qemu-system"),
        "pid {qemu} is QEMU"
    );

    // Not one of our variables (API keys, HOME, PATH) reaches it: only the
    // PWD bubblewrap sets to QEMU's own directory.
    let environ = std::fs::read(format!("/proc/{qemu}/environ")).unwrap();
    let own_dir = format!("PWD={}", sb.runtime_dir().display());
    let vars: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        vars.iter().all(|v| *v == own_dir),
        "QEMU's environment: {vars:?}"
    );

    // Its own namespaces, every one of them.
    for kind in ["user", "mnt", "pid", "net", "ipc", "uts"] {
        assert_ne!(
            namespace(&qemu.to_string(), kind),
            namespace("self", kind),
            "QEMU shares our {kind} namespace"
        );
    }

    // Its filesystem: /usr, a minimal /dev, /proc and its runtime directory.
    let root = PathBuf::from(format!("/proc/{qemu}/root"));
    assert!(root.join("usr/bin").is_dir());
    for hidden in [home.as_str(), "/etc", "/root", "/home", "/var", "/work"] {
        let inside = root.join(hidden.trim_start_matches('/'));
        assert!(
            !inside.exists(),
            "QEMU sees {hidden}: {:?}",
            std::fs::read_dir(&inside).map(|d| d.count())
        );
    }
    let mounts = proc_file(qemu, "mountinfo");
    assert!(
        !mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(home.as_str())),
        "{mounts}"
    );
    let runtime = sb.runtime_dir();
    assert!(root
        .join(runtime.strip_prefix("/").unwrap())
        .join("qmp.sock")
        .exists());
    let parent = runtime.parent().unwrap().strip_prefix("/").unwrap();
    let tmp_inside: Vec<_> = std::fs::read_dir(root.join(parent))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        tmp_inside.len(),
        1,
        "QEMU sees more than its own directory in {}: {tmp_inside:?}",
        parent.display()
    );

    // QEMU's own seccomp filter, no new privileges, no capabilities, and
    // not root when we are.
    assert_eq!(status_field(qemu, "Seccomp"), "2");
    assert_eq!(status_field(qemu, "NoNewPrivs"), "1");
    assert_eq!(status_field(qemu, "CapEff"), "0000000000000000");
    let uids = status_field(qemu, "Uid");
    let real_uid = uids.split_whitespace().next().unwrap();
    if rustix::process::geteuid().is_root() {
        assert_ne!(real_uid, "0", "QEMU runs as root: {uids}");
    } else {
        assert_eq!(
            real_uid,
            rustix::process::getuid().as_raw().to_string(),
            "{uids}"
        );
    }

    // And the VM it runs works.
    let out = sb.exec(Exec::shell("echo confined")).await.unwrap();
    assert_eq!(out.stdout_text(), "confined\n");
    let pids = sb.host_pids();
    sb.shutdown().await.unwrap();
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} lives on"
        );
    }
    assert!(!runtime.exists());
}

/// Bytes under `dir`, recursively.
fn disk_use(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_use(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_flooding_its_console_costs_no_disk_and_bounded_memory() {
    // Guest root may write the serial console; a hostile guest kernel can
    // write it without end.
    let sb = Sandbox::builder().user("root").build().await.unwrap();
    let before = disk_use(&sb.runtime_dir());
    let flood = "i=0; while [ $i -lt 4000 ]; do \
                 echo \"console line $i ....................................................................................................\"; \
                 i=$((i+1)); done > /dev/ttyS0; echo the-last-line > /dev/ttyS0";
    let out = sb.exec(Exec::shell(flood)).await.unwrap();
    assert_eq!(out.status.code, Some(0), "{}", out.stderr_text());
    // About 450 KB went out; the ring keeps its last 256 KiB, in memory.
    let tail = sb.console_tail(4096);
    assert!(tail.contains("the-last-line"), "{tail}");
    assert!(!sb.console_tail(usize::MAX).contains("console line 0 "));
    let grown = disk_use(&sb.runtime_dir()).saturating_sub(before);
    assert!(grown < 4096, "the runtime directory grew by {grown} bytes");
    sb.shutdown().await.unwrap();
}
