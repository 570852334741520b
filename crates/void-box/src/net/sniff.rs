//! What name a connection is really for, read from its first bytes: the
//! TLS ClientHello's SNI or the HTTP request's `Host`. The ClientHello
//! reader is written here (about 60 lines over a bounded buffer) rather
//! than taken from a TLS parser crate: it needs only the one extension,
//! and nothing else of the handshake is trusted.

/// Most bytes held back while looking for the name: a TLS record's
/// largest plaintext and its header, or an HTTP request's headers.
pub const MAX_SNIFF: usize = 16 * 1024 + 5;

/// What the first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// Not enough bytes yet.
    NeedMore,
    /// A TLS ClientHello, with its server name if it has one.
    Tls(Option<String>),
    /// An HTTP request, with its `Host` if it has one.
    Http(Option<String>),
    /// Neither TLS nor HTTP.
    Other,
    /// It starts like TLS or HTTP and cannot be read as either.
    Unreadable(&'static str),
}

/// Looks at the first bytes the guest sent on a connection.
pub fn sniff(buf: &[u8]) -> Sniffed {
    let Some(&first) = buf.first() else {
        return Sniffed::NeedMore;
    };
    let verdict = if first == 0x16 {
        client_hello(buf)
    } else if starts_like_http(buf) {
        http_request(buf)
    } else if buf.len() < 8 && buf.iter().all(|b| b.is_ascii_uppercase()) {
        Sniffed::NeedMore
    } else {
        Sniffed::Other
    };
    match verdict {
        Sniffed::NeedMore if buf.len() >= MAX_SNIFF => {
            Sniffed::Unreadable("no complete TLS ClientHello or HTTP request head in 16 KiB")
        }
        v => v,
    }
}

fn starts_like_http(buf: &[u8]) -> bool {
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=10).contains(&method_len) && buf.get(method_len) == Some(&b' ')
}

fn http_request(buf: &[u8]) -> Sniffed {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => Sniffed::NeedMore,
        Err(_) => Sniffed::Unreadable("a malformed HTTP request head"),
        Ok(httparse::Status::Complete(_)) => {
            let host = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|v| strip_port(v.trim()));
            Sniffed::Http(host.and_then(super::policy::normalize_name))
        }
    }
}

/// `example.com:8080` → `example.com`; an IPv6 literal stays as it is (and
/// is no host name).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A bounds-checked reader over the ClientHello.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }

    /// A length-prefixed vector, the length `width` bytes wide.
    fn vector(&mut self, width: usize) -> Option<Reader<'a>> {
        let len = match width {
            1 => self.u8()?,
            2 => self.u16()?,
            _ => self.u24()?,
        };
        self.take(len).map(|buf| Reader { buf })
    }
}

fn client_hello(buf: &[u8]) -> Sniffed {
    const BAD: Sniffed = Sniffed::Unreadable("a malformed TLS ClientHello");
    let mut record = Reader { buf };
    let Some(header) = record.take(5) else {
        return Sniffed::NeedMore;
    };
    if header[1] != 3 {
        return BAD;
    }
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    if len > 16 * 1024 {
        return BAD;
    }
    let Some(body) = record.take(len) else {
        return Sniffed::NeedMore;
    };
    let mut hs = Reader { buf: body };
    // One ClientHello in one record: a hello split across records is
    // refused rather than half read.
    if hs.u8() != Some(1) {
        return BAD;
    }
    let parsed = (|| {
        let mut hello = hs.vector(3)?;
        hello.take(2 + 32)?; // legacy_version, random
        hello.vector(1)?; // legacy_session_id
        hello.vector(2)?; // cipher_suites
        hello.vector(1)?; // legacy_compression_methods
        if hello.buf.is_empty() {
            return Some(None); // no extensions at all
        }
        let mut extensions = hello.vector(2)?;
        while !extensions.buf.is_empty() {
            let kind = extensions.u16()?;
            let mut data = extensions.vector(2)?;
            if kind != 0 {
                continue;
            }
            let mut names = data.vector(2)?;
            while !names.buf.is_empty() {
                let name_type = names.u8()?;
                let name = names.vector(2)?;
                if name_type == 0 {
                    let name = std::str::from_utf8(name.buf).ok()?;
                    return Some(Some(super::policy::normalize_name(name)?));
                }
            }
            return Some(None);
        }
        Some(None)
    })();
    match parsed {
        Some(name) => Sniffed::Tls(name),
        None => BAD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes one, for `name`.
    fn real_client_hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn the_sni_of_a_real_client_hello_is_read() {
        let hello = real_client_hello("API.github.com");
        assert_eq!(sniff(&hello), Sniffed::Tls(Some("api.github.com".into())));
        for cut in [1, 4, 5, 40, hello.len() - 1] {
            assert_eq!(sniff(&hello[..cut]), Sniffed::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn http_hosts_are_read_without_their_port() {
        let req = b"GET /x HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(sniff(req), Sniffed::Http(Some("example.com".into())));
        assert_eq!(sniff(&req[..20]), Sniffed::NeedMore);
        assert_eq!(sniff(b"GE"), Sniffed::NeedMore);
        assert_eq!(
            sniff(b"POST / HTTP/1.1\r\n\r\n"),
            Sniffed::Http(None),
            "no Host"
        );
    }

    #[test]
    fn other_protocols_and_garbage_are_told_apart() {
        assert_eq!(sniff(b"SSH-2.0-OpenSSH_9.2\r\n"), Sniffed::Other);
        assert_eq!(sniff(&[0, 1, 2, 3]), Sniffed::Other);
        assert!(matches!(
            sniff(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
            Sniffed::Unreadable(_)
        ));
        let mut junk = vec![0x16, 3, 1, 0x40, 0x00, 1];
        junk.resize(0x4000 + 5, 0xff);
        assert!(matches!(sniff(&junk), Sniffed::Unreadable(_)));
        let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless.resize(MAX_SNIFF, b'a');
        assert!(matches!(sniff(&endless), Sniffed::Unreadable(_)));
    }

    #[test]
    fn truncated_hellos_never_panic() {
        let hello = real_client_hello("files.pypi.org");
        for i in 5..hello.len() {
            let mut bad = hello.clone();
            bad[i] ^= 0xff;
            let _ = sniff(&bad);
        }
    }
}
