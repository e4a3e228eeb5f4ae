//! What each kind of area holds, and the operations of normal use.
//!
//! An area's content is one TLV object under [`tag::CONTENT`]: the kind byte, then the fields
//! of that kind (the purse's exported value, the tickets of a ticket book one constructed
//! object each, or a points account). An operation of normal use is one TLV object under
//! [`tag::OPERATION`]: an operation code, then its fields. [`AreaContent::apply`] is the one
//! place where an operation changes a content; it is pure, so the chip, the provider's SAM
//! and the tests all compute the same new content.
//!
//! Decoders refuse trailing bytes, unknown tags, unknown kinds and codes, and values out of
//! range: a ticket valid until before it is valid from, duplicate ticket IDs, more tickets
//! than [`AREA_TICKETS_MAX`], more points than [`POINTS_MAX`], a balance above the purse's
//! maximum.

use crate::crypto::sha256;
use crate::ids::CardId;
use crate::limits::{AREA_TICKETS_MAX, POINTS_MAX};
use crate::messages::field::{amount, date, refused, u32_field};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{be_u64, TlvError, TlvReader, TlvWriter};

use super::{tag, ServiceKind};

mod operations;
#[cfg(test)]
mod tests;

pub use operations::{OperationError, ServiceOperation};

/// TLV tags of the fields of a content and of an operation (context-specific, inside
/// [`tag::CONTENT`] and [`tag::OPERATION`]). The kind, the card ID, the balance, the counter
/// and an operation's date use the shared [`tag`] values.
pub mod content_tag {
    /// One ticket (constructed).
    pub const TICKET: u32 = 0xA0;
    pub const TICKET_ID: u32 = 0x96;
    pub const PRODUCT: u32 = 0x97;
    pub const VALID_FROM: u32 = 0x98;
    pub const VALID_UNTIL: u32 = 0x99;
    /// A carnet's rides left; absent for an unlimited pass.
    pub const RIDES_LEFT: u32 = 0x9A;
    pub const POINTS: u32 = 0x9B;
    pub const EXPIRY: u32 = 0x9C;
    /// Which operation of normal use (one byte).
    pub const OPERATION_CODE: u32 = 0x9D;
}

use content_tag as ctag;

/// The separator of [`AreaContent::digest`].
const CONTENT_DIGEST_CONTEXT: &[u8] = b"valuecard/services/content/v1";

/// A 2-byte unsigned number.
fn u16_value(tag: u32, value: &[u8]) -> Result<u16, DecodeError> {
    let raw: [u8; 2] = value.try_into().map_err(|_| TlvError::WrongValueLength {
        tag,
        expected: 2,
        got: value.len(),
    })?;
    Ok(u16::from_be_bytes(raw))
}

/// A number of points (8 bytes), within [`POINTS_MAX`].
pub(super) fn points_field(r: &mut TlvReader<'_>) -> Result<u64, DecodeError> {
    let points = be_u64(ctag::POINTS, r.expect(ctag::POINTS)?)?;
    if points > POINTS_MAX {
        return Err(refused("points", "above the maximum"));
    }
    Ok(points)
}

/// One ticket or pass of a tickets area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Unique within the area.
    pub ticket_id: u32,
    /// The provider's product code (which fare, which line, which event).
    pub product: u16,
    /// First day the ticket is valid.
    pub valid_from: Date,
    /// Last day the ticket is valid (inclusive; never before `valid_from`).
    pub valid_until: Date,
    /// `None`: an unlimited pass, valid every day between the dates. `Some(n)`: a carnet with
    /// `n` rides left.
    pub rides_left: Option<u16>,
}

impl Ticket {
    /// Whether `date` is within the ticket's validity (both ends included).
    pub fn is_valid_on(&self, date: Date) -> bool {
        self.valid_from <= date && date <= self.valid_until
    }

    fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(ctag::TICKET, |t| {
            t.put_u32(ctag::TICKET_ID, self.ticket_id)
                .put(ctag::PRODUCT, &self.product.to_be_bytes())
                .put_u32(ctag::VALID_FROM, self.valid_from.0)
                .put_u32(ctag::VALID_UNTIL, self.valid_until.0);
            if let Some(rides) = self.rides_left {
                t.put(ctag::RIDES_LEFT, &rides.to_be_bytes());
            }
        });
    }

    fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let ticket = Ticket {
            ticket_id: u32_field(&mut r, ctag::TICKET_ID)?,
            product: u16_value(ctag::PRODUCT, r.expect(ctag::PRODUCT)?)?,
            valid_from: date(&mut r, ctag::VALID_FROM)?,
            valid_until: date(&mut r, ctag::VALID_UNTIL)?,
            rides_left: r
                .optional(ctag::RIDES_LEFT)?
                .map(|value| u16_value(ctag::RIDES_LEFT, value))
                .transpose()?,
        };
        r.finish()?;
        if ticket.valid_until < ticket.valid_from {
            return Err(refused("valid until", "before valid from"));
        }
        Ok(ticket)
    }
}

