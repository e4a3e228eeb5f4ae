//! The credit authorizer of Figs. 24-32: asked to approve a charge against the holder's
//! credit card before any value goes onto the card, and to reverse an approval whose
//! charge never reached the card. A real card network cannot exist here, so the settlement
//! service talks to it through [`CreditAuthorizer`], and the one implementation in this
//! tree is [`TestAuthorizer`], a clearly named stand-in that approves or declines by card
//! number and limit.

use std::collections::BTreeMap;
use std::sync::Mutex;

use valuecard_core::money::Amount;

/// A credit card as the authorizer sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct CreditCard {
    /// Digits only.
    pub number: String,
    pub expiry_month: u32,
    /// Four digits.
    pub expiry_year: u32,
    pub holder_name: String,
}

impl core::fmt::Debug for CreditCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CreditCard(…{})", self.last_four())
    }
}

/// Why a credit card number or expiry is refused before it is sent anywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardNumberError {
    #[error("a card number has 12 to 19 digits")]
    Length,
    #[error("the card number's check digit is wrong (mistyped?)")]
    CheckDigit,
    #[error("the expiry is written MM/YY")]
    Expiry,
    #[error("the card expired")]
    Expired,
    #[error("the name on the card is missing")]
    Name,
}

impl CreditCard {
    /// Parses what the holder typed: spaces and dashes in the number are ignored, the Luhn
    /// check digit must hold, the expiry is `MM/YY` and not before `today`'s month.
    pub fn parse(
        number: &str,
        expiry: &str,
        holder_name: &str,
        today: valuecard_core::time::Date,
    ) -> Result<Self, CardNumberError> {
        let digits: String = number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if !(12..=19).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(CardNumberError::Length);
        }
        if !luhn(&digits) {
            return Err(CardNumberError::CheckDigit);
        }
        let (month, year) = expiry
            .trim()
            .split_once('/')
            .ok_or(CardNumberError::Expiry)?;
        let month: u32 = month.trim().parse().map_err(|_| CardNumberError::Expiry)?;
        let year: u32 = year.trim().parse().map_err(|_| CardNumberError::Expiry)?;
        if !(1..=12).contains(&month) || year > 99 {
            return Err(CardNumberError::Expiry);
        }
        let year = 2000 + year;
        let (this_year, this_month, _) = today.to_ymd();
        if (year as i32, month) < (this_year, this_month) {
            return Err(CardNumberError::Expired);
        }
        let holder_name = holder_name.trim();
        if holder_name.is_empty() || holder_name.len() > 80 {
            return Err(CardNumberError::Name);
        }
        Ok(CreditCard {
            number: digits,
            expiry_month: month,
            expiry_year: year,
            holder_name: holder_name.to_owned(),
        })
    }

    /// The only part of the number the settlement system keeps.
    pub fn last_four(&self) -> &str {
        self.number
            .get(self.number.len().saturating_sub(4)..)
            .unwrap_or("")
    }
}

/// The Luhn check of a digit string.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Approved under this code.
    Approved(String),
    /// Declined, with the reason the network gave.
    Declined(String),
}

/// Why the authorizer could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the credit authorizer is unavailable: {0}")]
pub struct AuthorizerUnavailable(pub String);

/// A card network's authorizer.
pub trait CreditAuthorizer: Send + Sync {
    /// Approves or declines `amount` on `card`; `reference` (the charge's ID) makes a
    /// repeated request answer the same authorization instead of a second one.
    fn authorize(
        &self,
        card: &CreditCard,
        amount: Amount,
        reference: &[u8],
    ) -> Result<Authorization, AuthorizerUnavailable>;

    /// Releases an approval whose charge never reached the card.
    fn reverse(&self, authorization: &str) -> Result<(), AuthorizerUnavailable>;
}

/// A stand-in for a card network, for tests and the demo: every card number passing the
/// Luhn check has a credit limit (by default [`TestAuthorizer::DEFAULT_LIMIT_MINOR`]); numbers
/// listed as declined are always declined; approvals use up the limit and reversals give
/// it back.
#[derive(Debug)]
pub struct TestAuthorizer {
    default_limit: Amount,
    state: Mutex<TestAuthorizerState>,
}

#[derive(Debug, Default)]
struct TestAuthorizerState {
    limits: BTreeMap<String, Amount>,
    declined: BTreeMap<String, String>,
    used: BTreeMap<String, Amount>,
    /// Authorization code → (card number, amount); by reference for repeated requests.
    approvals: BTreeMap<String, (String, Amount)>,
    by_reference: BTreeMap<Vec<u8>, String>,
    next_code: u32,
}

impl TestAuthorizer {
    /// The limit of a card number given none of its own: 1000.00.
    pub const DEFAULT_LIMIT_MINOR: u64 = 100_000;

    pub fn new() -> Self {
        TestAuthorizer {
            default_limit: Amount::new(Self::DEFAULT_LIMIT_MINOR).unwrap_or(Amount::MAX),
            state: Mutex::new(TestAuthorizerState::default()),
        }
    }

