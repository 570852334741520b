//! Host directories and volumes in real VMs (virtio-9p): read-only means
//! read-only even for guest root, read-write round-trips 100 MiB both ways
//! with matching checksums, the host never follows a symlink the guest
//! made, and a volume keeps files across sandboxes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};
use void_box::sandbox::MountMode;
use void_box::{Exec, Sandbox, SandboxConfig};

async fn boot(config: SandboxConfig) -> Sandbox {
    config
        .build()
        .await
        .expect("sandbox boots (guest image built?)")
}

async fn run(sandbox: &Sandbox, script: &str) -> (bool, String) {
    let out = sandbox.exec(Exec::shell(script)).await.unwrap();
    (out.status.success(), out.stdout_text() + &out.stderr_text())
}

/// A host directory the guest's sandbox user (uid 1000) owns, as a
/// user's own directory would be on a desktop (the tests run as root).
fn host_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(1000), Some(1000)).unwrap();
    dir
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_mount_refuses_guest_root_even_after_a_remount() {
    let dir = host_dir();
    std::fs::write(dir.path().join("in.txt"), "from the host\n").unwrap();
    let sandbox = boot(
        Sandbox::builder()
            .mount(dir.path(), "/data", MountMode::Ro)
            .user("root")
            .allowed_commands(["*"]),
    )
    .await;
    let (ok, out) = run(&sandbox, "cat /data/in.txt").await;
    assert!(ok && out == "from the host\n", "{out}");
    let (ok, out) = run(&sandbox, "echo x > /data/new.txt").await;
    assert!(!ok && out.contains("Read-only file system"), "{out}");
    // Guest root can remount; QEMU (readonly=on) still refuses.
    let (_, out) = run(
        &sandbox,
        "mount -o remount,rw /data; echo x > /data/new.txt; echo x >> /data/in.txt; rm /data/in.txt; true",
    )
    .await;
    assert!(
        out.contains("Read-only file system") || out.contains("Permission denied"),
        "{out}"
    );
    assert!(!dir.path().join("new.txt").exists(), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("in.txt")).unwrap(),
        "from the host\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_write_mount_round_trips_100_mib_both_ways() {
    let dir = host_dir();
    let mut data = vec![0u8; 100 << 20];
    rand::rng().fill_bytes(&mut data);
    std::fs::write(dir.path().join("from-host.bin"), &data).unwrap();
    let host_sum = hex::encode(Sha256::digest(&data));
    drop(data);
    let sandbox = boot(Sandbox::builder().mount(dir.path(), "/work", MountMode::Rw)).await;
    let (ok, out) = run(&sandbox, "sha256sum /work/from-host.bin").await;
    assert!(ok, "{out}");
    assert_eq!(out.split_whitespace().next(), Some(host_sum.as_str()));
    let (ok, out) = run(
        &sandbox,
        "dd if=/dev/urandom of=/work/from-guest.bin bs=1M count=100 2>/dev/null && sha256sum /work/from-guest.bin",
    )
    .await;
    assert!(ok, "{out}");
    let guest_sum = out.split_whitespace().next().unwrap().to_string();
    assert_eq!(sha256_file(&dir.path().join("from-guest.bin")), guest_sum);
    // Host changes show in the guest at once (no stale cache), a change
    // of the same size to a file the guest already read included.
    std::fs::write(dir.path().join("late.txt"), "written after boot\n").unwrap();
    let (_, out) = run(&sandbox, "cat /work/late.txt").await;
    assert_eq!(out, "written after boot\n");
    std::fs::write(dir.path().join("late.txt"), "WRITTEN AFTER BOOT\n").unwrap();
    let (_, out) = run(&sandbox, "cat /work/late.txt").await;
    assert_eq!(out, "WRITTEN AFTER BOOT\n");
    // What the guest makes keeps the guest user's uid where QEMU may set
    // it (void-box running as root), else belongs to the host user.
    let meta = std::fs::metadata(dir.path().join("from-guest.bin")).unwrap();
    let euid = rustix::process::geteuid().as_raw();
    assert_eq!(meta.uid(), if euid == 0 { 1000 } else { euid });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_never_follows_a_symlink_the_guest_made() {
    let dir = host_dir();
    let probe = format!("voidbox-escape-probe-{}", std::process::id());
    let sandbox = boot(
        Sandbox::builder()
            .mount(dir.path(), "/work", MountMode::Rw)
            .user("root")
            .allowed_commands(["*"]),
    )
    .await;
    let (ok, out) = run(
        &sandbox,
        &format!(
            "ln -s /etc /work/etc-link && ln -s ../../../../../../tmp /work/up && \
             echo escaped > /work/etc-link/{probe} && echo escaped > /work/up/{probe} && \
             cat /work/../../../proc/sys/kernel/ostype && readlink /work/etc-link"
        ),
    )
    .await;
    assert!(ok, "{out}");
    // The writes went through the guest's own /etc and /tmp...
    let (_, guest) = run(&sandbox, &format!("cat /etc/{probe} /tmp/{probe}")).await;
    assert_eq!(guest, "escaped\nescaped\n");
    // ...and nowhere on the host: the links are plain links in the share.
    assert!(!Path::new("/etc").join(&probe).exists());
    assert!(!Path::new("/tmp").join(&probe).exists());
    let link = std::fs::read_link(dir.path().join("etc-link")).unwrap();
    assert_eq!(link, Path::new("/etc"));
    let entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_keeps_files_across_sandboxes() {
    let name = format!("test-volume-{}", std::process::id());
    let volumes = void_box::volume::Volumes::default_location();
    let config = Sandbox::builder().volume(&name, "/cache");
    let first = boot(config.clone()).await;
    let (ok, out) = run(
        &first,
        "echo kept > /cache/state.txt && id -u && stat -c '%u %a' /cache",
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out, "1000\n1000 755\n", "the command user owns the volume");
    first.shutdown().await.unwrap();
    let second = boot(config).await;
    let (ok, out) = run(
        &second,
        "cat /cache/state.txt; stat -c '%u' /cache/state.txt",
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out, "kept\n1000\n");
    second.shutdown().await.unwrap();
    assert!(volumes.list().unwrap().iter().any(|v| v.name == name));
    volumes.remove(&name).unwrap();
}