/// The content of a tickets area: at most [`AREA_TICKETS_MAX`] tickets, IDs unique, in the
/// order they were issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketBook {
    pub tickets: Vec<Ticket>,
}

impl TicketBook {
    /// The ticket with this ID, if the book holds it.
    pub fn get(&self, ticket_id: u32) -> Option<&Ticket> {
        self.tickets
            .iter()
            .find(|ticket| ticket.ticket_id == ticket_id)
    }

    fn encode_into(&self, w: &mut TlvWriter) {
        for ticket in &self.tickets {
            ticket.encode_into(w);
        }
    }

    fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        let mut tickets: Vec<Ticket> = Vec::new();
        while let Some(value) = r.optional(ctag::TICKET)? {
            if tickets.len() == AREA_TICKETS_MAX {
                return Err(refused("tickets", "more than an area holds"));
            }
            let ticket = Ticket::decode_value(value)?;
            if tickets.iter().any(|t| t.ticket_id == ticket.ticket_id) {
                return Err(refused("ticket ID", "duplicate"));
            }
            tickets.push(ticket);
        }
        Ok(TicketBook { tickets })
    }
}

/// The content of a points area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsAccount {
    /// At most [`POINTS_MAX`].
    pub points: u64,
    /// Last day the points can be redeemed.
    pub expiry: Date,
}

/// The purse's value as the chip exports it: the balance of the card `card_id` at its
/// transaction counter `counter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurseValue {
    pub card_id: CardId,
    pub balance: Amount,
    pub counter: u32,
}

/// What one area holds, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AreaContent {
    Purse(PurseValue),
    Tickets(TicketBook),
    Points(PointsAccount),
}

impl AreaContent {
    pub fn kind(&self) -> ServiceKind {
        match self {
            AreaContent::Purse(_) => ServiceKind::Purse,
            AreaContent::Tickets(_) => ServiceKind::Tickets,
            AreaContent::Points(_) => ServiceKind::Points,
        }
    }

    /// The content of a freshly formatted area of this kind: an empty ticket book, or no
    /// points expiring on day 0. `None` for the purse, whose value always belongs to a card.
    pub fn empty(kind: ServiceKind) -> Option<AreaContent> {
        match kind {
            ServiceKind::Purse => None,
            ServiceKind::Tickets => Some(AreaContent::Tickets(TicketBook {
                tickets: Vec::new(),
            })),
            ServiceKind::Points => Some(AreaContent::Points(PointsAccount {
                points: 0,
                expiry: Date(0),
            })),
        }
    }

    /// Appends the content as one TLV object under [`tag::CONTENT`].
    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::CONTENT, |c| {
            c.put_u8(tag::KIND, self.kind() as u8);
            match self {
                AreaContent::Purse(value) => {
                    c.put(tag::CARD_ID, value.card_id.as_bytes())
                        .put_u64(tag::BALANCE, value.balance.minor())
                        .put_u32(tag::COUNTER, value.counter);
                }
                AreaContent::Tickets(book) => book.encode_into(c),
                AreaContent::Points(account) => {
                    c.put_u64(ctag::POINTS, account.points)
                        .put_u32(ctag::EXPIRY, account.expiry.0);
                }
            }
        });
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(64);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    /// Decodes the value of a [`tag::CONTENT`] object.
    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let [kind] = r.expect_array::<1>(tag::KIND)?;
        let content = match ServiceKind::from_u8(kind)? {
            ServiceKind::Purse => AreaContent::Purse(PurseValue {
                card_id: CardId(r.expect_array(tag::CARD_ID)?),
                balance: amount(&mut r, tag::BALANCE)?,
                counter: u32_field(&mut r, tag::COUNTER)?,
            }),
            ServiceKind::Tickets => AreaContent::Tickets(TicketBook::decode_from(&mut r)?),
            ServiceKind::Points => AreaContent::Points(PointsAccount {
                points: points_field(&mut r)?,
                expiry: date(&mut r, ctag::EXPIRY)?,
            }),
        };
        r.finish()?;
        Ok(content)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let content = Self::decode_value(r.expect(tag::CONTENT)?)?;
        r.finish()?;
        Ok(content)
    }

    /// SHA-256 over a separator and the content's encoding: what signed and sealed messages
    /// carry to bind one exact content.
    pub fn digest(&self) -> [u8; 32] {
        let mut m = CONTENT_DIGEST_CONTEXT.to_vec();
        m.extend_from_slice(&self.encode());
        sha256(&m)
    }

    /// A short description for the holder's own client ("3 tickets", "1200 points until day
    /// 20500", "balance 1234 (minor units)"). It shows values: servers must not display or
    /// log it.
    pub fn describe(&self) -> String {
        match self {
            AreaContent::Purse(value) => {
                format!("balance {} (minor units)", value.balance.minor())
            }
            AreaContent::Tickets(book) => match book.tickets.len() {
                1 => "1 ticket".to_owned(),
                n => format!("{n} tickets"),
            },
            AreaContent::Points(account) => {
                format!("{} points until day {}", account.points, account.expiry.0)
            }
        }
    }
}