    /// Gives `number` a credit limit of its own.
    pub fn with_limit(self, number: &str, limit: Amount) -> Self {
        self.lock().limits.insert(number.to_owned(), limit);
        self
    }

    /// Declines every charge on `number` with `reason`.
    pub fn declining(self, number: &str, reason: &str) -> Self {
        self.lock()
            .declined
            .insert(number.to_owned(), reason.to_owned());
        self
    }

    /// What is used of `number`'s limit.
    pub fn used(&self, number: &str) -> Amount {
        self.lock()
            .used
            .get(number)
            .copied()
            .unwrap_or(Amount::ZERO)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TestAuthorizerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for TestAuthorizer {
    fn default() -> Self {
        Self::new()
    }
}

impl CreditAuthorizer for TestAuthorizer {
    fn authorize(
        &self,
        card: &CreditCard,
        amount: Amount,
        reference: &[u8],
    ) -> Result<Authorization, AuthorizerUnavailable> {
        let mut state = self.lock();
        if let Some(code) = state.by_reference.get(reference) {
            return Ok(Authorization::Approved(code.clone()));
        }
        if let Some(reason) = state.declined.get(&card.number) {
            return Ok(Authorization::Declined(reason.clone()));
        }
        let limit = state
            .limits
            .get(&card.number)
            .copied()
            .unwrap_or(self.default_limit);
        let used = state
            .used
            .get(&card.number)
            .copied()
            .unwrap_or(Amount::ZERO);
        let after = match used.checked_add(amount) {
            Ok(after) if after <= limit => after,
            _ => return Ok(Authorization::Declined("over the credit limit".into())),
        };
        state.next_code = state.next_code.wrapping_add(1);
        let code = format!("T{:05}", state.next_code);
        state.used.insert(card.number.clone(), after);
        state
            .approvals
            .insert(code.clone(), (card.number.clone(), amount));
        state.by_reference.insert(reference.to_vec(), code.clone());
        Ok(Authorization::Approved(code))
    }

    fn reverse(&self, authorization: &str) -> Result<(), AuthorizerUnavailable> {
        let mut state = self.lock();
        if let Some((number, amount)) = state.approvals.remove(authorization) {
            if let Some(used) = state.used.get_mut(&number) {
                *used = used.checked_sub(amount).unwrap_or(Amount::ZERO);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use valuecard_core::time::Date;

    fn today() -> Date {
        Date::from_ymd(2026, 11, 30).unwrap()
    }

    fn amount(minor: u64) -> Amount {
        Amount::new(minor).unwrap()
    }

    #[test]
    fn card_numbers_are_checked_before_anything_is_sent() {
        let card = CreditCard::parse("4111 1111 1111 1111", "12/29", "A Holder", today()).unwrap();
        assert_eq!(card.last_four(), "1111");
        assert_eq!(format!("{card:?}"), "CreditCard(…1111)");
        assert_eq!(
            CreditCard::parse("4111 1111 1111 1112", "12/29", "A", today()),
            Err(CardNumberError::CheckDigit)
        );
        assert_eq!(
            CreditCard::parse("4111", "12/29", "A", today()),
            Err(CardNumberError::Length)
        );
        assert_eq!(
            CreditCard::parse("4111111111111111", "13/29", "A", today()),
            Err(CardNumberError::Expiry)
        );
        assert_eq!(
            CreditCard::parse("4111111111111111", "10/26", "A", today()),
            Err(CardNumberError::Expired)
        );
        assert_eq!(
            CreditCard::parse("4111111111111111", "11/26", " ", today()),
            Err(CardNumberError::Name)
        );
    }

    #[test]
    fn the_test_authorizer_approves_within_the_limit_and_declines_past_it() {
        let authorizer = TestAuthorizer::new()
            .with_limit("4111111111111111", amount(3_000))
            .declining("4000000000000002", "stolen card");
        let card = CreditCard::parse("4111111111111111", "12/29", "A", today()).unwrap();
        let Authorization::Approved(code) =
            authorizer.authorize(&card, amount(2_000), b"1").unwrap()
        else {
            panic!("declined")
        };
        // The same reference answers the same approval, without using the limit twice.
        assert_eq!(
            authorizer.authorize(&card, amount(2_000), b"1").unwrap(),
            Authorization::Approved(code.clone())
        );
        assert_eq!(authorizer.used("4111111111111111"), amount(2_000));
        assert!(matches!(
            authorizer.authorize(&card, amount(2_000), b"2").unwrap(),
            Authorization::Declined(_)
        ));
        authorizer.reverse(&code).unwrap();
        assert_eq!(authorizer.used("4111111111111111"), Amount::ZERO);
        let stolen = CreditCard::parse("4000000000000002", "12/29", "B", today()).unwrap();
        assert_eq!(
            authorizer.authorize(&stolen, amount(1), b"3").unwrap(),
            Authorization::Declined("stolen card".into())
        );
    }
}
