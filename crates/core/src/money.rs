//! Money as integer minor units with checked arithmetic. There are no floats anywhere.

use core::fmt;

use crate::limits::BALANCE_MAX_MINOR;

/// An amount of money in minor units (cents for a currency with two decimals).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);

/// Arithmetic that would leave the range a purse can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount {0} exceeds the maximum of {BALANCE_MAX_MINOR} minor units")]
    TooLarge(u64),
    #[error("amount {minuend} is smaller than {subtrahend}")]
    Insufficient { minuend: u64, subtrahend: u64 },
    #[error("amount must not be zero")]
    Zero,
}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    pub const MAX: Amount = Amount(BALANCE_MAX_MINOR);

    /// An amount within `0..=BALANCE_MAX_MINOR`.
    pub fn new(minor: u64) -> Result<Self, AmountError> {
        if minor > BALANCE_MAX_MINOR {
            return Err(AmountError::TooLarge(minor));
        }
        Ok(Amount(minor))
    }

    /// An amount that must move value: non-zero and within range.
    pub fn new_positive(minor: u64) -> Result<Self, AmountError> {
        if minor == 0 {
            return Err(AmountError::Zero);
        }
        Self::new(minor)
    }

    /// Parses an amount written in currency units with at most two decimals: `12`, `12.5`,
    /// `12.50`. Refuses signs, exponents, more decimals, and values above the purse maximum.
    pub fn parse_decimal(text: &str) -> Result<Amount, AmountParseError> {
        let bad = || AmountParseError(text.to_owned());
        let (units, cents) = match text.split_once('.') {
            Some((units, cents)) => (units, cents),
            None => (text, ""),
        };
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if units.is_empty()
            || units.len() > 12
            || !digits(units)
            || cents.len() > 2
            || !digits(cents)
        {
            return Err(bad());
        }
        if text.contains('.') && cents.is_empty() {
            return Err(bad());
        }
        let units: u64 = units.parse().map_err(|_| bad())?;
        let cents: u64 = match cents.len() {
            0 => 0,
            1 => cents.parse::<u64>().map_err(|_| bad())? * 10,
            _ => cents.parse().map_err(|_| bad())?,
        };
        let minor = units
            .checked_mul(100)
            .and_then(|m| m.checked_add(cents))
            .ok_or_else(bad)?;
        Amount::new(minor).map_err(|_| bad())
    }

    pub fn minor(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Amount) -> Result<Amount, AmountError> {
        let sum = self
            .0
            .checked_add(other.0)
            .ok_or(AmountError::TooLarge(u64::MAX))?;
        Amount::new(sum)
    }

    pub fn checked_sub(self, other: Amount) -> Result<Amount, AmountError> {
        self.0
            .checked_sub(other.0)
            .map(Amount)
            .ok_or(AmountError::Insufficient {
                minuend: self.0,
                subtrahend: other.0,
            })
    }

    /// Big-endian encoding used inside every signed message (fixed 8 bytes).
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_be_slice(bytes: &[u8]) -> Result<Amount, AmountError> {
        let raw: [u8; 8] = bytes
            .try_into()
            .map_err(|_| AmountError::TooLarge(u64::MAX))?;
        Amount::new(u64::from_be_bytes(raw))
    }
}

/// An amount that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an amount: write currency units with up to two decimals, like 12.50, at most 1000000.00")]
pub struct AmountParseError(pub String);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounds_are_enforced() {
        assert!(Amount::new(BALANCE_MAX_MINOR).is_ok());
        assert_eq!(
            Amount::new(BALANCE_MAX_MINOR + 1),
            Err(AmountError::TooLarge(BALANCE_MAX_MINOR + 1))
        );
        assert_eq!(Amount::new_positive(0), Err(AmountError::Zero));
        assert!(Amount::MAX.checked_add(Amount(1)).is_err());
        assert!(Amount(5).checked_sub(Amount(6)).is_err());
        assert_eq!(Amount(1234).to_string(), "12.34");
        assert!(Amount::from_be_slice(&[0; 7]).is_err());
    }

    #[test]
    fn parses_decimal_amounts_strictly() {
        assert_eq!(Amount::parse_decimal("12.50").unwrap(), Amount(1250));
        assert_eq!(Amount::parse_decimal("12.5").unwrap(), Amount(1250));
        assert_eq!(Amount::parse_decimal("12").unwrap(), Amount(1200));
        assert_eq!(Amount::parse_decimal("0.01").unwrap(), Amount(1));
        assert_eq!(Amount::parse_decimal("1000000.00").unwrap(), Amount::MAX);
        for bad in [
            "",
            ".",
            "12.",
            ".5",
            "-1",
            "+1",
            "1e3",
            "12.345",
            "1,00",
            "1000000.01",
            "99999999999999",
            " 1",
        ] {
            assert!(Amount::parse_decimal(bad).is_err(), "accepted {bad:?}");
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(minor in 0..=BALANCE_MAX_MINOR) {
            prop_assert_eq!(Amount::parse_decimal(&Amount(minor).to_string()).unwrap(), Amount(minor));
        }

        #[test]
        fn add_then_sub_is_identity(a in 0..=BALANCE_MAX_MINOR, b in 0..=BALANCE_MAX_MINOR) {
            let (a, b) = (Amount(a), Amount(b));
            if let Ok(sum) = a.checked_add(b) {
                prop_assert_eq!(sum.checked_sub(b).unwrap(), a);
            } else {
                prop_assert!(a.0 + b.0 > BALANCE_MAX_MINOR);
            }
        }

        #[test]
        fn be_bytes_round_trip(a in 0..=BALANCE_MAX_MINOR) {
            prop_assert_eq!(Amount::from_be_slice(&Amount(a).to_be_bytes()).unwrap(), Amount(a));
        }
    }
}
