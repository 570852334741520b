//! Plays arbitrary scripts of guest and host actions against the vsock
//! device (`void_box::vm::vsock::harness::replay`): raw descriptor chains
//! with any flags, addresses, lengths and links, packets with any header,
//! avail indexes far ahead, host writes and reads. The device must never
//! panic or loop, and what it owes the guest must stay bounded. The same
//! function runs under `cargo test` on the seeds in `fuzz/seeds/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    void_box::vm::vsock::harness::replay(data);
});
