//! The vsock device against a scripted driver (`harness.rs`): the
//! connection protocol and its credit arithmetic, then a hostile guest
//! kernel's descriptor chains and floods. Each test runs under a watchdog,
//! so a device that loops fails the test instead of hanging it.

use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;

use super::conn::{OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW};
use super::harness::{replay, Desc, Harness, QUEUE_LEN};
use super::state::MAX_ORPHAN_RSTS;

/// Runs `test` on its own thread; fails if it takes over 20 s.
fn within_deadline(test: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(20)) {
        Ok(()) => worker.join().unwrap(),
        // The worker panicked: re-raise its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => std::panic::resume_unwind(
            worker
                .join()
                .expect_err("the worker ended without finishing"),
        ),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the device did not return within 20 s"),
    }
}

/// A harness with one connection the guest accepted.
fn connected() -> Harness {
    let mut h = Harness::new();
    h.connect(1024);
    h.post_rx(4096);
    h.run();
    let got = h.received();
    assert_eq!(got.len(), 1);
    let request = got[0].1.as_ref().expect("a packet").header;
    assert_eq!((request.op, request.dst_port), (OP_REQUEST, 1024));
    let response = h.header(0, OP_RESPONSE);
    h.send(response, &[], 1);
    h.run();
    assert!(matches!(h.hosts[0].1.try_recv(), Ok(Ok(()))));
    h
}

#[test]
fn data_flows_both_ways_on_an_accepted_connection() {
    within_deadline(|| {
        let mut h = connected();
        h.host_write(0, b"ping");
        h.post_rx(4096);
        h.run();
        let got = h.received();
        let packet = got[0].1.as_ref().unwrap();
        assert_eq!(packet.header.op, OP_RW);
        assert_eq!(packet.data, b"ping");

        // The guest's data, spread over three descriptors, reaches the host.
        h.tx_used();
        let mut rw = h.header(0, OP_RW);
        rw.len = 11;
        h.send(rw, b"hello world", 3);
        h.run();
        assert_eq!(h.host_read(0), b"hello world");
        let used = h.tx_used();
        assert_eq!(used.len(), 1, "one chain, given back: {used:?}");
    });
}

#[test]
fn the_device_never_sends_beyond_the_guests_credit() {
    within_deadline(|| {
        let mut h = connected();
        // The guest has room for 1000 bytes, of which it forwarded none.
        let mut update = h.header(0, OP_CREDIT_UPDATE);
        update.buf_alloc = 1000;
        h.send(update, &[], 1);
        h.host_write(0, &[7; 5000]);
        for _ in 0..4 {
            h.post_rx(4096);
        }
        h.run();
        assert_eq!(data_received(&mut h), 1000);
        // Forwarding 1000 bytes frees 1000 more.
        let mut update = h.header(0, OP_CREDIT_UPDATE);
        update.buf_alloc = 1000;
        update.fwd_cnt = 1000;
        h.send(update, &[], 1);
        h.run();
        assert_eq!(data_received(&mut h), 1000);
    });
}

/// Payload bytes in the packets the device gave back since the last look.
fn data_received(h: &mut Harness) -> usize {
    h.received()
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .map(|p| p.data.len())
        .sum()
}

#[test]
fn a_guest_that_overruns_our_buffer_is_reset() {
    within_deadline(|| {
        let mut h = connected();
        // The host end never reads; once its socket is full the guest's
        // data waits in our buffer, and the guest sends past its BUF_ALLOC.
        let chunk = vec![1u8; 60 * 1024];
        let mut ops = Vec::new();
        for _ in 0..(8 << 20) / chunk.len() {
            let mut rw = h.header(0, OP_RW);
            rw.len = chunk.len() as u32;
            h.send(rw, &chunk, 1);
            h.post_rx(4096);
            h.run();
            ops.extend(
                h.received()
                    .iter()
                    .filter_map(|(_, p)| p.as_ref().map(|p| p.header.op)),
            );
            if ops.contains(&OP_RST) {
                break;
            }
        }
        assert!(ops.contains(&OP_RST), "{ops:?}");
        assert!(
            h.backlog().conns == 0,
            "the connection is gone: {:?}",
            h.backlog()
        );
    });
}

