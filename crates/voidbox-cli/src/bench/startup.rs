//! `voidbox bench startup`: the sandbox's start-up and exec figures printed
//! side by side with the floor they are measured against.
//!
//! The floor is the same QEMU, kernel, and agent port booting a trivial
//! static init (`floor-init`) that only echoes on that port: everything a
//! sandbox does beyond that is ours to answer for.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use void_box::vm::image::GuestImage;
use void_box::vm::initramfs::CpioWriter;
use void_box::vm::qemu::QemuBackend;
use void_box::vm::{Accel, VmBackend, VmSpec};
use void_box::Sandbox;

use super::{ms, pct, row};

pub async fn run(
    runs: usize,
    execs: usize,
    floor_init: PathBuf,
    file_mib: usize,
) -> Result<ExitCode> {
    if runs == 0 || execs == 0 {
        bail!("--runs and --execs must be positive");
    }
    let image = GuestImage::resolve()?;
    let accel = Accel::from_env()?;
    let backend = QemuBackend::from_env()?;
    eprintln!("bench: accelerator {accel}, {runs} boots each, {execs} execs");

    let floor_dir = tempfile::tempdir()?;
    let floor_initrd = floor_dir.path().join("floor.cpio");
    write_floor_initramfs(&floor_init, &floor_initrd)?;
    let mut floor = Vec::new();
    for _ in 0..runs {
        floor.push(floor_boot(&backend, &image, &floor_initrd, accel).await?);
    }

    let mut cold = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let sandbox = Sandbox::builder().build().await?;
        let out = sandbox.exec("true").await?;
        cold.push(started.elapsed());
        if !out.status.success() {
            bail!("`true` failed in the guest: {:?}", out.status);
        }
        sandbox.shutdown().await?;
    }

    let sandbox = Sandbox::builder().build().await?;
    let mut exec_times = Vec::new();
    for _ in 0..execs {
        let started = Instant::now();
        sandbox.exec("true").await?;
        exec_times.push(started.elapsed());
    }
    // The same round trip without a process: what the protocol costs.
    let mut stat_times = Vec::new();
    for _ in 0..execs {
        let started = Instant::now();
        sandbox.stat("/workspace").await?;
        stat_times.push(started.elapsed());
    }
    let data = vec![0x5au8; file_mib << 20];
    let started = Instant::now();
    sandbox.write_file("/tmp/bench.bin", &data).await?;
    let write_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let back = sandbox.read_file("/tmp/bench.bin").await?;
    let read_secs = started.elapsed().as_secs_f64();
    if back.len() != data.len() {
        bail!("read back {} of {} bytes", back.len(), data.len());
    }
    sandbox.exec(["rm", "/tmp/bench.bin"]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = host_overhead_kib(sandbox.host_pids()[0])?;
    sandbox.shutdown().await?;
    let warm = super::warm::measure(runs).await?;

    let mb = file_mib as f64 * 1.048_576;
    let (floor50, cold50) = (pct(&floor, 50.0), pct(&cold, 50.0));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "voidbox bench startup: accelerator {accel}, {cpus} CPUs, {runs} boots, {execs} execs"
    );
    row("measure", "p50", "p90", "p95", "against");
    row(
        "floor: QEMU + same kernel + echo init (ms)",
        &ms(floor50),
        &ms(pct(&floor, 90.0)),
        &ms(pct(&floor, 95.0)),
        "",
    );
    row(
        "sandbox cold start to first exec (ms)",
        &ms(cold50),
        &ms(pct(&cold, 90.0)),
        &ms(pct(&cold, 95.0)),
        &format!(
            "{:.2}x floor p50 (target <= 1.30x)",
            cold50.as_secs_f64() / floor50.as_secs_f64()
        ),
    );
    row(
        "exec round trip of `true` (ms)",
        &ms(pct(&exec_times, 50.0)),
        &ms(pct(&exec_times, 90.0)),
        &ms(pct(&exec_times, 95.0)),
        "target p50 < 5 ms",
    );
    row(
        "request round trip without a process (ms)",
        &ms(pct(&stat_times, 50.0)),
        &ms(pct(&stat_times, 90.0)),
        &ms(pct(&stat_times, 95.0)),
        "stat of /workspace: protocol + channel only",
    );
    row(
        "host -> guest file write (MB/s)",
        &format!("{:.1}", mb / write_secs),
        "",
        "",
        &format!("{file_mib} MiB file"),
    );
    row(
        "guest -> host file read (MB/s)",
        &format!("{:.1}", mb / read_secs),
        "",
        "",
        &format!("{file_mib} MiB file"),
    );
    row(
        "host RSS per idle sandbox (MiB)",
        &format!("{:.1}", rss as f64 / 1024.0),
        "",
        "",
        "QEMU anon+file RSS; guest RAM (memfd) excluded",
    );
    warm_rows(&warm, cold50);
    Ok(ExitCode::SUCCESS)
}

