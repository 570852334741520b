//! Requests too big for one protocol frame (1 MiB) fail the one call, not
//! the sandbox's connection, and a directory too big for one frame arrives
//! in pages (issue 11, item 5).

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
async fn a_20000_entry_directory_lists_in_pages() {
    let sb = Sandbox::builder().build().await.unwrap();
    // Names of about 65 bytes: about 1.3 MB of listing, more than a frame
    // holds, so it can only arrive in pages.
    let prefix = "an-entry-with-a-long-name-to-fill-the-listing-past-one-mebibyte-";
    let make = format!(
        "mkdir -p /workspace/many && cd /workspace/many && \
         seq 1 20000 | sed 's/^/{prefix}/' | xargs touch && ls | wc -l"
    );
    let out = sb.exec(Exec::shell(make)).await.unwrap();
    assert_eq!(out.stdout_text().trim(), "20000", "{}", out.stderr_text());
    let names: Vec<String> = sb
        .list("/workspace/many")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut expected: Vec<String> = (1..=20000).map(|i| format!("{prefix}{i}")).collect();
    expected.sort();
    assert_eq!(names.len(), 20000);
    assert!(names == expected, "every name once, in order");
    // A cap on the host: a bigger directory is refused, not held.
    let err = sb.list_limited("/workspace/many", 5000).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { max: 5000, .. }), "{err}");
    let out = sb.exec(Exec::shell("echo still here")).await.unwrap();
    assert_eq!(out.stdout_text(), "still here\n");
    sb.shutdown().await.unwrap();
}
