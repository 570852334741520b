//! Scheduling cost of a 500-step workflow, measured against a `Sandbox`
//! test double that answers instantly, so the figures are the scheduler's
//! own (ordering, input hand-off, events, reports). The floor is the same
//! 500 steps driven through the double one after another with no
//! scheduler at all.
//!
//! `cargo bench -p void-box --bench dag_schedule`

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use void_box::sandbox::{GuestSession, SandboxProvider};
use void_box::workflow::{Step, Workflow};
use void_box::{Exec, ExitStatus, Output, SandboxBuilder};

const STEPS: usize = 500;
const RUNS: usize = 15;

/// A guest that keeps files in memory and answers every command by
/// echoing its stdin.
#[derive(Default)]
struct FakeGuest {
    files: Mutex<HashMap<String, Vec<u8>>>,
}

impl GuestSession for FakeGuest {
    fn exec(&self, cmd: Exec) -> BoxFuture<'_, void_box::Result<Output>> {
        let stdin = cmd.stdin_data().map(<[u8]>::to_vec).unwrap_or_default();
        Box::pin(async move {
            Ok(Output {
                status: ExitStatus {
                    code: Some(0),
                    ..Default::default()
                },
                stdout: stdin,
                stderr: Vec::new(),
            })
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, void_box::Result<()>> {
        self.files
            .lock()
            .unwrap()
            .insert(path.into(), data.to_vec());
        Box::pin(async { Ok(()) })
    }

    fn read_file<'a>(&'a self, path: &'a str) -> BoxFuture<'a, void_box::Result<Vec<u8>>> {
        let data = self
            .files
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(data) })
    }

    fn mkdir<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, void_box::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn shutdown(self: Box<Self>) -> BoxFuture<'static, void_box::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

struct FakeProvider;

impl SandboxProvider for FakeProvider {
    fn boot<'a>(
        &'a self,
        _b: &'a SandboxBuilder,
    ) -> BoxFuture<'a, void_box::Result<Box<dyn GuestSession>>> {
        Box::pin(async { Ok(Box::new(FakeGuest::default()) as Box<dyn GuestSession>) })
    }
}

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
    let builder = SandboxBuilder::default();
    let floor = p50((0..RUNS)
        .map(|_| {
            let started = Instant::now();
            rt.block_on(async {
                for _ in 0..STEPS {
                    let guest = FakeProvider.boot(&builder).await.unwrap();
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
                        .block_on(workflow.run_with(Some("in"), Default::default(), &FakeProvider))
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
