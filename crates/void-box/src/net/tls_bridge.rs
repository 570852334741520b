//! One intercepted TLS connection: the guest's TLS ends here (a
//! `ServerConnection` with a certificate from the sandbox's CA), a new one
//! goes to the destination (a `ClientConnection` that verifies it), and
//! the plaintext between them passes through the secret swapper. Both
//! sides are rustls' sans-I/O state machines, fed and drained by the relay
//! in the stack's own loop; the caller bounds how much goes in at a time.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::swap::{HeaderSwapper, Swap};

/// Bytes of plaintext moved per read from a TLS side.
const PLAIN_CHUNK: usize = 16 * 1024;

/// Both TLS sides of one connection.
pub struct TlsBridge {
    /// The guest's side (a server connection).
    guest: Connection,
    /// The destination's side (a client connection).
    upstream: Connection,
    swapper: HeaderSwapper,
    /// The guest's close_notify (or EOF) has been passed on.
    guest_closed: bool,
}

impl TlsBridge {
    /// A bridge for a connection to `name` whose requests get `swaps`.
    pub fn new(
        guest: Arc<ServerConfig>,
        upstream: Arc<ClientConfig>,
        name: &str,
        swaps: Vec<Swap>,
    ) -> Result<TlsBridge, String> {
        let server_name =
            ServerName::try_from(name.to_string()).map_err(|e| format!("TLS name {name}: {e}"))?;
        let mut guest = ServerConnection::new(guest).map_err(|e| e.to_string())?;
        let mut upstream =
            ClientConnection::new(upstream, server_name).map_err(|e| e.to_string())?;
        // What goes in is bounded by the caller, a chunk at a time.
        guest.set_buffer_limit(None);
        upstream.set_buffer_limit(None);
        Ok(TlsBridge {
            guest: guest.into(),
            upstream: upstream.into(),
            swapper: HeaderSwapper::new(swaps),
            guest_closed: false,
        })
    }

    /// Whether more of the guest's bytes may come in: once the guest's
    /// handshake is over, its requests wait for the destination's.
    pub fn wants_guest_bytes(&self) -> bool {
        self.guest.is_handshaking() || !self.upstream.is_handshaking()
    }

    /// Takes TLS bytes from the guest; appends TLS bytes for the guest and
    /// for the destination.
    pub fn on_guest_bytes(
        &mut self,
        data: &[u8],
        to_guest: &mut Vec<u8>,
        to_upstream: &mut Vec<u8>,
    ) -> Result<(), String> {
        let result = (|| {
            let (plain, closed) = open(&mut self.guest, data, "the guest's TLS")?;
            let mut out = Vec::with_capacity(plain.len());
            self.swapper.feed(&plain, &mut out);
            seal(&mut self.upstream, &out, "the destination's TLS")?;
            if closed {
                self.close_from_guest();
            }
            Ok(())
        })();
        self.drain(to_guest, to_upstream);
        result
    }

    /// Takes TLS bytes from the destination; appends TLS bytes for both.
    pub fn on_upstream_bytes(
        &mut self,
        data: &[u8],
        to_guest: &mut Vec<u8>,
        to_upstream: &mut Vec<u8>,
    ) -> Result<(), String> {
        let result = (|| {
            let (plain, closed) = open(&mut self.upstream, data, "the destination's TLS")?;
            seal(&mut self.guest, &plain, "the guest's TLS")?;
            if closed {
                self.guest.send_close_notify();
            }
            Ok(())
        })();
        self.drain(to_guest, to_upstream);
        result
    }

    /// The guest ended its side (FIN): the destination is told.
    pub fn guest_eof(&mut self, to_upstream: &mut Vec<u8>) {
        self.close_from_guest();
        self.drain(&mut Vec::new(), to_upstream);
    }

    /// The destination ended its side: the guest is told.
    pub fn upstream_eof(&mut self, to_guest: &mut Vec<u8>) {
        self.guest.send_close_notify();
        self.drain(to_guest, &mut Vec::new());
    }

    fn close_from_guest(&mut self) {
        if !self.guest_closed {
            self.guest_closed = true;
            self.upstream.send_close_notify();
        }
    }

    /// Everything both sides have to send.
    fn drain(&mut self, to_guest: &mut Vec<u8>, to_upstream: &mut Vec<u8>) {
        for (side, out) in [
            (&mut self.guest, to_guest),
            (&mut self.upstream, to_upstream),
        ] {
            while side.wants_write() {
                if side.write_tls(out).is_err() {
                    break;
                }
            }
        }
    }
}

/// Feeds a side's TLS bytes in; returns the plaintext that came out and
/// whether the peer closed.
fn open(side: &mut Connection, mut data: &[u8], what: &str) -> Result<(Vec<u8>, bool), String> {
    let mut plain = Vec::new();
    let mut closed = false;
    while !data.is_empty() {
        side.read_tls(&mut data)
            .map_err(|e| format!("{what}: {e}"))?;
        side.process_new_packets()
            .map_err(|e| format!("{what}: {e}"))?;
        closed |= read_plain(side.reader(), &mut plain)?;
    }
    Ok((plain, closed))
}

/// Queues plaintext to go out on a side.
fn seal(side: &mut Connection, plain: &[u8], what: &str) -> Result<(), String> {
    if plain.is_empty() {
        return Ok(());
    }
    side.writer()
        .write_all(plain)
        .map_err(|e| format!("to {what}: {e}"))
}

