//! Typed identifiers. A card ID can never be passed where a terminal ID is expected.

use core::fmt;

/// The error for an identifier of the wrong length or text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identifier must be {expected} bytes ({} hex digits), got {got:?}", expected * 2)]
pub struct IdError {
    pub expected: usize,
    pub got: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                <[u8; $len]>::try_from(bytes).map(Self).map_err(|_| IdError {
                    expected: $len,
                    got: hex::encode(bytes),
                })
            }

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode_upper(self.0)
            }
        }

        impl core::str::FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                let bytes = hex::decode(text).map_err(|_| IdError {
                    expected: $len,
                    got: text.to_owned(),
                })?;
                Self::from_slice(&bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

id_type!(
    /// IDU of seed 003: identifies one card (purse chip) for its whole life.
    CardId,
    8
);
id_type!(
    /// Identifies a device that holds a certificate from the center: a payment terminal
    /// (IDT), a dispenser (IDC), the center itself (IDA), or a later kind of device. Which
    /// one it is, is the certificate's [`crate::cert::Role`].
    DeviceId,
    8
);
id_type!(
    /// Identifies one key of the center's key hierarchy (root, issuing), so that keys can be
    /// rotated and certificates name the key that signed them.
    KeyId,
    4
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let id: CardId = "0102030405060708".parse().unwrap();
        assert_eq!(id.to_string(), "0102030405060708");
        assert!("01020304050607".parse::<CardId>().is_err());
        assert!("zz02030405060708".parse::<CardId>().is_err());
        assert!(CardId::from_slice(&[0; 9]).is_err());
    }
}
