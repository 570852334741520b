//! `voidbox bench network`: a download from a server on the host's
//! loopback into the guest (curl to /dev/null), beside the same download
//! by curl on the host; TCP connect latency guest → allowed host service
//! (its name resolved once, as a client with a connection pool does;
//! resolving is the DNS row), beside a connect on the guest's own
//! loopback; DNS look-up latency through the host's resolver. One
//! sandbox, one run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use void_box::net::NetworkPolicy;
use void_box::vm::Accel;
use void_box::{Exec, Sandbox};

use super::{ms, pct, row};

pub async fn run(
    image: &str,
    size_mib: usize,
    connects: usize,
    lookups: usize,
) -> Result<ExitCode> {
    if size_mib == 0 || connects == 0 || lookups == 0 {
        bail!("--size-mib, --connects and --lookups must be positive");
    }
    let accel = Accel::from_env()?;
    let port = serve_bytes(size_mib << 20).await?;
    // 127.0.0.0/8 lets the DNS figure use `localhost` from the host's
    // /etc/hosts: the host's resolver without the internet.
    let policy = NetworkPolicy::rules(
        &[
            format!("host.voidbox.internal:{port}"),
            "127.0.0.0/8".into(),
        ],
        &[] as &[&str],
    )?;
    eprintln!("bench: accelerator {accel}; booting {image} with a network");
    let sandbox = Sandbox::builder()
        .image(image)
        .memory_mb(1024)
        .network(policy)
        .build()
        .await
        .context("boot the sandbox (is the image pullable and curl in it?)")?;

    eprintln!("bench: downloading {size_mib} MiB, 3 times each in the guest and on the host");
    let url_guest = format!("http://host.voidbox.internal:{port}/blob");
    let url_host = format!("http://127.0.0.1:{port}/blob");
    let (mut guest, mut host) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        guest.push(guest_download(&sandbox, &url_guest).await?);
        host.push(host_download(&url_host).await?);
    }

    eprintln!("bench: {connects} connects and {lookups} DNS look-ups from the guest");
    let script = format!(
        "import socket, time\n\
         a = socket.gethostbyname('host.voidbox.internal')\n\
         c = []\n\
         for i in range({connects}):\n\
         \x20   t = time.perf_counter(); s = socket.create_connection((a, {port})); c.append(time.perf_counter() - t); s.close()\n\
         l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1024); lp = l.getsockname()[1]\n\
         g = []\n\
         for i in range({connects}):\n\
         \x20   t = time.perf_counter(); s = socket.create_connection(('127.0.0.1', lp)); g.append(time.perf_counter() - t); s.close(); l.accept()[0].close()\n\
         q = b'\\x00\\x07\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x09localhost\\x00\\x00\\x01\\x00\\x01'\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)\n\
         d = []\n\
         for i in range({lookups}):\n\
         \x20   t = time.perf_counter(); u.sendto(q, ('10.0.2.2', 53)); r = u.recv(512); d.append(time.perf_counter() - t)\n\
         \x20   assert r[3] & 15 == 0 and r[7] == 1, r\n\
         print(' '.join(str(x) for x in c)); print(' '.join(str(x) for x in d)); print(' '.join(str(x) for x in g))\n"
    );
    let out = sandbox
        .exec(
            Exec::new("python3")
                .args(["-c", &script])
                .timeout(Duration::from_secs(600)),
        )
        .await?;
    if !out.status.success() {
        bail!("the latency script {}: {}", out.status, out.stderr_text());
    }
    let text = out.stdout_text();
    let mut lines = text.lines();
    let parse = |line: Option<&str>| -> Vec<Duration> {
        line.unwrap_or("")
            .split_whitespace()
            .filter_map(|s| s.parse::<f64>().ok())
            .map(Duration::from_secs_f64)
            .collect()
    };
    let connect = parse(lines.next());
    let dns = parse(lines.next());
    let local = parse(lines.next());
    sandbox.shutdown().await?;

    let rate = |samples: &[f64]| {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    println!("network ({accel}, {size_mib} MiB download, {connects} connects, {lookups} look-ups)");
    row("measure", "p50", "p90", "p95", "against");
    row(
        "download into the guest (MB/s, median of 3)",
        &format!("{:.0}", rate(&guest)),
        "",
        "",
        &format!("host curl {:.0} MB/s; target >= 100 MB/s", rate(&host)),
    );
    row(
        "TCP connect guest -> host service, name resolved once (ms)",
        &ms(pct(&connect, 50.0)),
        &ms(pct(&connect, 90.0)),
        &ms(pct(&connect, 95.0)),
        &format!(
            "guest loopback connect p50 {} ms; target p50 < 5 ms",
            ms(pct(&local, 50.0))
        ),
    );
    row(
        "DNS look-up via the host resolver (ms)",
        &ms(pct(&dns, 50.0)),
        &ms(pct(&dns, 90.0)),
        &ms(pct(&dns, 95.0)),
        "",
    );
    Ok(ExitCode::SUCCESS)
}

/// Serves `size` bytes to every HTTP request on 127.0.0.1; returns the port.
async fn serve_bytes(size: usize) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let chunk = vec![b'v'; 1 << 20];
        while let Ok((mut conn, _)) = listener.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut head).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&head[..n]),
                    }
                    if seen.len() > 64 * 1024 {
                        return;
                    }
                }
                if !seen.starts_with(b"GET /blob") {
                    return; // a bare connect, from the latency loop
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                );
                if conn.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                let mut left = size;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if conn.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    Ok(port)
}

/// MB/s of one curl download in the guest, as curl measures it.
async fn guest_download(sandbox: &Sandbox, url: &str) -> Result<f64> {
    let out = sandbox
        .exec(
            Exec::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{speed_download}", url])
                .timeout(Duration::from_secs(600)),
        )
        .await?;
    if !out.status.success() {
        bail!("curl in the guest {}: {}", out.status, out.stderr_text());
    }
    let bytes_per_s: f64 = out.stdout_text().trim().parse().context("curl's speed")?;
    Ok(bytes_per_s / 1e6)
}

async fn host_download(url: &str) -> Result<f64> {
    let url = url.to_string();
    let started = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{speed_download}", &url])
        .output()
        .await
        .context("run curl on the host")?;
    if !out.status.success() {
        bail!("curl on the host failed after {:?}", started.elapsed());
    }
    let bytes_per_s: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(bytes_per_s / 1e6)
}
