//! Where the daemon listens: `unix:PATH` (made 0600, in a directory it
//! makes 0700 if missing; a stale socket of a dead daemon is replaced) or
//! `tcp:ADDR:PORT`.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use axum::Router;

use crate::ServeError;

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket only this user may connect to.
    Unix(PathBuf),
    /// A TCP address (`127.0.0.1:8080`).
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path".into());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            return addr
                .parse()
                .map(Listen::Tcp)
                .map_err(|_| format!("`{addr}` is not ADDR:PORT (127.0.0.1:8080)"));
        }
        Err(format!("`{s}` is neither unix:PATH nor tcp:ADDR:PORT"))
    }
}

impl Listen {
    /// The default: `voidbox.sock` in `$XDG_RUNTIME_DIR`, else in the data
    /// directory.
    pub fn default_socket() -> Listen {
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(void_box::data_dir);
        Listen::Unix(dir.join("voidbox.sock"))
    }
}

pub(crate) enum Listener {
    Unix(tokio::net::UnixListener, PathBuf),
    Tcp(tokio::net::TcpListener),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let context = context.into();
    move |source| ServeError::Io { context, source }
}

impl Listener {
    pub(crate) async fn bind(listen: &Listen) -> Result<Listener, ServeError> {
        match listen {
            Listen::Tcp(addr) => tokio::net::TcpListener::bind(addr)
                .await
                .map(Listener::Tcp)
                .map_err(io(format!("listen on {addr}"))),
            Listen::Unix(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !dir.exists() {
                        std::fs::create_dir_all(dir)
                            .and_then(|_| {
                                std::fs::set_permissions(
                                    dir,
                                    std::fs::Permissions::from_mode(0o700),
                                )
                            })
                            .map_err(io(format!("make {}", dir.display())))?;
                    }
                }
                // A socket nobody answers on is a dead daemon's: replaced.
                // One that answers is another daemon's: refused.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ServeError::Config(format!(
                        "{} is in use by another daemon",
                        path.display()
                    )));
                }
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(path);
                }
                let listener = tokio::net::UnixListener::bind(path)
                    .map_err(io(format!("listen on {}", path.display())))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(format!("restrict {}", path.display())))?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    pub(crate) fn address(&self) -> String {
        match self {
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp:?".into(), |a| format!("tcp:{a}")),
        }
    }

    pub(crate) async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        match self {
            // Streams write small envelopes one after another: without
            // TCP_NODELAY, Nagle holds each behind the client's delayed ACK
            // (40 ms a command through envd's API).
            Listener::Tcp(l) => axum::serve(
                axum::serve::ListenerExt::tap_io(l, |tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                router,
            )
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(io("serve")),
            Listener::Unix(l, path) => {
                let served = axum::serve(l, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(io("serve"));
                let _ = std::fs::remove_file(&path);
                served
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_what_is_wrong() {
        assert_eq!(
            "unix:/run/v.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/run/v.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:8080".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        for bad in ["unix:", "tcp:localhost", "http://x", "8080"] {
            assert!(bad.parse::<Listen>().is_err(), "{bad}");
        }
    }
}
