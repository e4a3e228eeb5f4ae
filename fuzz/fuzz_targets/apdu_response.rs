//! Response APDU parser: never panics, and whatever it accepts re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valuecard_core::apdu::Response;
use valuecard_core::limits::APDU_RESPONSE_DATA_MAX;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = Response::parse(data) else {
        return;
    };
    assert!(response.data.len() <= APDU_RESPONSE_DATA_MAX);
    assert_eq!(response.encode(), data);
    assert_eq!(
        Response::parse(&response.encode()).expect("re-encoded response must parse"),
        response
    );
});
