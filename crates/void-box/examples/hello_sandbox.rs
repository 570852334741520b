//! Boots a sandbox, runs a command, moves a file in and out, and shuts down.
//!
//! Run with `cargo run -p void-box --example hello_sandbox` after
//! `scripts/setup.sh` (which builds the guest image).

use void_box::{Exec, ExecEvent, Sandbox};

#[tokio::main]
async fn main() -> Result<(), void_box::Error> {
    let sandbox = Sandbox::builder()
        .memory_mb(256)
        .env("GREETING", "hello")
        .build()
        .await?;
    println!("booted in {:?} on {}", sandbox.boot_time(), sandbox.accel());

    let out = sandbox
        .exec(Exec::shell(
            "echo \"$GREETING from $(uname -n), kernel $(uname -r)\"",
        ))
        .await?;
    print!("{}", out.stdout_text());

    sandbox
        .write_file("/workspace/numbers.txt", b"3\n1\n2\n")
        .await?;
    let mut sort = sandbox
        .exec_stream(["sort", "/workspace/numbers.txt"])
        .await?;
    while let Some(event) = sort.next().await? {
        match event {
            ExecEvent::Stdout(chunk) => print!("sorted: {}", String::from_utf8_lossy(&chunk)),
            ExecEvent::Stderr(chunk) => eprint!("{}", String::from_utf8_lossy(&chunk)),
            ExecEvent::Exit(status) => println!("sort exited with {:?}", status.code),
        }
    }

    let t = sandbox.telemetry().await?;
    println!(
        "guest: {} processes, {} MiB of {} MiB available",
        t.process_count,
        t.mem_available_bytes >> 20,
        t.mem_total_bytes >> 20
    );
    sandbox.shutdown().await
}
