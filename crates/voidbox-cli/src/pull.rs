//! Pull progress for the terminal (a bar per image: bytes, rate, layers)
//! or as JSON lines, and making sure the images a command needs are
//! cached before any VM boots.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use void_box::oci::{self, CachedImage, Progress, PullEvent, Store};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Bars on a terminal, a line per image elsewhere.
    Human,
    /// One JSON object per event on stdout (`{"event": "image_pull", ...}`).
    Json,
}

/// A progress receiver for `show`.
pub fn progress(show: Show) -> Progress {
    match show {
        Show::Json => Arc::new(|event: PullEvent| {
            let mut line = serde_json::to_value(&event).unwrap_or_default();
            if let Some(map) = line.as_object_mut() {
                map.insert("event".into(), "image_pull".into());
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }),
        Show::Human => {
            let bars: Arc<Mutex<HashMap<String, (ProgressBar, usize)>>> = Arc::default();
            let tty = std::io::stderr().is_terminal();
            Arc::new(move |event: PullEvent| human(&bars, tty, event))
        }
    }
}

fn human(bars: &Mutex<HashMap<String, (ProgressBar, usize)>>, tty: bool, event: PullEvent) {
    let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
    match event {
        PullEvent::Resolved {
            reference,
            digest,
            layers,
            total_bytes,
        } => {
            let short = &digest[..digest.len().min(19)];
            if !tty {
                eprintln!(
                    "pulling {reference} ({short}, {layers} layer(s), {})",
                    mib(total_bytes)
                );
                return;
            }
            let bar =
                ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("pulling {reference}"));
            bar.set_message(format!("layer 1/{layers}"));
            bars.insert(reference, (bar, layers));
        }
        PullEvent::Layer {
            reference,
            layer,
            total_done,
            ..
        } => {
            if let Some((bar, layers)) = bars.get(&reference) {
                bar.set_position(total_done);
                bar.set_message(format!("layer {layer}/{layers}"));
            }
        }
        PullEvent::Done {
            reference,
            size_bytes,
            cached,
            duration,
            ..
        } => {
            if let Some((bar, _)) = bars.remove(&reference) {
                bar.finish_and_clear();
            }
            let how = if cached { "already cached" } else { "pulled" };
            eprintln!(
                "{how} {reference}: {} image in {:.1}s",
                mib(size_bytes),
                duration.as_secs_f64()
            );
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Makes sure every image in `references` is cached (pulling what is
/// not), showing progress, so that a boot never waits on a silent pull.
pub async fn ensure_all(references: &[String], show: Show) -> Result<Vec<CachedImage>> {
    let store = Store::default_location();
    let progress = progress(show);
    let mut images = Vec::new();
    for reference in references {
        images.push(oci::ensure(&store, reference, Some(progress.clone())).await?);
    }
    Ok(images)
}
