//! `voidbox bench images`: booting from an OCI image, measured against a
//! sandbox on the busybox initramfs and the bare-VM floor (interleaved, so
//! that a drift of the machine's speed hits all three alike); pulling and
//! converting the image into an empty cache; and reading a file from an
//! image disk and from a host mount, against reading it from guest RAM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::RngCore;
use void_box::oci::{self, ImageConfig, Store};
use void_box::sandbox::MountMode;
use void_box::vm::image::GuestImage;
use void_box::vm::qemu::QemuBackend;
use void_box::vm::Accel;
use void_box::{Exec, Sandbox, SandboxConfig};

use super::startup::{floor_boot, write_floor_initramfs};
use super::{ms, pct, row};

pub async fn run(
    image: &str,
    runs: usize,
    pulls: usize,
    file_mib: usize,
    floor_init: PathBuf,
) -> Result<ExitCode> {
    if runs == 0 || pulls == 0 || file_mib == 0 {
        bail!("--runs, --pulls and --file-mib must be positive");
    }
    let guest = GuestImage::resolve()?;
    let accel = Accel::from_env()?;
    let backend = QemuBackend::from_env()?;
    eprintln!("bench: accelerator {accel}; pulling {image} {pulls} time(s)");

    // Pull + convert, each into an empty cache.
    let mut pull_times = Vec::new();
    let mut size = 0;
    let mut compressed = 0;
    for _ in 0..pulls {
        let cache = tempfile::tempdir()?;
        let started = Instant::now();
        let pulled = oci::pull(&Store::at(cache.path()), image, None).await?;
        pull_times.push(started.elapsed());
        size = pulled.record.size_bytes;
        compressed = pulled.record.layers.iter().map(|(_, n)| n).sum::<u64>();
    }
    // The boots use the default cache.
    oci::ensure(&Store::default_location(), image, None).await?;

    eprintln!("bench: {runs} boots each of the floor, busybox and the image, interleaved");
    let floor_dir = tempfile::tempdir()?;
    let floor_initrd = floor_dir.path().join("floor.cpio");
    write_floor_initramfs(&floor_init, &floor_initrd)?;
    let (mut floor, mut busybox, mut imaged) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        floor.push(floor_boot(&backend, &guest, &floor_initrd, accel).await?);
        busybox.push(cold_start(Sandbox::builder()).await?);
        imaged.push(cold_start(Sandbox::builder().image(image)).await?);
    }

    eprintln!("bench: reading a {file_mib} MiB file from an image disk, a mount and guest RAM");
    let data_dir = tempfile::tempdir()?;
    let mut data = vec![0u8; file_mib << 20];
    rand::rng().fill_bytes(&mut data);
    std::fs::write(data_dir.path().join("data.bin"), &data)?;
    drop(data);
    let tar_path = data_dir.path().join("layer.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&tar_path)?);
        tar.append_path_with_name(data_dir.path().join("data.bin"), "data.bin")?;
        tar.finish()?;
    }
    let data_image = "local/voidbox-bench-data:1";
    let store = Store::default_location();
    let tar = tar_path.clone();
    tokio::task::spawn_blocking(move || {
        oci::import(&store, data_image, &[tar], ImageConfig::default())
    })
    .await
    .context("import")??;
    let sandbox = Sandbox::builder()
        .image_mount(data_image, "/data-image")
        .mount(data_dir.path(), "/data-mount", MountMode::Ro)
        .memory_mb(512 + 2 * file_mib as u32)
        .allowed_commands(["*"])
        .build()
        .await?;
    let from_image = read_secs(&sandbox, "/data-image/data.bin").await?;
    let from_mount = read_secs(&sandbox, "/data-mount/data.bin").await?;
    let copy = sandbox
        .exec(Exec::shell("cp /data-image/data.bin /tmp/data.bin"))
        .await?;
    if !copy.status.success() {
        bail!("copying into guest RAM failed: {}", copy.stderr_text());
    }
    let from_ram = read_secs(&sandbox, "/tmp/data.bin").await?;
    sandbox.shutdown().await?;
    Store::default_location().remove(&oci::parse_reference(data_image)?.whole())?;

    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mbps = |secs: f64| format!("{:.1}", file_mib as f64 * 1.048_576 / secs);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("voidbox bench images: accelerator {accel}, {cpus} CPUs, {runs} boots each, {image}");
    row("measure", "p50", "p90", "p95", "against");
    let floor50 = pct(&floor, 50.0);
    let busybox50 = pct(&busybox, 50.0);
    let imaged50 = pct(&imaged, 50.0);
    row(
        "floor: QEMU + same kernel + echo init (ms)",
        &ms(floor50),
        &ms(pct(&floor, 90.0)),
        &ms(pct(&floor, 95.0)),
        "",
    );
    row(
        "cold start, busybox initramfs (ms)",
        &ms(busybox50),
        &ms(pct(&busybox, 90.0)),
        &ms(pct(&busybox, 95.0)),
        &format!(
            "{:.2}x floor",
            busybox50.as_secs_f64() / floor50.as_secs_f64()
        ),
    );
    row(
        "cold start, OCI image root (ms)",
        &ms(imaged50),
        &ms(pct(&imaged, 90.0)),
        &ms(pct(&imaged, 95.0)),
        &format!(
            "{:.2}x busybox (target <= 1.15x), {:.2}x floor",
            imaged50.as_secs_f64() / busybox50.as_secs_f64(),
            imaged50.as_secs_f64() / floor50.as_secs_f64()
        ),
    );
    row(
        "pull + convert into an empty cache (ms)",
        &ms(pct(&pull_times, 50.0)),
        &ms(pct(&pull_times, 90.0)),
        &ms(pct(&pull_times, 95.0)),
        &format!(
            "{:.1} MiB of layers -> {:.1} MiB erofs, {:.0} MiB/s of image",
            mib(compressed),
            mib(size),
            mib(size) / pct(&pull_times, 50.0).as_secs_f64()
        ),
    );
    row(
        "read from an image disk (MB/s)",
        &mbps(from_image),
        "",
        "",
        &format!("{file_mib} MiB, first read (virtio-blk, erofs)"),
    );
    row(
        "read from a host mount (MB/s)",
        &mbps(from_mount),
        "",
        "",
        &format!("{file_mib} MiB, first read (virtio-9p)"),
    );
    row(
        "read from guest RAM (MB/s)",
        &mbps(from_ram),
        "",
        "",
        "baseline: the same file on the guest's tmpfs",
    );
    Ok(ExitCode::SUCCESS)
}

/// Boot to the first exec's answer.
async fn cold_start(config: SandboxConfig) -> Result<Duration> {
    let started = Instant::now();
    let sandbox = config.build().await?;
    let out = sandbox.exec("true").await?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("`true` failed in the guest: {:?}", out.status);
    }
    sandbox.shutdown().await?;
    Ok(took)
}

/// Seconds to read `path` once in the guest (`dd` to /dev/null).
async fn read_secs(sandbox: &Sandbox, path: &str) -> Result<f64> {
    let started = Instant::now();
    let out = sandbox
        .exec(Exec::new("dd").args([&format!("if={path}"), "of=/dev/null", "bs=1M"]))
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("reading {path} failed: {}", out.stderr_text());
    }
    Ok(secs)
}