/// Reads the plaintext a side has ready; says whether it has closed.
fn read_plain(mut reader: rustls::Reader<'_>, out: &mut Vec<u8>) -> Result<bool, String> {
    let mut buf = [0u8; PLAIN_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            // The peer went away without close_notify: treated as a close.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::edge_tls::EdgeTls;
    use super::*;

    /// A destination's settings, with a self-signed certificate for
    /// `name`, and that certificate (PEM).
    fn destination(name: &str) -> (Arc<ServerConfig>, String) {
        crate::tls::install_crypto_provider();
        let dest = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(dest.signing_key.serialize_der().into());
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![dest.cert.der().clone()], key)
            .unwrap();
        (Arc::new(config), dest.cert.pem())
    }

    /// A destination server with its own CA, and a guest client that
    /// trusts the sandbox's CA, all in memory: the bridge in between must
    /// swap the placeholder and pass the answer back.
    #[test]
    fn swaps_inside_tls_and_verifies_the_destination() {
        crate::tls::install_crypto_provider();
        let name = "api.example.com";
        let (dest_config, dest_pem) = destination(name);
        let hosts = vec![name.parse().unwrap()];
        let mut edge = EdgeTls::new(&hosts, &[dest_pem]).unwrap();
        let mut guest_roots = rustls::RootCertStore::empty();
        for der in super::super::edge_tls::parse_pem_certs(edge.ca_pem()).unwrap() {
            guest_roots.add(der).unwrap();
        }
        let guest_config = Arc::new(
            ClientConfig::builder()
                .with_root_certificates(guest_roots)
                .with_no_client_auth(),
        );
        let mut guest: Connection =
            ClientConnection::new(guest_config, ServerName::try_from(name).unwrap())
                .unwrap()
                .into();
        let mut dest: Connection = ServerConnection::new(dest_config).unwrap().into();
        let mut bridge = TlsBridge::new(
            edge.guest_side(name).unwrap(),
            edge.upstream(),
            name,
            vec![Swap {
                placeholder: b"PLACEHOLDER".to_vec(),
                value: b"real-value".to_vec(),
            }],
        )
        .unwrap();
        guest
            .writer()
            .write_all(b"GET / HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer PLACEHOLDER\r\n\r\n")
            .unwrap();
        let mut at_dest = Vec::new();
        let mut at_guest = Vec::new();
        // Bytes on each of the four wires, moved round until all is quiet.
        let (mut g2b, mut b2g, mut b2d, mut d2b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut answered = false;
        for _ in 0..20 {
            while guest.wants_write() {
                guest.write_tls(&mut g2b).unwrap();
            }
            if !g2b.is_empty() && bridge.wants_guest_bytes() {
                let wire = std::mem::take(&mut g2b);
                bridge.on_guest_bytes(&wire, &mut b2g, &mut b2d).unwrap();
            }
            at_dest.extend(
                open(&mut dest, &std::mem::take(&mut b2d), "dest")
                    .unwrap()
                    .0,
            );
            if !answered && at_dest.windows(4).any(|w| w == b"\r\n\r\n") {
                answered = true;
                dest.writer()
                    .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                    .unwrap();
            }
            while dest.wants_write() {
                dest.write_tls(&mut d2b).unwrap();
            }
            if !d2b.is_empty() {
                let wire = std::mem::take(&mut d2b);
                bridge.on_upstream_bytes(&wire, &mut b2g, &mut b2d).unwrap();
            }
            at_guest.extend(
                open(&mut guest, &std::mem::take(&mut b2g), "guest")
                    .unwrap()
                    .0,
            );
        }
        let seen = String::from_utf8_lossy(&at_dest);
        assert!(seen.contains("Bearer real-value"), "{seen}");
        assert!(!seen.contains("PLACEHOLDER"), "{seen}");
        assert!(String::from_utf8_lossy(&at_guest).starts_with("HTTP/1.1 204"));
    }

    /// A destination whose certificate no root vouches for is refused: the
    /// guest cannot make the edge accept what it would not.
    #[test]
    fn an_untrusted_destination_fails_the_handshake() {
        crate::tls::install_crypto_provider();
        let name = "api.example.com";
        let (dest_config, _) = destination(name);
        let mut edge = EdgeTls::new(&[name.parse().unwrap()], &[]).unwrap();
        let mut bridge = TlsBridge::new(
            edge.guest_side(name).unwrap(),
            edge.upstream(),
            name,
            vec![],
        )
        .unwrap();
        let mut dest = ServerConnection::new(dest_config).unwrap();
        // Only the edge's ClientHello is needed to start the destination.
        let (mut to_guest, mut to_up) = (Vec::new(), Vec::new());
        bridge.drain(&mut to_guest, &mut to_up);
        dest.read_tls(&mut &to_up[..]).unwrap();
        dest.process_new_packets().unwrap();
        let mut back = Vec::new();
        while dest.wants_write() {
            dest.write_tls(&mut back).unwrap();
        }
        let err = bridge
            .on_upstream_bytes(&back, &mut to_guest, &mut to_up)
            .unwrap_err();
        assert!(err.contains("certificate"), "{err}");
    }
}
