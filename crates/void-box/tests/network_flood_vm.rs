//! A guest that floods the network: connections without limit, data at a
//! server that never reads, and a storm of UDP datagrams. Its own test
//! binary, so that the host memory it measures (this process's RSS) is
//! this test's alone, not that of whatever other test runs beside it.
//! Needs `scripts/setup.sh --with-test-tools`.

mod common;

use std::time::Duration;

use common::net::{http_server, python_image, silent_server};
use void_box::net::{NetworkLimits, NetworkPolicy};
use void_box::{Exec, Sandbox};

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_guest_is_held_to_its_limits_and_its_neighbour_is_not_slowed() {
    let (_registry, image) = python_image().await;
    // A server that accepts and never reads or answers.
    let silent_port = silent_server().await.port();
    let answering = http_server("127.0.0.1:0", "still here").await;
    let rules = |port: u16| {
        NetworkPolicy::rules(&[format!("host.voidbox.internal:{port}")], &[] as &[&str]).unwrap()
    };
    let limits = NetworkLimits {
        max_connections: 16,
        ..NetworkLimits::default()
    };
    let flooder = Sandbox::builder()
        .image(&image)
        .network(
            NetworkPolicy::rules(
                &[format!("host.voidbox.internal:{silent_port}")],
                &[] as &[&str],
            )
            .unwrap()
            .with_limits(limits),
        )
        .build()
        .await
        .unwrap();
    let neighbour = Sandbox::builder()
        .network(rules(answering.port()))
        .build()
        .await
        .unwrap();
    let rss_before = rss_kib();
    // 200 connections, each pushing 4 MiB at a server that never reads,
    // and a flood of 50,000 UDP datagrams.
    let flood = format!(
        "python3 -c \"import socket, threading\nopened, refused = 0, 0\nsocks = []\nfor i in range(200):\n    try:\n        s = socket.create_connection(('host.voidbox.internal', {silent_port}), timeout=10)\n        s.setblocking(False)\n        socks.append(s); opened += 1\n    except OSError:\n        refused += 1\nblob = b'x' * (4 << 20)\nfor s in socks:\n    try: s.send(blob)\n    except OSError: pass\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(50000):\n    try: u.sendto(b'y' * 1000, ('10.0.2.2', 9))\n    except OSError: pass\nprint(opened, refused)\""
    );
    let flooding = flooder.exec(Exec::shell(flood).timeout(Duration::from_secs(300)));
    let neighbour_ok = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = std::time::Instant::now();
        let out = neighbour
            .exec(Exec::shell(format!(
                "wget -q -O - http://host.voidbox.internal:{}/",
                answering.port()
            )))
            .await
            .unwrap();
        (out.stdout_text(), started.elapsed())
    };
    let (flood_out, (neighbour_out, neighbour_took)) = tokio::join!(flooding, neighbour_ok);
    let flood_out = flood_out.unwrap();
    let counts: Vec<u32> = flood_out
        .stdout_text()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(
        counts.len(),
        2,
        "{}{}",
        flood_out.stdout_text(),
        flood_out.stderr_text()
    );
    assert_eq!(counts[0], 16, "at most max_connections open");
    assert_eq!(counts[1], 184);
    assert_eq!(neighbour_out, "still here");
    assert!(
        neighbour_took < Duration::from_secs(30),
        "{neighbour_took:?}"
    );
    let grown_mib = (rss_kib().saturating_sub(rss_before)) / 1024;
    eprintln!("host RSS grew by {grown_mib} MiB during the flood");
    // 16 connections × 256 KiB each way at most in buffers (8-9 MiB
    // measured here), plus slack; unbounded, the 64 MiB the guest pushed
    // would sit on the host.
    assert!(grown_mib < 32, "host RSS grew by {grown_mib} MiB");
    flooder.shutdown().await.unwrap();
    neighbour.shutdown().await.unwrap();
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
