//! PKCS#11 URI parser (RFC 7512): never panics, and a parsed URI printed without its PIN
//! parses again to the same token and objects.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valuecard_sam_pkcs11::Pkcs11Uri;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = Pkcs11Uri::parse(text) else {
        return;
    };
    let printed = uri.without_pin();
    let again = Pkcs11Uri::parse(&printed).expect("a printed URI must parse");
    assert!(again.same_objects(&uri), "{printed}");
    assert_eq!(again.without_pin(), printed);
    assert_eq!(again.pin_value(), None);
});
