//! The guest agent driven by hand: a VM of the test's own, with a secret
//! it knows, and frames written and read on the agent's one channel.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use void_box::sandbox::{Accel, GuestImage};
use void_box::vm::{SavedState, VmBackend, VmInstance, VmSpec};
use void_box::ResourceLimits;
use void_box_protocol::codec::{decode_frame, encode_frame};
use void_box_protocol::{Frame, GuestConfig, GuestMsg, HostMsg, PROTOCOL_VERSION};

/// The agent's channel: frames as they arrive, several to a read at times.
pub struct Raw {
    pub conn: tokio::net::UnixStream,
    buf: bytes::BytesMut,
}

impl Raw {
    /// The next frame; `None` when the channel closed.
    pub async fn frame(&mut self) -> Option<Frame<GuestMsg>> {
        loop {
            if let Some(frame) = decode_frame::<GuestMsg>(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(30), self.conn.read_buf(&mut self.buf))
                    .await
                    .expect("guest answers")
                    .unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    /// The next frame's message, which must be a challenge: its nonce.
    pub async fn challenge(&mut self) -> [u8; 32] {
        match self.frame().await.map(|f| f.msg) {
            Some(GuestMsg::Challenge { nonce, .. }) => nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    pub async fn send(&mut self, id: u32, msg: HostMsg) {
        self.conn
            .write_all(&encode_frame(&Frame::new(id, msg)).unwrap())
            .await
            .unwrap();
    }

    /// Answers the next challenge with a proof under `secret`: whether the
    /// agent took it (an error otherwise, and a new challenge follows).
    pub async fn handshake(&mut self, secret: &[u8; 32]) -> bool {
        let nonce = self.challenge().await;
        self.send(0, hello(secret, &nonce)).await;
        match self.frame().await.map(|f| f.msg) {
            Some(GuestMsg::HelloOk { .. }) => true,
            Some(GuestMsg::Error(_)) => false,
            other => panic!("unexpected answer to Hello: {other:?}"),
        }
    }
}

/// A `Hello` answering `nonce` with a proof made under `secret`.
pub fn hello(secret: &[u8; 32], nonce: &[u8; 32]) -> HostMsg {
    HostMsg::Hello {
        version: PROTOCOL_VERSION,
        nonce: [0x42; 32],
        proof: void_box_protocol::auth::proof(
            secret,
            void_box_protocol::auth::Side::Host,
            nonce,
            &[0x42; 32],
        ),
        unix_time_ns: 0,
    }
}

/// A guest configuration with `secret` whose commands may be `sh` and
/// `true`.
pub fn guest_config(secret: &[u8; 32]) -> GuestConfig {
    GuestConfig {
        secret: *secret,
        hostname: "raw".into(),
        env: Vec::new(),
        allowed_commands: vec!["true".into(), "sh".into()],
        limits: ResourceLimits::default(),
        rootfs: None,
        mounts: Vec::new(),
        user: None,
        workdir: None,
        nameserver: None,
        edge_ca: None,
        file_roots: Vec::new(),
    }
}

/// A 256 MiB VM booted with `secret` (or loading `incoming`, stopped
/// until resumed), and its agent's channel.
pub async fn raw_vm(secret: &[u8; 32], incoming: Option<SavedState>) -> (Box<dyn VmInstance>, Raw) {
    let image = GuestImage::resolve().unwrap();
    let extra = match incoming {
        Some(_) => Vec::new(),
        None => void_box::vm::image::config_initramfs(&guest_config(secret).to_bytes()).unwrap(),
    };
    let spec = VmSpec {
        kernel: image.kernel,
        initramfs: image.initramfs,
        extra_initramfs: extra,
        memory_mb: 256,
        vcpus: 1,
        accel: Accel::choose(None).unwrap(),
        cmdline_extra: String::new(),
        disks: Vec::new(),
        shares: Vec::new(),
        network: false,
        incoming,
    };
    let backend = void_box::vm::qemu::QemuBackend::from_env().unwrap();
    let vm = backend.launch(&spec).await.unwrap();
    let conn = loop {
        match vm.connect_agent().await {
            Ok(conn) => break conn,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let raw = Raw {
        conn,
        buf: bytes::BytesMut::new(),
    };
    (vm, raw)
}
