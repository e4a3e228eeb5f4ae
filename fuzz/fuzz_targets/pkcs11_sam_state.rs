//! The PKCS#11 SAM's state object decoder: never panics, and what it decodes encodes to a
//! value that decodes to the same encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valuecard_sam_pkcs11::state_round_trip;

fuzz_target!(|data: &[u8]| {
    let Some(encoded) = state_round_trip(data) else {
        return;
    };
    let again = state_round_trip(&encoded).expect("a re-encoded state must decode");
    assert_eq!(again, encoded);
});
