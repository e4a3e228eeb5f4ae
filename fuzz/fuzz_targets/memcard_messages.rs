//! Memory-card decoders (`valuecard_core::messages::memcard`). The first byte selects the
//! decoder, the rest is the input. A decoded message must re-encode to exactly the input:
//! every message and every card area has one encoding.
#![no_main]

#[path = "common/round_trip.rs"]
mod common;

use common::round_trip;
use libfuzzer_sys::fuzz_target;
use valuecard_core::messages::memcard::{
    decode_certificate_area, encode_certificate_area, CardContent, FloatGrant, ValueArea,
    WriteRecord,
};

const DECODERS: u8 = 5;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % DECODERS {
        0 => round_trip(body, WriteRecord::decode, WriteRecord::encode),
        1 => round_trip(body, FloatGrant::decode, FloatGrant::encode),
        2 => round_trip(body, ValueArea::decode, |area: &ValueArea| {
            area.encode().to_vec()
        }),
        3 => {
            if let Ok(Some(certificate)) = decode_certificate_area(body) {
                assert_eq!(encode_certificate_area(&certificate).as_slice(), body);
            }
        }
        _ => {
            // A memory dump has no encoder of its own (the card holds the bytes); parsing it
            // must never panic, and its parts must re-encode to their areas.
            if let Ok(content) = CardContent::decode(body) {
                let area = &body[0x10..0x10 + 48];
                assert_eq!(content.value_area.encode().as_slice(), area);
            }
        }
    }
});