/// The warm-start rows, each set against the cold start's p50.
fn warm_rows(warm: &super::warm::Warm, cold50: Duration) {
    let times = |measure: &str, samples: &[Duration], against: String| {
        row(
            measure,
            &ms(pct(samples, 50.0)),
            &ms(pct(samples, 90.0)),
            &ms(pct(samples, 95.0)),
            &against,
        )
    };
    let of_cold = |samples: &[Duration]| pct(samples, 50.0).as_secs_f64() / cold50.as_secs_f64();
    times(
        "snapshot restore to first exec (ms)",
        &warm.restore,
        format!(
            "{:.3}x cold start p50 (target <= 0.10x)",
            of_cold(&warm.restore)
        ),
    );
    times(
        "first exec after a restore (ms)",
        &warm.first_exec,
        "cold translation cache under TCG".into(),
    );
    times(
        "next 10 execs after a restore (ms)",
        &warm.later_execs,
        "beside the exec round trip above".into(),
    );
    times(
        "fork of a running sandbox to first exec (ms)",
        &warm.fork,
        format!(
            "{:.3}x cold start p50 (target <= 0.20x)",
            of_cold(&warm.fork)
        ),
    );
    times(
        "pool acquire to first exec (ms)",
        &warm.acquire,
        format!(
            "target <= 10 ms + one exec round trip ({} ms p50)",
            ms(pct(&warm.later_execs, 50.0))
        ),
    );
    times(
        "pause: state on disk, VM gone (ms)",
        &warm.pause,
        String::new(),
    );
    times(
        "resume to first exec (ms)",
        &warm.resume,
        format!("{:.3}x cold start p50", of_cold(&warm.resume)),
    );
    row(
        "snapshot size on disk (MiB)",
        &format!("{:.1}", warm.disk_bytes as f64 / 1048576.0),
        "",
        "",
        &format!(
            "512 MiB guest, zero pages not stored; devices' state {:.0} KiB; saved in {} ms",
            warm.devices_bytes as f64 / 1024.0,
            ms(warm.save)
        ),
    );
}

pub(super) fn write_floor_initramfs(init: &Path, dest: &Path) -> Result<()> {
    let binary = std::fs::read(init).with_context(|| {
        format!(
            "reading the floor init {} (build it with scripts/build-guest.sh)",
            init.display()
        )
    })?;
    let mut w = CpioWriter::new(Vec::new());
    w.dir("dev", 0o755, 0, 0)?;
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.file("init", 0o755, 0, 0, &binary)?;
    std::fs::write(dest, w.finish()?)?;
    Ok(())
}

/// QEMU start to the first echo from the floor init.
pub(super) async fn floor_boot(
    backend: &QemuBackend,
    image: &GuestImage,
    initrd: &Path,
    accel: Accel,
) -> Result<Duration> {
    let spec = VmSpec {
        kernel: image.kernel.clone(),
        initramfs: initrd.to_path_buf(),
        extra_initramfs: Vec::new(),
        memory_mb: 512,
        vcpus: 1,
        accel,
        cmdline_extra: String::new(),
        disks: Vec::new(),
        shares: Vec::new(),
        network: false,
        incoming: None,
    };
    let started = Instant::now();
    let vm = backend.launch(&spec).await?;
    let deadline = started + Duration::from_secs(30);
    loop {
        if Instant::now() > deadline {
            bail!("the floor VM did not answer: {}", vm.console_tail(2000));
        }
        if let Ok(mut stream) = vm.connect_agent().await {
            stream.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            if tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
                .await
                .is_ok()
                && &buf == b"ping"
            {
                let elapsed = started.elapsed();
                vm.kill();
                return Ok(elapsed);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Host memory of an idle VM beyond its guest RAM, in KiB.
fn host_overhead_kib(qemu_pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{qemu_pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(field("RssAnon:") + field("RssFile:"))
}
