//! Resource usage snapshots read from /proc.

use std::fs;
use std::io;

use void_box_protocol::TelemetrySnapshot;

/// Reads CPU, memory and process figures.
pub fn snapshot() -> io::Result<TelemetrySnapshot> {
    let mut snap = TelemetrySnapshot::default();
    let stat = fs::read_to_string("/proc/stat")?;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => {
                let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal
                snap.cpu_user_ticks =
                    v.first().copied().unwrap_or(0) + v.get(1).copied().unwrap_or(0);
                snap.cpu_system_ticks = v.get(2).copied().unwrap_or(0)
                    + v.get(5).copied().unwrap_or(0)
                    + v.get(6).copied().unwrap_or(0);
                snap.cpu_idle_ticks =
                    v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            }
            Some(name) if name.starts_with("cpu") => snap.cpu_count += 1,
            _ => {}
        }
    }
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    for line in meminfo.lines() {
        let mut fields = line.split_whitespace();
        let key = fields.next();
        let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match key {
            Some("MemTotal:") => snap.mem_total_bytes = kib * 1024,
            Some("MemAvailable:") => snap.mem_available_bytes = kib * 1024,
            _ => {}
        }
    }
    let uptime = fs::read_to_string("/proc/uptime")?;
    if let Some(secs) = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
    {
        snap.uptime_ms = (secs * 1000.0) as u64;
    }
    let loadavg = fs::read_to_string("/proc/loadavg")?;
    snap.load_avg_1m = loadavg
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    snap.process_count = fs::read_dir("/proc")?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u32;
    Ok(snap)
}
