//! OCI images as a sandbox's root filesystem: pull from any distribution
//! registry, check every blob against its digest as it streams, apply the
//! layers, convert the result once into a read-only erofs image cached by
//! its manifest digest, and hand that file to the VM as a disk.
//!
//! ```no_run
//! # async fn demo() -> Result<(), void_box::oci::ImageError> {
//! use void_box::oci::{pull, Store};
//! let image = pull(&Store::default_location(), "localhost:5000/python:3.12", None).await?;
//! println!("{} ({} bytes)", image.record.digest, image.record.size_bytes);
//! # Ok(()) }
//! ```

mod config;
mod convert;
mod erofs;
mod import;
mod layers;
mod registry;
mod store;
mod tree;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_client::manifest::OciDescriptor;
use serde::{Deserialize, Serialize};

pub use config::{resolve_user, ImageConfig, ResolvedUser};
pub use registry::{parse_reference, plain_http_allowed};
pub use store::{CachedImage, ImageRecord, RefRecord, Store};

pub use import::import;

use convert::Pending;

/// Most layers an image may have.
const MAX_LAYERS: usize = 256;
/// How long a pull may wait for another pull of the same image.
const LOCK_DEADLINE: Duration = Duration::from_secs(60 * 60);
/// Largest image config blob accepted.
const MAX_CONFIG: u64 = 4 << 20;
/// How long the manifest may take.
const MANIFEST_DEADLINE: Duration = Duration::from_secs(120);

/// Why an image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference is not one.
    #[error("image reference `{reference}`: {message}")]
    Reference {
        /// As given.
        reference: String,
        /// Why.
        message: String,
    },
    /// The registry refused, failed or sent something unacceptable.
    #[error("pulling {reference}: {message}")]
    Registry {
        /// The image.
        reference: String,
        /// What went wrong (blob digests are named).
        message: String,
    },
    /// A layer could not be applied or converted.
    #[error("pulling {reference}: layer {layer}: {message}")]
    Layer {
        /// The image.
        reference: String,
        /// The layer's digest.
        layer: String,
        /// What went wrong.
        message: String,
    },
    /// The image is not usable (wrong platform, unknown user, ...).
    #[error("image {reference}: {message}")]
    Unusable {
        /// The image.
        reference: String,
        /// Why.
        message: String,
    },
    /// The cache directory failed.
    #[error("image cache {}: {message}", path.display())]
    Cache {
        /// Where.
        path: PathBuf,
        /// What.
        message: String,
    },
    /// The image is not in the cache and pulling was not allowed.
    #[error(
        "image {reference} is not in the cache (pull it with `voidbox image pull {reference}`)"
    )]
    NotCached {
        /// The image.
        reference: String,
    },
}

/// Progress of a pull, for displays and `--output json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum PullEvent {
    /// The manifest was read: what will be downloaded.
    Resolved {
        /// The reference, normalised.
        reference: String,
        /// The manifest digest.
        digest: String,
        /// Layer count.
        layers: usize,
        /// Compressed bytes of all layers.
        total_bytes: u64,
    },
    /// Bytes of a layer arrived (sent about every MiB and at its end).
    Layer {
        /// The reference, normalised.
        reference: String,
        /// 1-based layer number.
        layer: usize,
        /// Bytes of this layer so far.
        bytes: u64,
        /// Its size.
        size: u64,
        /// Bytes of all layers so far.
        total_done: u64,
    },
    /// The image is converted and cached.
    Done {
        /// The reference, normalised.
        reference: String,
        /// The manifest digest.
        digest: String,
        /// Size of the erofs image.
        size_bytes: u64,
        /// Whether it was already cached (nothing downloaded).
        cached: bool,
        /// Wall time of the pull.
        #[serde(rename = "duration_ms", with = "crate::millis")]
        duration: Duration,
    },
}

/// Receives pull progress.
pub type Progress = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// The image `reference` names: from the cache when it is there, else
/// pulled. What a sandbox boot uses; `voidbox image pull` always asks the
/// registry.
pub async fn ensure(
    store: &Store,
    reference: &str,
    progress: Option<Progress>,
) -> Result<CachedImage, ImageError> {
    let parsed = parse_reference(reference)?;
    let name = parsed.whole();
    let cached = || match parsed.digest() {
        Some(digest) => store.by_digest(digest),
        None => store.by_reference(&name),
    };
    if let Some(image) = cached() {
        return Ok(image);
    }
    // Another pull of it may be under way: wait for it, then look again,
    // so that parallel boots of one image download it once and a finished
    // pull needs no registry.
    let lock = store.lock(&name, LOCK_DEADLINE).await?;
    if let Some(image) = cached() {
        return Ok(image);
    }
    pull_locked(store, &parsed, progress, lock).await
}

/// Resolves `reference` at its registry and makes sure its image is
/// cached, downloading and converting it when it is not. Concurrent pulls
/// of one reference share one download.
pub async fn pull(
    store: &Store,
    reference: &str,
    progress: Option<Progress>,
) -> Result<CachedImage, ImageError> {
    let parsed = parse_reference(reference)?;
    let lock = store.lock(&parsed.whole(), LOCK_DEADLINE).await?;
    pull_locked(store, &parsed, progress, lock).await
}

