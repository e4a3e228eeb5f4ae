//! The signed documents of online settlement (seed 004) and the exact byte strings each
//! signature covers:
//!
//! | signature | signer | over | checked by |
//! |---|---|---|---|
//! | SIG1 | the store (or mall) | the bill: [`Bill::signed_message`] | the application server |
//! | SIG2 | the application server | BI and the sealed SPC: [`settlement_offer_message`] | the holder's client |
//! | SIG3 | the application server | the completion: [`SettlementCompletion::signed_message`] | the store, the client |
//! | SIG4 | the store | the receipt: [`Receipt::signed_message`] | the application server, the client |
//! | SIG5 | the application server | the value update of a charge: [`charge_offer_message`] | the client |
//!
//! Each document has one TLV encoding; a signed string is its context label followed by
//! that encoding (or the listed fields), so no two documents' strings can be confused.

use crate::crypto::sha256;
use crate::ids::{CardId, DeviceId};
use crate::messages::field::{amount, date, refused as field};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{be_u32, be_u64, TlvReader, TlvWriter};

use super::SettlementId;

/// The most lines a bill carries.
pub const BILL_LINES_MAX: usize = 32;
/// The longest item description, in bytes of UTF-8.
pub const ITEM_LEN_MAX: usize = 80;

mod tag {
    pub const STORE: u32 = 0x80;
    pub const MEMBER_STORE: u32 = 0x81;
    pub const ORDER_NUMBER: u32 = 0x82;
    pub const TOTAL: u32 = 0x83;
    pub const ISSUED: u32 = 0x84;
    pub const EXPIRES: u32 = 0x85;
    pub const ITEM: u32 = 0x86;
    pub const QUANTITY: u32 = 0x87;
    pub const UNIT_PRICE: u32 = 0x88;
    pub const SETTLEMENT_ID: u32 = 0x89;
    pub const BILL_DIGEST: u32 = 0x8A;
    pub const CARD_ID: u32 = 0x8B;
    pub const COUNTER: u32 = 0x8C;
    pub const DATE: u32 = 0x8D;
    pub const COMPLETION_DIGEST: u32 = 0x8E;
    pub const LINE: u32 = 0xA0;
}

/// One line of a bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillLine {
    pub item: String,
    pub quantity: u32,
    pub unit_price: Amount,
}

/// The settlement request information BILL (ST5): what the store charges, for which order,
/// signed SIG1 by the store. In a mall, `store` is the mall (whose key signs) and
/// `member_store` the member store that sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bill {
    pub store: DeviceId,
    pub member_store: Option<DeviceId>,
    pub order_number: u64,
    pub lines: Vec<BillLine>,
    pub total: Amount,
    pub issued: Date,
    /// The last day the bill may be settled.
    pub expires: Date,
}

impl Bill {
    /// The sum of the lines, if it does not overflow an amount.
    pub fn sum_of_lines(lines: &[BillLine]) -> Option<Amount> {
        lines.iter().try_fold(Amount::ZERO, |sum, line| {
            let line_total = line
                .unit_price
                .minor()
                .checked_mul(u64::from(line.quantity))?;
            sum.checked_add(Amount::new(line_total).ok()?).ok()
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(64 + 100 * self.lines.len());
        w.put(tag::STORE, self.store.as_bytes());
        if let Some(member) = &self.member_store {
            w.put(tag::MEMBER_STORE, member.as_bytes());
        }
        w.put_u64(tag::ORDER_NUMBER, self.order_number);
        for line in &self.lines {
            w.nested(tag::LINE, |l| {
                l.put(tag::ITEM, line.item.as_bytes())
                    .put_u32(tag::QUANTITY, line.quantity)
                    .put_u64(tag::UNIT_PRICE, line.unit_price.minor());
            });
        }
        w.put_u64(tag::TOTAL, self.total.minor())
            .put_u32(tag::ISSUED, self.issued.0)
            .put_u32(tag::EXPIRES, self.expires.0);
        w.into_bytes()
    }

    /// Decodes a bill and checks that it holds together: 1 to [`BILL_LINES_MAX`] lines of
    /// non-empty items with non-zero quantities, a total equal to their sum and not zero,
    /// and an expiry not before the issue date.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let store = DeviceId(r.expect_array(tag::STORE)?);
        let member_store = r
            .optional(tag::MEMBER_STORE)?
            .map(|value| {
                <[u8; 8]>::try_from(value)
                    .map(DeviceId)
                    .map_err(|_| field("member store", "wrong length"))
            })
            .transpose()?;
        let order_number = be_u64(tag::ORDER_NUMBER, r.expect(tag::ORDER_NUMBER)?)?;
        let mut lines = Vec::new();
        while let Some(value) = r.optional(tag::LINE)? {
            if lines.len() == BILL_LINES_MAX {
                return Err(field("lines", "too many"));
            }
            let mut l = TlvReader::new(value);
            let item = String::from_utf8(l.expect(tag::ITEM)?.to_vec())
                .map_err(|_| field("item", "not UTF-8"))?;
            if item.is_empty() || item.len() > ITEM_LEN_MAX {
                return Err(field("item", "empty or too long"));
            }
            let quantity = be_u32(tag::QUANTITY, l.expect(tag::QUANTITY)?)?;
            if quantity == 0 {
                return Err(field("quantity", "zero"));
            }
            let unit_price = amount(&mut l, tag::UNIT_PRICE)?;
            l.finish()?;
            lines.push(BillLine {
                item,
                quantity,
                unit_price,
            });
        }
        let bill = Bill {
            store,
            member_store,
            order_number,
            lines,
            total: amount(&mut r, tag::TOTAL)?,
            issued: date(&mut r, tag::ISSUED)?,
            expires: date(&mut r, tag::EXPIRES)?,
        };
        r.finish()?;
        if bill.lines.is_empty() {
            return Err(field("lines", "none"));
        }
        if bill.total == Amount::ZERO || Bill::sum_of_lines(&bill.lines) != Some(bill.total) {
            return Err(field("total", "not the sum of the lines"));
        }
        if bill.expires < bill.issued {
            return Err(field("expires", "before the issue date"));
        }
        Ok(bill)
    }

    /// What SIG1 covers.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = b"valuecard/online/bill/v1".to_vec();
        m.extend_from_slice(&self.encode());
        m
    }

