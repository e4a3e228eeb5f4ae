//! Command APDU parser: never panics, and whatever it accepts survives encode and parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valuecard_core::apdu::Command;
use valuecard_core::limits::APDU_COMMAND_DATA_MAX;

fuzz_target!(|data: &[u8]| {
    let Ok(command) = Command::parse(data) else {
        return;
    };
    assert!(command.data.len() <= APDU_COMMAND_DATA_MAX);
    assert!(command.le.map_or(true, |le| (1..=65_536).contains(&le)));
    let encoded = command.encode();
    // One command may have several encodings (a short Le in extended form), so the bytes
    // need not match; the command must.
    let again = Command::parse(&encoded).expect("re-encoded command must parse");
    assert_eq!(again, command);
    assert_eq!(again.encode(), encoded, "encoding is not deterministic");
});