/// A pull, with the reference's lock held.
async fn pull_locked(
    store: &Store,
    parsed: &oci_client::Reference,
    progress: Option<Progress>,
    _lock: store::PullLock,
) -> Result<CachedImage, ImageError> {
    let started = Instant::now();
    let progress = progress.unwrap_or_else(|| Arc::new(|_| {}));
    let name = parsed.whole();
    let registry_error = |message: String| ImageError::Registry {
        reference: name.clone(),
        message,
    };
    let client = registry::client_for(parsed);
    let auth = registry::auth_for(parsed);
    let (manifest, digest) =
        tokio::time::timeout(MANIFEST_DEADLINE, client.pull_image_manifest(parsed, &auth))
            .await
            .map_err(|_| registry_error(format!("no manifest within {MANIFEST_DEADLINE:?}")))?
            .map_err(|e| registry_error(e.to_string()))?;
    if let Some(image) = store.by_digest(&digest) {
        store.tag(&name, &digest)?;
        progress(PullEvent::Done {
            reference: name.clone(),
            digest,
            size_bytes: image.record.size_bytes,
            cached: true,
            duration: started.elapsed(),
        });
        return Ok(image);
    }
    let unusable = |message: String| ImageError::Unusable {
        reference: name.clone(),
        message,
    };
    let config_json = read_config(&client, parsed, &manifest.config)
        .await
        .map_err(|e| registry_error(format!("config {}: {e}", manifest.config.digest)))?;
    let config = ImageConfig::parse(&config_json).map_err(unusable)?;
    if manifest.layers.len() > MAX_LAYERS {
        return Err(unusable(format!(
            "{} layers; at most {MAX_LAYERS} are accepted",
            manifest.layers.len()
        )));
    }
    let total_bytes: u64 = manifest
        .layers
        .iter()
        .map(|l| u64::try_from(l.size).unwrap_or(0))
        .sum();
    progress(PullEvent::Resolved {
        reference: name.clone(),
        digest: digest.clone(),
        layers: manifest.layers.len(),
        total_bytes,
    });

    let mut pending = Pending::start(store)?;
    let total_done = Arc::new(AtomicU64::new(0));
    for (i, layer) in manifest.layers.iter().enumerate() {
        let layer_error = |message: String| ImageError::Layer {
            reference: name.clone(),
            layer: layer.digest.clone(),
            message,
        };
        let codec = layers::Codec::of(&layer.media_type)
            .ok_or_else(|| layer_error(format!("unsupported media type {}", layer.media_type)))?;
        let report = layer_progress(&progress, &name, i + 1, layer, total_done.clone());
        let mut blob = registry::open_blob(&client, parsed, layer, report).await?;
        let (returned, applied) = tokio::task::spawn_blocking(move || {
            let applied = pending
                .apply(codec, &mut blob)
                .and_then(|()| blob.finish().map_err(Into::into));
            (pending, applied)
        })
        .await
        .map_err(|e| layer_error(format!("the converter failed: {e}")))?;
        pending = returned;
        applied.map_err(|e| layer_error(e.to_string()))?;
    }
    let layers: Vec<(String, u64)> = manifest
        .layers
        .iter()
        .map(|l| (l.digest.clone(), u64::try_from(l.size).unwrap_or(0)))
        .collect();
    let (store, record_digest, reference) = (store.clone(), digest.clone(), name.clone());
    let image = tokio::task::spawn_blocking(move || {
        pending.commit(&store, record_digest, &reference, config, layers)
    })
    .await
    .map_err(|e| ImageError::Cache {
        path: PathBuf::new(),
        message: format!("the converter failed: {e}"),
    })??;
    let size_bytes = image.record.size_bytes;
    progress(PullEvent::Done {
        reference: name,
        digest,
        size_bytes,
        cached: false,
        duration: started.elapsed(),
    });
    Ok(image)
}

/// The image config blob, through the same capped, verifying reader as
/// the layers (a registry cannot make us hold more than it declared, nor
/// more than [`MAX_CONFIG`]).
async fn read_config(
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    descriptor: &OciDescriptor,
) -> Result<String, String> {
    if u64::try_from(descriptor.size).map_or(true, |n| n > MAX_CONFIG) {
        return Err(format!(
            "{} bytes declared; at most {MAX_CONFIG} are accepted",
            descriptor.size
        ));
    }
    let mut blob = registry::open_blob(client, reference, descriptor, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut blob, &mut text).map_err(|e| e.to_string())?;
        blob.finish().map_err(|e| e.to_string())?;
        Ok(text)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A progress callback for one layer's bytes, reporting about every MiB.
fn layer_progress(
    progress: &Progress,
    reference: &str,
    layer: usize,
    descriptor: &OciDescriptor,
    total_done: Arc<AtomicU64>,
) -> impl FnMut(u64) + Send + 'static {
    let progress = progress.clone();
    let reference = reference.to_string();
    let size = u64::try_from(descriptor.size).unwrap_or(0);
    let mut bytes = 0u64;
    let mut reported = 0u64;
    move |n| {
        bytes += n;
        let total = total_done.fetch_add(n, Ordering::Relaxed) + n;
        if n == 0 || bytes - reported >= 1 << 20 {
            reported = bytes;
            progress(PullEvent::Layer {
                reference: reference.clone(),
                layer,
                bytes,
                size,
                total_done: total,
            });
        }
    }
}
