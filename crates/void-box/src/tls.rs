//! The process-wide TLS crypto provider.
//!
//! `oci-client` is built with `reqwest`'s `rustls-no-provider` feature (to
//! use `ring` rather than `aws-lc-rs`, which needs a C toolchain and cmake),
//! and Cargo unifies that feature into every `reqwest` 0.13 client of the
//! process, the OTLP exporter's included: each one panics when it is built
//! without a provider installed. Everything that builds such a client calls
//! this first.

/// Installs `ring` as rustls' provider, once (later calls do nothing).
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when a provider is already installed: fine either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
