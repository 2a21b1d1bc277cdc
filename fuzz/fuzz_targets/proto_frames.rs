//! Any binary frame on either socket under the protobuf codec: decoding and validating never
//! panics, and every accepted ping validates to a fix inside WGS84 bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trackhub::protocol::codec::{Codec, Frame};

mod common;

fuzz_target!(|data: &[u8]| {
    common::check_driver(Codec::Proto.decode_driver(Frame::Binary(data)));
    let _ = Codec::Proto.decode_watch(Frame::Binary(data));
});
