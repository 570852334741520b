//! Property tests: every message survives encode → decode, split anywhere,
//! and arbitrary bytes never panic the decoder.

use bytes::BytesMut;
use proptest::prelude::*;
use void_box_protocol::codec::{decode_frame, encode_frame};
use void_box_protocol::*;

fn limits() -> impl Strategy<Value = ResourceLimits> {
    (
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
    )
        .prop_map(|(nofile, nproc, fsize_bytes, cpu_secs)| ResourceLimits {
            nofile,
            nproc,
            fsize_bytes,
            cpu_secs,
        })
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..4096)
}

fn host_msg() -> impl Strategy<Value = HostMsg> {
    prop_oneof![
        (
            any::<u16>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<u64>()
        )
            .prop_map(|(version, nonce, proof, t)| HostMsg::Hello {
                version,
                nonce,
                proof,
                unix_time_ns: t,
            }),
        Just(HostMsg::Ping),
        (
            ".*",
            prop::collection::vec(".*", 0..5),
            prop::collection::vec((".*", ".*"), 0..3),
            any::<Option<String>>(),
            any::<bool>(),
            any::<Option<u64>>(),
            any::<Option<(u16, u16)>>(),
            limits()
        )
            .prop_map(
                |(program, args, env, cwd, stdin, timeout_ms, pty, limits)| {
                    HostMsg::Exec(ExecRequest {
                        program,
                        args,
                        env,
                        cwd,
                        stdin,
                        timeout_ms,
                        pty: pty.map(|(rows, cols)| PtySize { rows, cols }),
                        user: stdin.then(|| GuestUser {
                            uid: 0,
                            gid: 0,
                            groups: vec![27],
                        }),
                        limits,
                    })
                }
            ),
        data().prop_map(HostMsg::Stdin),
        Just(HostMsg::StdinEof),
        Just(HostMsg::Cancel),
        any::<u32>().prop_map(HostMsg::Credit),
        (".*", any::<u32>()).prop_map(|(path, mode)| HostMsg::WriteFile { path, mode }),
        data().prop_map(HostMsg::FileChunk),
        ".*".prop_map(|path| HostMsg::ReadFile { path }),
        (".*", any::<Option<String>>(), any::<u32>())
            .prop_map(|(path, after, limit)| HostMsg::List { path, after, limit }),
        Just(HostMsg::Shutdown),
    ]
}

fn guest_msg() -> impl Strategy<Value = GuestMsg> {
    prop_oneof![
        (any::<u16>(), ".*", any::<[u8; 32]>()).prop_map(|(version, agent, proof)| {
            GuestMsg::HelloOk {
                version,
                agent,
                proof,
            }
        }),
        (any::<u16>(), any::<[u8; 32]>())
            .prop_map(|(version, nonce)| GuestMsg::Challenge { version, nonce }),
        any::<u32>().prop_map(|pid| GuestMsg::Started { pid }),
        data().prop_map(GuestMsg::Stdout),
        data().prop_map(GuestMsg::Stderr),
        (
            any::<Option<i32>>(),
            any::<Option<i32>>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(code, signal, timed_out, cancelled)| GuestMsg::Exited(
                ExitStatus {
                    code,
                    signal,
                    timed_out,
                    cancelled
                }
            )),
        any::<u64>().prop_map(|size| GuestMsg::FileEnd { size }),
        (".*", any::<u64>(), any::<i64>(), any::<bool>()).prop_map(
            |(name, size, mtime_unix_ns, more)| GuestMsg::Listing {
                more,
                entries: vec![DirEntry {
                    name,
                    stat: FileStat {
                        kind: FileKind::File,
                        size,
                        mode: 0o644,
                        uid: 1000,
                        gid: 1000,
                        mtime_unix_ns,
                    },
                }],
            }
        ),
        ".*".prop_map(|m| GuestMsg::Error(ErrorReply::new(ErrorKind::Io, m))),
    ]
}

proptest! {
    #[test]
    fn host_messages_round_trip(id in any::<u32>(), msg in host_msg()) {
        let frame = Frame::new(id, msg);
        let mut buf = BytesMut::from(&encode_frame(&frame).unwrap()[..]);
        let back: Frame<HostMsg> = decode_frame(&mut buf).unwrap().unwrap();
        prop_assert_eq!(back, frame);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn guest_messages_round_trip_when_split(
        frames in prop::collection::vec((any::<u32>(), guest_msg()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let frames: Vec<_> = frames.into_iter().map(|(id, m)| Frame::new(id, m)).collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode_frame(f).unwrap()).collect();
        let cut = cut.index(wire.len() + 1);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for part in [&wire[..cut], &wire[cut..]] {
            buf.extend_from_slice(part);
            while let Some(f) = decode_frame::<GuestMsg>(&mut buf).unwrap() {
                decoded.push(f);
            }
        }
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_frame::<HostMsg>(&mut buf) {}
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_frame::<GuestMsg>(&mut buf) {}
    }
}

#[test]
fn oversized_frame_is_refused_before_buffering() {
    let mut buf = BytesMut::from(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes()[..]);
    let err = decode_frame::<HostMsg>(&mut buf).unwrap_err();
    assert!(matches!(err, ProtocolError::FrameTooLarge { .. }), "{err}");
}

#[test]
fn truncated_payload_is_malformed() {
    let wire = encode_frame(&Frame::new(7, HostMsg::Stdin(vec![1; 100]))).unwrap();
    let mut bad = wire[..20].to_vec();
    bad[..4].copy_from_slice(&16u32.to_be_bytes());
    let mut buf = BytesMut::from(&bad[..]);
    assert!(matches!(
        decode_frame::<HostMsg>(&mut buf),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn oversized_message_is_refused_by_encoder() {
    let frame = Frame::new(1, HostMsg::Stdin(vec![0; MAX_FRAME_LEN + 1]));
    assert!(matches!(
        encode_frame(&frame),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
}
