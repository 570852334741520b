//! Length-prefixed framing with a postcard payload.
//!
//! Frame layout: `u32` big-endian payload length, then the postcard encoding
//! of a [`Frame`]. Lengths above [`MAX_FRAME_LEN`] are rejected before any
//! allocation, and a payload that does not decode is an error, so a hostile
//! peer can neither exhaust memory nor panic the reader.

use std::marker::PhantomData;

use bytes::{Buf, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Frame, MAX_FRAME_LEN};

/// Size of the length prefix.
const LEN_PREFIX: usize = 4;

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The transport failed.
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced more bytes than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame's payload is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The peer sent more stream data than it had credit for, or granted absurd credit.
    #[error("flow control violation: {0}")]
    FlowControl(String),
}

/// Encodes one frame, length prefix included.
pub fn encode_frame<M: Serialize>(frame: &Frame<M>) -> Result<Vec<u8>, ProtocolError> {
    let mut out = postcard::to_extend(frame, vec![0u8; LEN_PREFIX])?;
    let len = out.len() - LEN_PREFIX;
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    out[..LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes one frame's payload (without its length prefix).
pub fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<Frame<M>, ProtocolError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Splits the next complete frame off `buf`, if there is one.
///
/// Returns `Ok(None)` when more bytes are needed. This is the whole decoder:
/// the tokio codec and the fuzz target both call it.
pub fn decode_frame<M: DeserializeOwned>(
    buf: &mut BytesMut,
) -> Result<Option<Frame<M>>, ProtocolError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    if buf.len() < LEN_PREFIX + len {
        buf.reserve(LEN_PREFIX + len - buf.len());
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    let payload = buf.split_to(len);
    decode_payload(&payload).map(Some)
}

/// A tokio codec that reads frames of `In` and writes frames of `Out`.
///
/// The host uses `FrameCodec<GuestMsg, HostMsg>`, the guest the reverse.
pub struct FrameCodec<In, Out> {
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// A new codec.
    pub fn new() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = Frame<In>;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        decode_frame(src)
    }
}

impl<In, Out: Serialize> Encoder<Frame<Out>> for FrameCodec<In, Out> {
    type Error = ProtocolError;

    fn encode(&mut self, item: Frame<Out>, dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.extend_from_slice(&encode_frame(&item)?);
        Ok(())
    }
}
