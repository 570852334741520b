//! Feeds arbitrary bytes to the frame decoder, as both peers would see
//! them: it must return frames or errors, never panic, hang, or allocate
//! beyond the frame limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use void_box_protocol::codec::decode_frame;
use void_box_protocol::{GuestMsg, HostMsg};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode_frame::<HostMsg>(&mut buf) {}
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode_frame::<GuestMsg>(&mut buf) {}
});