#[test]
fn a_device_readable_rx_chain_is_given_back_empty_not_offered_again() {
    within_deadline(|| {
        let mut h = Harness::new();
        h.connect(1024); // a REQUEST waits for a buffer
        let readable = Desc {
            addr: 0x20000,
            len: 4096,
            flags: 0,
            next: 0,
        };
        h.post_rx_raw(0, &[readable], 0);
        h.run();
        assert_eq!(h.received(), [(0, None)], "consumed with length 0");
        // A good buffer then carries the REQUEST.
        h.post_rx(4096);
        h.run();
        let got = h.received();
        assert_eq!(got[0].1.as_ref().unwrap().header.op, OP_REQUEST);
    });
}

#[test]
fn a_header_sized_rx_buffer_with_data_waiting_is_given_back_empty() {
    within_deadline(|| {
        let mut h = connected();
        h.host_write(0, b"data");
        h.post_rx(44); // room for a header, none for data
        h.run();
        assert_eq!(h.received().len(), 1);
        h.post_rx(4096);
        h.run();
        let got = h.received();
        assert_eq!(got[0].1.as_ref().unwrap().data, b"data");
    });
}

#[test]
fn a_flood_of_credit_requests_is_owed_one_answer() {
    within_deadline(|| {
        let mut h = connected();
        // No RX buffers: every answer would have to wait.
        for _ in 0..5000 {
            let request = h.header(0, OP_CREDIT_REQUEST);
            h.send(request, &[], 1);
            h.run();
            h.check_bounded();
        }
        assert!(h.backlog().control <= 1, "{:?}", h.backlog());
        for _ in 0..4 {
            h.post_rx(4096);
        }
        h.run();
        let ops: Vec<u16> = h
            .received()
            .iter()
            .filter_map(|(_, p)| p.as_ref().map(|p| p.header.op))
            .collect();
        assert_eq!(ops, [OP_CREDIT_UPDATE]);
    });
}

#[test]
fn requests_to_unknown_ports_owe_a_bounded_number_of_resets() {
    within_deadline(|| {
        let mut h = Harness::new();
        for port in 0..5000u32 {
            let mut request = h.header(0, OP_REQUEST);
            request.dst_port = 7000 + port;
            h.send(request, &[], 1);
            h.run();
        }
        assert_eq!(h.backlog().orphan_rsts, MAX_ORPHAN_RSTS);
    });
}

#[test]
fn chains_that_loop_or_point_outside_memory_are_survived() {
    within_deadline(|| {
        let mut h = connected();
        h.host_write(0, b"still here");
        // A descriptor that chains to itself, one far outside guest
        // memory, an out-of-range head, a zero-length buffer.
        let looping = Desc {
            addr: 0x20000,
            len: 4096,
            flags: 1 | 2,
            next: 3,
        };
        h.post_rx_raw(3, &[looping], 3);
        let outside = Desc {
            addr: u64::MAX - 10,
            len: 4096,
            flags: 2,
            next: 0,
        };
        h.post_rx_raw(4, &[outside], 4);
        h.post_rx_raw(5, &[], QUEUE_LEN + 7);
        let empty = Desc {
            addr: 0x20000,
            len: 0,
            flags: 2,
            next: 0,
        };
        h.post_rx_raw(6, &[empty], 6);
        h.run();
        h.check_bounded();
        h.received();
        // The same on TX.
        h.post_tx_raw(3, &[looping], 3);
        h.post_tx_raw(4, &[outside], 4);
        h.post_tx_raw(5, &[], QUEUE_LEN + 7);
        h.run();
        h.check_bounded();
    });
}

#[test]
fn an_avail_index_far_ahead_is_an_error_not_a_spin() {
    within_deadline(|| {
        let mut h = connected();
        h.set_avail_idx(true, 40_000);
        h.set_avail_idx(false, 40_000);
        h.run();
        h.check_bounded();
    });
}

/// Inputs the fuzz target found worth keeping (`fuzz/seeds/vsock_device`).
fn corpus() -> Vec<Vec<u8>> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/vsock_device");
    let entries = std::fs::read_dir(&dir).expect("the seeds are in the repository");
    entries
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect()
}

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    within_deadline(|| {
        let seeds = corpus();
        assert!(seeds.len() >= 10, "{} seeds", seeds.len());
        for input in seeds {
            replay(&input);
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_script_leaves_the_device_bounded(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        replay(&input);
    }
}
