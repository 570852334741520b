//! Remote skills: fetched over HTTPS, verified against a pinned SHA-256,
//! cached by that hash so later runs need no network.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cache_dir;

/// Remote skill documents larger than this are refused.
const MAX_SKILL_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 5;

fn cache_path(sha256: &str) -> PathBuf {
    cache_dir().join("skills").join(format!("{sha256}.md"))
}

/// Plain HTTP is accepted only for loopback hosts (local mirrors, tests):
/// anywhere else the pinned hash would be the only protection.
fn check_scheme(url: &reqwest::Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http"
            if matches!(
                url.host_str(),
                Some("127.0.0.1") | Some("localhost") | Some("[::1]")
            ) =>
        {
            Ok(())
        }
        other => Err(format!(
            "scheme `{other}` is not allowed; remote skills are fetched over https"
        )),
    }
}

/// The document at `url`, whose SHA-256 must be `sha256` (lowercase hex).
pub async fn fetch(url: &str, sha256: &str) -> Result<String, String> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{sha256}` is not a SHA-256 (64 hex digits)"));
    }
    let cached = cache_path(sha256);
    if let Ok(bytes) = std::fs::read(&cached) {
        // Re-verify: a cache file is only trusted for the hash it is named after.
        if hex::encode(Sha256::digest(&bytes)) == sha256 {
            return String::from_utf8(bytes).map_err(|_| "cached skill is not UTF-8".into());
        }
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    check_scheme(&parsed)?;
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        // Every hop passes the same check as the first URL: no downgrade to
        // plain HTTP, no redirect to a host's internal service.
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if let Err(e) = check_scheme(attempt.url()) {
                let to = attempt.url().to_string();
                attempt.error(format!("redirect to {to}: {e}"))
            } else {
                attempt.follow()
            }
        }))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut response = client
        .get(parsed)
        .send()
        .await
        .map_err(|e| format!("fetch failed: {}", crate::error::error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("fetch failed: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("fetch failed: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_SKILL_BYTES {
            return Err(format!("larger than {MAX_SKILL_BYTES} bytes"));
        }
    }
    let actual = hex::encode(Sha256::digest(&body));
    if actual != sha256 {
        return Err(format!(
            "SHA-256 mismatch: pinned {sha256}, fetched {actual}; refusing the skill"
        ));
    }
    let text = String::from_utf8(body).map_err(|_| "the skill is not UTF-8".to_string())?;
    if let Some(dir) = cached.parent() {
        // Caching is best effort: a read-only cache only costs a refetch.
        let _ = std::fs::create_dir_all(dir).and_then(|_| {
            let tmp = dir.join(format!(".{sha256}.{}", std::process::id()));
            std::fs::write(&tmp, text.as_bytes())?;
            std::fs::rename(&tmp, &cached)
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        let ok = |u: &str| check_scheme(&reqwest::Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://example.com/s.md"));
        assert!(ok("http://127.0.0.1:8080/s.md"));
        assert!(!ok("http://example.com/s.md"));
        assert!(!ok("file:///etc/passwd"));
    }

    /// A loopback server that answers every request with a redirect to `to`.
    async fn redirecting_to(to: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/skill.md", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn a_redirect_is_checked_like_the_first_url() {
        let hash = "0".repeat(64);
        let url = redirecting_to("http://example.com/skill.md").await;
        let err = fetch(&url, &hash).await.unwrap_err();
        assert!(err.contains("scheme `http` is not allowed"), "{err}");
        // reqwest follows no redirect off HTTP at all: the 302 is the answer.
        let url = redirecting_to("file:///etc/passwd").await;
        let err = fetch(&url, &hash).await.unwrap_err();
        assert!(err.contains("302"), "{err}");
        // A loop of redirects ends.
        let listener_url = redirecting_to("/skill.md").await;
        let err = fetch(&listener_url, &hash).await.unwrap_err();
        assert!(err.contains("redirects"), "{err}");
    }
}
