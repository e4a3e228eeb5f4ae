//! BER-TLV reader: walks every object, descending into constructed ones, and checks that
//! what parsed re-encodes with `TlvWriter` to exactly the bytes it was read from (the codec
//! accepts only minimal tags and lengths, so every parsed object has one encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use valuecard_core::limits::TLV_VALUE_MAX;
use valuecard_core::tlv::{TlvReader, TlvWriter};

/// Nesting beyond this is walked no deeper (every level costs at least two input bytes,
/// so the recursion is bounded anyway; this keeps it shallow).
const DEPTH_MAX: usize = 16;

fuzz_target!(|data: &[u8]| {
    walk(data, 0);

    // The reader's typed accessors must not panic either.
    let mut reader = TlvReader::new(data);
    let _ = reader.optional(0x84);
    let _ = reader.expect_array::<8>(0x5F20);
    let _ = reader.expect(0x7F21);
    let _ = reader.finish();
});

fn walk(input: &[u8], depth: usize) {
    let mut reader = TlvReader::new(input);
    let mut writer = TlvWriter::new();
    let mut parsed_up_to = 0;
    loop {
        let before = reader.position();
        match reader.next_tlv() {
            Ok(Some(tlv)) => {
                assert!(tlv.value.len() <= TLV_VALUE_MAX);
                assert!(reader.position() > before, "reader made no progress");
                writer.put(tlv.tag.0, tlv.value);
                parsed_up_to = reader.position();
                if tlv.tag.is_constructed() && depth < DEPTH_MAX {
                    walk(tlv.value, depth + 1);
                }
            }
            Ok(None) => {
                assert_eq!(before, input.len());
                break;
            }
            Err(_) => break,
        }
    }
    assert!(parsed_up_to <= input.len());
    assert_eq!(
        writer.as_bytes(),
        &input[..parsed_up_to],
        "TLV re-encoding differs"
    );
}
