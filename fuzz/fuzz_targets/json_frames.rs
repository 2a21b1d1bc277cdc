//! Any text frame on either socket under the JSON codec: decoding and validating never panics,
//! and every accepted ping validates to a fix inside WGS84 bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trackhub::protocol::codec::{Codec, Frame};

mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    common::check_driver(Codec::Json.decode_driver(Frame::Text(text)));
    let _ = Codec::Json.decode_watch(Frame::Text(text));
});
