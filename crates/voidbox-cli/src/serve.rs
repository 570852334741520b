//! `voidbox serve`: the daemon (crate `voidbox-server`), until a stop
//! signal; then every sandbox it holds is ended.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use voidbox_server::{Bound, Listen, ServeConfig};

use crate::stop::StopSignals;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// `unix:PATH` (the default: `voidbox.sock` in $XDG_RUNTIME_DIR, else
    /// the data directory; made 0600) or `tcp:ADDR:PORT` (needs a token).
    #[arg(long, value_name = "unix:PATH|tcp:ADDR:PORT")]
    listen: Option<Listen>,
    /// A file holding the bearer token every request must carry (at least
    /// 16 characters; required on TCP).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Most sandboxes alive at once.
    #[arg(long, default_value_t = 16)]
    max_sandboxes: usize,
    /// Where the daemon keeps what outlives it (`voidbox.db`: runs and
    /// their events, sessions and their messages, sandboxes); default
    /// `<data_dir>/server`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A lane's concurrency and queue bound, as `generate=2:50` (lanes:
    /// control, query, execute, generate); repeatable. A request or run
    /// beyond the bound is answered 429 with Retry-After.
    #[arg(long = "lane", value_name = "LANE=N:QUEUE")]
    lanes: Vec<String>,
    /// An E2B template: the name an E2B SDK asks for and the snapshot or
    /// image reference it stands for (`python=python:3.12-slim`);
    /// repeatable. Without one, a template is a snapshot's name, an image
    /// reference, or `base` (the plain guest).
    #[arg(long = "e2b-template", value_name = "NAME=SNAPSHOT|IMAGE")]
    e2b_templates: Vec<String>,
    /// Guest RAM of each sandbox the E2B API creates, in MiB.
    #[arg(long, default_value_t = 512)]
    e2b_memory_mb: u32,
    /// Keep N sandboxes booted ahead for each E2B template in use, so that
    /// `Sandbox.create` takes a ready one (they count against
    /// --max-sandboxes only once handed out).
    #[arg(long, value_name = "N", default_value_t = 0)]
    e2b_pool: usize,
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            let token = text.trim().to_string();
            if token.is_empty() {
                bail!("the token file {} is empty", path.display());
            }
            Some(token)
        }
        None => None,
    };
    let mut config = ServeConfig::new(args.listen.unwrap_or_else(Listen::default_socket), token);
    config.max_sandboxes = args.max_sandboxes;
    for template in &args.e2b_templates {
        let (name, target) = template
            .split_once('=')
            .filter(|(n, t)| !n.is_empty() && !t.is_empty())
            .with_context(|| format!("--e2b-template {template}: expected NAME=SNAPSHOT|IMAGE"))?;
        config.e2b.templates.insert(name.into(), target.into());
    }
    config.e2b.memory_mb = args.e2b_memory_mb;
    config.e2b.pool = args.e2b_pool;
    for lane in &args.lanes {
        config
            .lanes
            .parse_into(lane)
            .map_err(|e| anyhow::anyhow!("--lane {e}"))?;
    }
    config.state_dir = Some(
        args.state_dir
            .unwrap_or_else(|| void_box::data_dir().join("server")),
    );
    let mut stop = StopSignals::new()?;
    let bound = Bound::bind(config).await?;
    eprintln!("voidbox serve: listening on {}", bound.address());
    bound
        .run(async move {
            stop.next().await;
        })
        .await?;
    eprintln!("voidbox serve: stopped; every sandbox ended");
    Ok(ExitCode::SUCCESS)
}
