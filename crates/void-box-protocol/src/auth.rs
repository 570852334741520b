//! Mutual authentication in the handshake: each side proves it holds the
//! sandbox's secret without sending it.
//!
//! The guest opens every connection with a fresh nonce
//! ([`GuestMsg::Challenge`](crate::GuestMsg::Challenge)); the host answers
//! with its own nonce and an HMAC-SHA256 over both under the secret
//! ([`HostMsg::Hello`](crate::HostMsg::Hello)); the guest checks it and
//! answers with its own HMAC, under a different label, over the same
//! nonces ([`GuestMsg::HelloOk`](crate::GuestMsg::HelloOk)), which the host
//! checks. Whoever listens in, or answers in the agent's place, sees only
//! proofs bound to nonces it cannot choose for both sides, never the
//! secret; and the host talks only to an agent that has it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Secret;

/// Length of a nonce and of a proof.
pub const NONCE_LEN: usize = 32;
/// A side's fresh random bytes for one handshake.
pub type Nonce = [u8; NONCE_LEN];
/// An HMAC-SHA256 proof of the secret.
pub type Proof = [u8; 32];

/// Which side a proof comes from (so one side's proof never passes for
/// the other's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host, in `Hello`.
    Host,
    /// The guest agent, in `HelloOk`.
    Guest,
}

/// The proof `side` gives for the handshake of `guest_nonce` and `host_nonce`.
pub fn proof(secret: &Secret, side: Side, guest_nonce: &Nonce, host_nonce: &Nonce) -> Proof {
    let label: &[u8] = match side {
        Side::Host => b"voidbox-handshake-host",
        Side::Guest => b"voidbox-handshake-guest",
    };
    derive(secret, label, &[guest_nonce, host_nonce])
}

/// HMAC-SHA256 under `secret` of `label` followed by `parts`.
pub fn derive(secret: &Secret, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(label);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Checks `presented` against the proof `side` must give, in constant time.
pub fn verify(
    secret: &Secret,
    side: Side,
    guest_nonce: &Nonce,
    host_nonce: &Nonce,
    presented: &Proof,
) -> bool {
    use subtle::ConstantTimeEq;
    proof(secret, side, guest_nonce, host_nonce)
        .ct_eq(presented)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_the_secret_the_side_and_both_nonces() {
        let (secret, g, h) = ([7u8; 32], [1u8; 32], [2u8; 32]);
        let p = proof(&secret, Side::Host, &g, &h);
        assert!(verify(&secret, Side::Host, &g, &h, &p));
        assert!(!verify(&[8u8; 32], Side::Host, &g, &h, &p));
        assert!(!verify(&secret, Side::Guest, &g, &h, &p));
        assert!(!verify(&secret, Side::Host, &h, &g, &p));
        assert!(!verify(&secret, Side::Host, &g, &[3u8; 32], &p));
        assert_ne!(p, secret);
    }
}
