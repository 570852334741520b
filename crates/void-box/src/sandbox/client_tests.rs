//! Tests of the host end of the guest connection, against guests made of
//! frames by hand.

use super::*;
use tokio::time::timeout;

type GuestCodec = FrameCodec<HostMsg, GuestMsg>;
type GuestFrames = FramedRead<tokio::net::unix::OwnedReadHalf, GuestCodec>;
type GuestSink = FramedWrite<tokio::net::unix::OwnedWriteHalf, GuestCodec>;

/// The guest's side of the handshake, proving `secret`.
async fn guest_handshake(frames: &mut GuestFrames, sink: &mut GuestSink, secret: &Secret) {
    let guest_nonce = [9; 32];
    let challenge = GuestMsg::Challenge {
        version: PROTOCOL_VERSION,
        nonce: guest_nonce,
    };
    sink.send(Frame::new(0, challenge)).await.unwrap();
    let Some(Ok(Frame {
        msg: HostMsg::Hello { nonce, .. },
        ..
    })) = frames.next().await
    else {
        panic!("no Hello");
    };
    let ok = GuestMsg::HelloOk {
        version: PROTOCOL_VERSION,
        agent: "test".into(),
        proof: auth::proof(secret, Side::Guest, &guest_nonce, &nonce),
    };
    sink.send(Frame::new(0, ok)).await.unwrap();
}

#[tokio::test]
async fn a_guest_that_cannot_prove_the_secret_is_refused() {
    let (host, guest) = UnixStream::pair().unwrap();
    tokio::spawn(async move {
        let (r, w) = guest.into_split();
        let (mut frames, mut sink) = (
            FramedRead::new(r, GuestCodec::new()),
            FramedWrite::new(w, GuestCodec::new()),
        );
        guest_handshake(&mut frames, &mut sink, &[1; 32]).await;
        while let Some(Ok(_)) = frames.next().await {}
    });
    let err = AgentClient::handshake(host, &[2; 32], Duration::from_secs(60))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("could not prove"), "{err}");
}

/// A guest that answers the handshake, then sends `msgs` on stream 1
/// as fast as it can, ignoring credit. Returns the host's client and
/// the stream it opened (which the test may leave unread).
async fn flooded_by(msgs: Vec<GuestMsg>) -> (AgentClient, Stream, JoinHandle<usize>) {
    let (host, guest) = UnixStream::pair().unwrap();
    let flood = tokio::spawn(async move {
        let (r, w) = guest.into_split();
        let mut frames = FramedRead::new(r, GuestCodec::new());
        let mut sink = FramedWrite::new(w, GuestCodec::new());
        guest_handshake(&mut frames, &mut sink, &[0; 32]).await;
        frames.next().await; // the host opened stream 1
        let mut sent = 0;
        for msg in msgs {
            if sink.send(Frame::new(1, msg)).await.is_err() {
                break;
            }
            sent += 1;
        }
        // Hold the connection until the host ends it.
        while let Some(Ok(_)) = frames.next().await {}
        sent
    });
    let client = AgentClient::handshake(host, &[0; 32], Duration::from_secs(60))
        .await
        .unwrap();
    let stream = client.open(HostMsg::Telemetry).unwrap();
    (client, stream, flood)
}

async fn failure_of(client: &AgentClient) -> String {
    let mut failed = client.shared.failure.subscribe();
    let reason = timeout(Duration::from_secs(10), failed.wait_for(|f| f.is_some()))
        .await
        .expect("the connection should fail")
        .unwrap()
        .clone();
    reason.unwrap()
}

#[tokio::test]
async fn a_guest_flooding_an_unread_stream_loses_its_connection() {
    let chunk = vec![b'x'; void_box_protocol::CHUNK_LEN];
    let flood = vec![GuestMsg::Stdout(chunk); 10_000]; // 640 MiB offered
    let (client, _unread, guest) = flooded_by(flood).await;
    let reason = failure_of(&client).await;
    assert!(reason.contains("overran stream 1"), "{reason}");
    drop(client);
    let sent = timeout(Duration::from_secs(10), guest)
        .await
        .unwrap()
        .unwrap();
    assert!(
        sent < 10_000,
        "the guest should have been cut off, sent {sent}"
    );
}

