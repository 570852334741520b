//! Pulling from a real registry on loopback (Debian's docker-registry),
//! through the same code path a Docker Hub image takes: plain HTTP for
//! loopback only, indexes resolved to linux/amd64, layers applied in order,
//! blobs checked against their digests, one download for concurrent pulls.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::registry::{layer_digests, layout_digest, TestRegistry};
use void_box::oci::{self, PullEvent, Store};

#[tokio::test(flavor = "multi_thread")]
async fn pulls_anonymously_picks_amd64_and_applies_the_layers_in_order() {
    let registry = TestRegistry::start();
    registry.push("layers", "latest", "layers");
    let work = tempfile::tempdir().unwrap();
    let store = Store::at(work.path());
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let progress: oci::Progress = Arc::new(move |e| seen.lock().unwrap().push(e));
    let image = oci::pull(&store, &registry.reference("layers:latest"), Some(progress))
        .await
        .unwrap();
    // The index's amd64 manifest, not the arm64 one listed first.
    assert_eq!(image.record.digest, layout_digest("layers", "amd64"));
    assert_eq!(image.record.layers.len(), 3);
    let events = events.lock().unwrap().clone();
    assert!(matches!(
        events.first(),
        Some(PullEvent::Resolved { layers: 3, .. })
    ));
    assert!(matches!(
        events.last(),
        Some(PullEvent::Done { cached: false, .. })
    ));

    // What the layers say, checked by erofs-utils' own extractor.
    let out = work.path().join("out");
    let status = Command::new("fsck.erofs")
        .arg(format!("--extract={}", out.display()))
        .arg(&image.path)
        .status()
        .expect("fsck.erofs runs (erofs-utils)");
    assert!(status.success());
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("arch"), "amd64\n");
    assert!(!out.join("WRONG-PLATFORM").exists());
    assert_eq!(read("a/keep"), "keep\n");
    assert!(!out.join("a/gone").exists(), "a whiteout deletes");
    let d: Vec<String> = std::fs::read_dir(out.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(d, ["new"], "an opaque directory hides the lower layers");
    assert_eq!(read("d/new"), "new v3\n", "the zstd layer wins");
    assert_eq!(read("z/zstd"), "from a zstd layer\n");
    assert_eq!(
        std::fs::read_link(out.join("s")).unwrap(),
        std::path::Path::new("/a/keep")
    );

    // Pulling again finds the digest cached and downloads nothing.
    let again = oci::pull(&store, &registry.reference("layers:latest"), None)
        .await
        .unwrap();
    assert_eq!(again.path, image.path);
    for layer in layer_digests("layers", "latest") {
        assert_eq!(registry.blob_gets(&layer), 1, "{layer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_blob_is_refused_by_name_and_nothing_enters_the_cache() {
    let registry = TestRegistry::start();
    registry.push("layers", "amd64", "layers");
    let layer = layer_digests("layers", "amd64")[1].clone();
    let path = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let work = tempfile::tempdir().unwrap();
    let store = Store::at(work.path());
    let err = oci::pull(&store, &registry.reference("layers:amd64"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&layer), "the error names the blob: {err}");
    // Our reader or oci-client's, whichever sees the end first.
    assert!(
        err.contains("does not match its digest") || err.contains("Invalid digest"),
        "{err}"
    );
    assert!(store.images().is_empty());
    assert!(store.references().is_empty());
    let leftovers = std::fs::read_dir(work.path().join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "the partial image is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_share_one_download() {
    let registry = TestRegistry::start();
    registry.push("python", "latest", "python");
    let work = tempfile::tempdir().unwrap();
    let store = Store::at(work.path());
    let reference = registry.reference("python:latest");
    let (a, b) = tokio::join!(
        oci::pull(&store, &reference, None),
        oci::pull(&store, &reference, None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.path, b.path);
    assert_eq!(a.record.config.user.as_deref(), Some("app"));
    for layer in layer_digests("python", "latest") {
        assert_eq!(
            registry.blob_gets(&layer),
            1,
            "{layer} was downloaded more than once"
        );
    }
    // `localhost` is loopback too: plain HTTP is allowed there.
    let via_name = reference.replace("127.0.0.1", "localhost");
    let c = oci::pull(&store, &via_name, None).await.unwrap();
    assert_eq!(c.record.digest, a.record.digest);
    assert_eq!(store.references().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_pull_leaves_no_partial_entry() {
    let registry = TestRegistry::start();
    registry.push("python", "latest", "python");
    let work = tempfile::tempdir().unwrap();
    let store = Store::at(work.path());
    let reference = registry.reference("python:latest");
    // Dropped part-way through the 70 MiB layer.
    let cut = tokio::time::timeout(
        std::time::Duration::from_millis(150),
        oci::pull(&store, &reference, None),
    )
    .await;
    assert!(
        cut.is_err(),
        "the pull finished before it could be interrupted"
    );
    // The converter thread finishes its chunk and drops the half image.
    let tmp = work.path().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&tmp).map_or(0, |d| d.count()) > 0 {
        assert!(std::time::Instant::now() < deadline, "tmp/ was not emptied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(store.images().is_empty() && store.references().is_empty());
    // And the next pull starts afresh and completes.
    let image = oci::pull(&store, &reference, None).await.unwrap();
    assert_eq!(
        store.by_reference(&oci::parse_reference(&reference).unwrap().whole()),
        Some(image)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_images_and_registries_fail_with_the_reference() {
    let registry = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let store = Store::at(work.path());
    let missing = registry.reference("nothing:here");
    let err = oci::pull(&store, &missing, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&missing), "{err}");
    registry.stop();
    let err = oci::pull(&store, &missing, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&missing), "{err}");
    let err = oci::pull(&store, "Not A Reference", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("image reference"), "{err}");
}
