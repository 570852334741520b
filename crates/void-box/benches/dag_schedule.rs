//! Scheduling cost of a 500-step workflow, measured against the in-process
//! guest double (`sandbox::fake`, the real protocol over a socket pair,
//! answering every command at once), so the figures are the scheduler's
//! own (ordering, input hand-off, events, reports). The floor is the same
//! 500 steps driven through the double one after another with no
//! scheduler at all.
//!
//! `cargo bench -p void-box --bench dag_schedule`

use std::time::{Duration, Instant};

use void_box::sandbox::fake::{FakeProvider, FakeReply};
use void_box::sandbox::SandboxProvider;
use void_box::workflow::{Step, Workflow};
use void_box::{Exec, SandboxConfig};

const STEPS: usize = 500;
const RUNS: usize = 15;

/// Deterministic pseudo-random numbers (xorshift), so every run schedules
/// the same graph.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn shapes() -> Vec<(&'static str, Workflow)> {
    let step = |i: usize| Step::command(&format!("s{i}"), "cat", Vec::<String>::new());
    let chain = (0..STEPS).fold(Workflow::named("chain"), |w, i| {
        let s = step(i);
        w.step(if i == 0 {
            s
        } else {
            s.depends_on([format!("s{}", i - 1)])
        })
    });
    let diamond = (0..STEPS).fold(Workflow::named("wide"), |w, i| {
        let s = step(i);
        w.step(match i {
            0 => s,
            i if i == STEPS - 1 => s.depends_on((1..STEPS - 1).map(|j| format!("s{j}"))),
            _ => s.depends_on(["s0"]),
        })
    });
    let mut seed = 0x5eed_u64;
    let random = (0..STEPS).fold(Workflow::named("random"), |w, i| {
        let mut s = step(i).output("out.txt");
        if i > 0 {
            let deps: Vec<String> = (0..3)
                .map(|_| format!("s{}", next(&mut seed) as usize % i))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            s = s.depends_on(deps);
        }
        w.step(s)
    });
    vec![
        ("chain of 500", chain),
        ("1 → 498 → 1", diamond),
        ("random, ≤3 deps", random),
    ]
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Floor: the double driven directly, step after step.
    // Every command echoes its stdin and writes the output file some steps
    // declare.
    let provider = FakeProvider::with_commands(|guest, cmd| {
        guest.put_file("/workspace/out.txt", cmd.stdin.clone());
        FakeReply::ok(cmd.stdin.clone())
    });
    let config = SandboxConfig::default();
    let floor = p50((0..RUNS)
        .map(|_| {
            let started = Instant::now();
            rt.block_on(async {
                for _ in 0..STEPS {
                    let guest = provider.boot(&config).await.unwrap();
                    guest
                        .write_file("/workspace/inputs/x/stdout", b"x")
                        .await
                        .unwrap();
                    guest
                        .exec(Exec::new("cat").stdin_bytes(b"x".to_vec()))
                        .await
                        .unwrap();
                    guest.shutdown().await.unwrap();
                }
            });
            started.elapsed()
        })
        .collect());
    println!("500-step DAG scheduling against a Sandbox test double (p50 of {RUNS} runs)");
    println!(
        "{:<18} {:>12} {:>12} {:>12} {:>10}",
        "shape", "parallel", "scheduler", "floor", "target"
    );
    for (name, workflow) in shapes() {
        for parallel in [8, 64] {
            let workflow = workflow.clone().max_parallel(parallel);
            let took = p50((0..RUNS)
                .map(|_| {
                    let started = Instant::now();
                    let result = rt
                        .block_on(workflow.run_on(&provider, Some("in"), Default::default()))
                        .unwrap();
                    assert_eq!(result.steps.len(), STEPS);
                    started.elapsed()
                })
                .collect());
            println!(
                "{name:<18} {parallel:>12} {:>12} {:>12} {:>10}",
                format!("{:.2} ms", took.as_secs_f64() * 1e3),
                format!("{:.2} ms", floor.as_secs_f64() * 1e3),
                "< 1000 ms"
            );
        }
    }
}