#[tokio::test]
async fn a_flood_of_small_messages_loses_its_connection() {
    let flood = vec![GuestMsg::Started { pid: 1 }; 1000];
    let (client, _unread, _guest) = flooded_by(flood).await;
    let reason = failure_of(&client).await;
    assert!(reason.contains("messages unread"), "{reason}");
}

#[tokio::test]
async fn a_guest_within_its_credit_keeps_its_connection() {
    let chunks = STREAM_WINDOW as usize / void_box_protocol::CHUNK_LEN;
    let mut msgs = vec![GuestMsg::Stdout(vec![1; void_box_protocol::CHUNK_LEN]); chunks];
    msgs.push(GuestMsg::Exited(Default::default()));
    let (client, mut stream, _guest) = flooded_by(msgs).await;
    // All of it waits unread for a while; nothing is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.failure(), None);
    let mut bytes = 0;
    loop {
        match stream.recv().await.unwrap() {
            GuestMsg::Stdout(d) => bytes += d.len(),
            GuestMsg::Exited(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(bytes, STREAM_WINDOW as usize);
}

#[tokio::test]
async fn a_quiesced_session_holds_every_frame_until_it_thaws() {
    let (host, guest) = UnixStream::pair().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (r, w) = guest.into_split();
        let mut frames = FramedRead::new(r, GuestCodec::new());
        let mut sink = FramedWrite::new(w, GuestCodec::new());
        guest_handshake(&mut frames, &mut sink, &[3; 32]).await;
        while let Some(Ok(frame)) = frames.next().await {
            if frame.msg == HostMsg::Quiesce {
                sink.send(Frame::new(frame.id, GuestMsg::Done))
                    .await
                    .unwrap();
            }
            let _ = seen_tx.send(frame.msg);
        }
    });
    let client = AgentClient::handshake(host, &[3; 32], Duration::from_millis(400))
        .await
        .unwrap();
    let quiesced = client.quiesce(Duration::from_secs(5)).await.unwrap();
    assert_eq!(seen.recv().await, Some(HostMsg::Quiesce));
    // A request and the heartbeat's pings (every 100 ms here) wait; the
    // heartbeat does not give up on a guest that may not answer.
    let _stream = client.open(HostMsg::Telemetry).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(seen.try_recv().is_err(), "a frame passed the hold");
    assert_eq!(client.failure(), None);
    quiesced.thaw();
    assert_eq!(seen.recv().await, Some(HostMsg::Thaw));
    assert_eq!(seen.recv().await, Some(HostMsg::Telemetry));
}

#[tokio::test]
async fn a_restored_guest_gets_its_identity_before_the_handshake_under_the_new_secret() {
    let (host, guest) = UnixStream::pair().unwrap();
    let new_secret = [5; 32];
    let guest_side = tokio::spawn(async move {
        let (r, w) = guest.into_split();
        let mut frames = FramedRead::new(r, GuestCodec::new());
        let mut sink = FramedWrite::new(w, GuestCodec::new());
        let Some(Ok(Frame {
            msg: HostMsg::Restored(restore),
            ..
        })) = frames.next().await
        else {
            panic!("the restored VM's identity comes first");
        };
        guest_handshake(&mut frames, &mut sink, &restore.config.secret).await;
        restore
    });
    let config = void_box_protocol::GuestConfig {
        secret: new_secret,
        hostname: "copy".into(),
        env: Vec::new(),
        allowed_commands: Vec::new(),
        limits: Default::default(),
        rootfs: None,
        mounts: Vec::new(),
        user: None,
        workdir: None,
        nameserver: None,
        edge_ca: None,
        file_roots: Vec::new(),
    };
    let restore = Restore {
        config,
        unix_time_ns: 1,
        entropy: [9; 32],
    };
    let client = AgentClient::restored(host, restore, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(guest_side.await.unwrap().config.secret, new_secret);
    drop(client);
}
