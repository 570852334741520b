//! Requests and replies too big for one protocol frame (1 MiB) fail the
//! one call, not the sandbox's connection (issue 11, item 5, first part).

use void_box::{Error, Exec, Sandbox};

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_request_is_refused_and_the_sandbox_lives_on() {
    let sb = Sandbox::builder().build().await.unwrap();
    // A model's 2 MiB command line.
    let huge = "x".repeat(2 << 20);
    let err = sb.exec(Exec::new("echo").arg(&huge)).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let out = sb.exec(Exec::shell("echo still here")).await.unwrap();
    assert_eq!(out.stdout_text(), "still here\n");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_too_big_for_a_frame_fails_alone() {
    let sb = Sandbox::builder().build().await.unwrap();
    // 20,000 entries with names of about 65 bytes: about 1.3 MB of listing.
    let make = "mkdir -p /workspace/many && cd /workspace/many && \
                seq 1 20000 | sed 's/^/an-entry-with-a-long-name-to-fill-the-listing-past-one-mebibyte-/' \
                | xargs touch && ls | wc -l";
    let out = sb.exec(Exec::shell(make)).await.unwrap();
    assert_eq!(out.stdout_text().trim(), "20000", "{}", out.stderr_text());
    let err = sb.list("/workspace/many").await.unwrap_err().to_string();
    assert!(err.contains("larger than a frame"), "{err}");
    // The connection survived: everything else still works.
    assert!(!sb.list("/workspace").await.unwrap().is_empty());
    let out = sb.exec(Exec::shell("echo still here")).await.unwrap();
    assert_eq!(out.stdout_text(), "still here\n");
    sb.shutdown().await.unwrap();
}