    /// The bill's digest, which every later document names.
    pub fn digest(&self) -> [u8; 32] {
        sha256(&self.signed_message())
    }
}

/// What SIG2 covers (ST14): the settlement, the bill it settles, BI as the security server
/// opened it (encoded) and the sealed SPC, so that the client shows the holder the balance
/// and the bill the card will be charged for (ST15) and passes on exactly that SPC.
pub fn settlement_offer_message(
    settlement_id: &SettlementId,
    bill_digest: &[u8; 32],
    balance_info: &[u8],
    sealed_update: &[u8],
) -> Vec<u8> {
    let mut m = b"valuecard/online/offer/v1".to_vec();
    m.extend_from_slice(settlement_id);
    m.extend_from_slice(bill_digest);
    m.extend_from_slice(&(balance_info.len() as u32).to_be_bytes());
    m.extend_from_slice(balance_info);
    m.extend_from_slice(sealed_update);
    m
}

/// What SIG5 covers (Figs. 24-32): the charge, the card, the amount, the credit
/// authorization's reference and the sealed value update.
pub fn charge_offer_message(
    charge_id: &SettlementId,
    card_id: &CardId,
    amount: Amount,
    authorization: &str,
    sealed_update: &[u8],
) -> Vec<u8> {
    let mut m = b"valuecard/online/charge/v1".to_vec();
    m.extend_from_slice(charge_id);
    m.extend_from_slice(card_id.as_bytes());
    m.extend_from_slice(&amount.to_be_bytes());
    m.extend_from_slice(&(authorization.len() as u32).to_be_bytes());
    m.extend_from_slice(authorization.as_bytes());
    m.extend_from_slice(sealed_update);
    m
}

/// The settlement completion information ACN (ST19), signed SIG3 by the application
/// server once the security server confirmed the card's PCN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementCompletion {
    pub settlement_id: SettlementId,
    pub bill_digest: [u8; 32],
    pub store: DeviceId,
    pub order_number: u64,
    pub amount: Amount,
    pub card_id: CardId,
    /// The card's counter after the payment.
    pub counter: u32,
    pub date: Date,
}

impl SettlementCompletion {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(120);
        w.put(tag::SETTLEMENT_ID, &self.settlement_id)
            .put(tag::BILL_DIGEST, &self.bill_digest)
            .put(tag::STORE, self.store.as_bytes())
            .put_u64(tag::ORDER_NUMBER, self.order_number)
            .put_u64(tag::TOTAL, self.amount.minor())
            .put(tag::CARD_ID, self.card_id.as_bytes())
            .put_u32(tag::COUNTER, self.counter)
            .put_u32(tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let completion = SettlementCompletion {
            settlement_id: r.expect_array(tag::SETTLEMENT_ID)?,
            bill_digest: r.expect_array(tag::BILL_DIGEST)?,
            store: DeviceId(r.expect_array(tag::STORE)?),
            order_number: be_u64(tag::ORDER_NUMBER, r.expect(tag::ORDER_NUMBER)?)?,
            amount: amount(&mut r, tag::TOTAL)?,
            card_id: CardId(r.expect_array(tag::CARD_ID)?),
            counter: be_u32(tag::COUNTER, r.expect(tag::COUNTER)?)?,
            date: date(&mut r, tag::DATE)?,
        };
        r.finish()?;
        Ok(completion)
    }

    /// What SIG3 covers.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = b"valuecard/online/completion/v1".to_vec();
        m.extend_from_slice(&self.encode());
        m
    }

    pub fn digest(&self) -> [u8; 32] {
        sha256(&self.signed_message())
    }
}

/// The settlement completion receipt information (ST112 / step (10)), signed SIG4 by the
/// store once it checked SIG3: it names the completion it acknowledges, and entitles the
/// holder to the goods of the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub settlement_id: SettlementId,
    pub completion_digest: [u8; 32],
    pub store: DeviceId,
    pub order_number: u64,
    pub amount: Amount,
    pub date: Date,
}

impl Receipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(100);
        w.put(tag::SETTLEMENT_ID, &self.settlement_id)
            .put(tag::COMPLETION_DIGEST, &self.completion_digest)
            .put(tag::STORE, self.store.as_bytes())
            .put_u64(tag::ORDER_NUMBER, self.order_number)
            .put_u64(tag::TOTAL, self.amount.minor())
            .put_u32(tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let receipt = Receipt {
            settlement_id: r.expect_array(tag::SETTLEMENT_ID)?,
            completion_digest: r.expect_array(tag::COMPLETION_DIGEST)?,
            store: DeviceId(r.expect_array(tag::STORE)?),
            order_number: be_u64(tag::ORDER_NUMBER, r.expect(tag::ORDER_NUMBER)?)?,
            amount: amount(&mut r, tag::TOTAL)?,
            date: date(&mut r, tag::DATE)?,
        };
        r.finish()?;
        Ok(receipt)
    }

    /// What SIG4 covers.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = b"valuecard/online/receipt/v1".to_vec();
        m.extend_from_slice(&self.encode());
        m
    }
}
