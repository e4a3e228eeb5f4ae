//! Certificate decoder: never panics, and a decoded certificate re-encodes to exactly the
//! input (a certificate has one valid byte string).
#![no_main]

use libfuzzer_sys::fuzz_target;
use valuecard_core::cert::Certificate;
use valuecard_core::limits::CERTIFICATE_LEN_MAX;

fuzz_target!(|data: &[u8]| {
    let Ok(certificate) = Certificate::decode(data) else {
        return;
    };
    assert!(data.len() <= CERTIFICATE_LEN_MAX);
    assert_eq!(
        certificate.encode(),
        data,
        "certificate re-encoding differs"
    );
    // And the re-encoding decodes to the same certificate.
    let decoded =
        Certificate::decode(&certificate.encode()).expect("re-encoded certificate must decode");
    assert_eq!(decoded, certificate);
});
