//! What every message-decoder target checks: a decoded value re-encodes to exactly the
//! input (every message has one encoding) and decodes again to itself.

use std::fmt::Debug;

pub fn round_trip<T: PartialEq + Debug, E>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    let Ok(message) = decode(bytes) else {
        return;
    };
    let encoded = encode(&message);
    assert_eq!(
        encoded, bytes,
        "re-encoding of {message:?} differs from the input"
    );
    assert!(
        decode(&encoded).ok().as_ref() == Some(&message),
        "re-encoded {message:?} does not decode to itself"
    );
}
