//! ISO/IEC 7816-4 status words (SW1-SW2) used by valuecard cards.
//!
//! Every card error maps to exactly one of these at one boundary (the card's dispatcher);
//! `docs/card-commands.md` lists which command returns which.

use core::fmt;

/// A status word, SW1 in the high byte and SW2 in the low byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    /// 9000: normal processing.
    pub const SUCCESS: StatusWord = StatusWord(0x9000);
    /// 6281: part of the returned data may be corrupted (a card image that failed its check).
    pub const DATA_CORRUPTED: StatusWord = StatusWord(0x6281);
    /// 6283: selected file deactivated (the purse is blocked after an abnormal event).
    pub const FILE_DEACTIVATED: StatusWord = StatusWord(0x6283);
    /// 6581: memory failure (the persistent write failed; state unchanged).
    pub const MEMORY_FAILURE: StatusWord = StatusWord(0x6581);
    /// 6700: wrong length (Lc or Le inconsistent with the command).
    pub const WRONG_LENGTH: StatusWord = StatusWord(0x6700);
    /// 6882: secure messaging not supported.
    pub const SECURE_MESSAGING_NOT_SUPPORTED: StatusWord = StatusWord(0x6882);
    /// 6982: security status not satisfied (a signature, MAC or certificate failed).
    pub const SECURITY_STATUS_NOT_SATISFIED: StatusWord = StatusWord(0x6982);
    /// 6983: authentication method blocked.
    pub const AUTHENTICATION_BLOCKED: StatusWord = StatusWord(0x6983);
    /// 6984: reference data not usable (expired certificate, key not yet installed).
    pub const REFERENCE_DATA_NOT_USABLE: StatusWord = StatusWord(0x6984);
    /// 6985: conditions of use not satisfied (wrong life-cycle state or missing prior step).
    pub const CONDITIONS_NOT_SATISFIED: StatusWord = StatusWord(0x6985);
    /// 6A80: incorrect parameters in the command data field (malformed TLV, bad values).
    pub const WRONG_DATA: StatusWord = StatusWord(0x6A80);
    /// 6A81: function not supported (the purse is blocked; EMV uses the same on SELECT).
    pub const FUNCTION_NOT_SUPPORTED: StatusWord = StatusWord(0x6A81);
    /// 6A82: file or application not found (SELECT of an unknown AID).
    pub const FILE_NOT_FOUND: StatusWord = StatusWord(0x6A82);
    /// 6A84: not enough memory space (balance would exceed the purse maximum).
    pub const NOT_ENOUGH_MEMORY: StatusWord = StatusWord(0x6A84);
    /// 6A86: incorrect parameters P1-P2.
    pub const INCORRECT_P1_P2: StatusWord = StatusWord(0x6A86);
    /// 6A88: referenced data not found (no transaction to report yet).
    pub const REFERENCED_DATA_NOT_FOUND: StatusWord = StatusWord(0x6A88);
    /// 6D00: instruction code not supported.
    pub const INS_NOT_SUPPORTED: StatusWord = StatusWord(0x6D00);
    /// 6E00: class not supported.
    pub const CLA_NOT_SUPPORTED: StatusWord = StatusWord(0x6E00);
    /// 6F00: no precise diagnosis (an internal error; state unchanged).
    pub const UNKNOWN: StatusWord = StatusWord(0x6F00);
    /// 6A85: Nc inconsistent with TLV structure (used for an insufficient balance, see docs).
    pub const INSUFFICIENT_FUNDS: StatusWord = StatusWord(0x6A85);

    /// 63Cx: verification failed, `x` tries left (ISO/IEC 7816-4 § 5.6); at most 15.
    pub fn verification_failed(tries_left: u8) -> StatusWord {
        StatusWord(0x63C0 | u16::from(tries_left.min(0x0F)))
    }

    /// The tries left of a 63Cx answer, `None` for any other status word.
    pub fn tries_left(self) -> Option<u8> {
        (self.0 & 0xFFF0 == 0x63C0).then_some((self.0 & 0x000F) as u8)
    }

    pub fn from_bytes(sw1: u8, sw2: u8) -> StatusWord {
        StatusWord(u16::from_be_bytes([sw1, sw2]))
    }

    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub fn sw2(self) -> u8 {
        self.0 as u8
    }

    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }

    pub fn is_success(self) -> bool {
        self == StatusWord::SUCCESS
    }

    /// A short English meaning, for tools and error messages.
    pub fn meaning(self) -> &'static str {
        if self.tries_left().is_some() {
            return "verification failed (tries left in the low digit)";
        }
        match self {
            StatusWord::SUCCESS => "success",
            StatusWord::DATA_CORRUPTED => "data may be corrupted",
            StatusWord::FILE_DEACTIVATED => "application deactivated",
            StatusWord::MEMORY_FAILURE => "memory failure",
            StatusWord::WRONG_LENGTH => "wrong length",
            StatusWord::SECURE_MESSAGING_NOT_SUPPORTED => "secure messaging not supported",
            StatusWord::SECURITY_STATUS_NOT_SATISFIED => "security status not satisfied",
            StatusWord::AUTHENTICATION_BLOCKED => "authentication method blocked",
            StatusWord::REFERENCE_DATA_NOT_USABLE => "reference data not usable",
            StatusWord::CONDITIONS_NOT_SATISFIED => "conditions of use not satisfied",
            StatusWord::WRONG_DATA => "incorrect data",
            StatusWord::FUNCTION_NOT_SUPPORTED => "function not supported (purse blocked)",
            StatusWord::FILE_NOT_FOUND => "application not found",
            StatusWord::NOT_ENOUGH_MEMORY => "balance limit exceeded",
            StatusWord::INSUFFICIENT_FUNDS => "insufficient balance",
            StatusWord::INCORRECT_P1_P2 => "incorrect P1-P2",
            StatusWord::REFERENCED_DATA_NOT_FOUND => "referenced data not found",
            StatusWord::INS_NOT_SUPPORTED => "instruction not supported",
            StatusWord::CLA_NOT_SUPPORTED => "class not supported",
            StatusWord::UNKNOWN => "no precise diagnosis",
            _ => "unlisted status word",
        }
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X} ({})", self.0, self.meaning())
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusWord({:04X})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        for sw in [
            StatusWord::SUCCESS,
            StatusWord::WRONG_DATA,
            StatusWord(0x6C10),
        ] {
            let [a, b] = sw.to_bytes();
            assert_eq!(StatusWord::from_bytes(a, b), sw);
        }
        assert_eq!(StatusWord::WRONG_DATA.sw1(), 0x6A);
        assert_eq!(StatusWord::WRONG_DATA.sw2(), 0x80);
        assert_eq!(
            StatusWord::INSUFFICIENT_FUNDS.to_string(),
            "6A85 (insufficient balance)"
        );
        assert_eq!(StatusWord::verification_failed(2), StatusWord(0x63C2));
        assert_eq!(StatusWord(0x63C2).tries_left(), Some(2));
        assert_eq!(StatusWord::AUTHENTICATION_BLOCKED.tries_left(), None);
    }
}
