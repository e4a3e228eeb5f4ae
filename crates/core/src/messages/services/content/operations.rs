//! The operations of normal use (UPDATE AREA under an area's main key), their encoding,
//! and [`AreaContent::apply`], the one place where an operation changes a content.

use crate::limits::{AREA_TICKETS_MAX, POINTS_MAX};
use crate::messages::DecodeError;
use crate::time::Date;
use crate::tlv::{TlvReader, TlvWriter};

use super::{ctag, points_field, AreaContent, PointsAccount, Ticket};
use crate::messages::field::{date, refused, u32_field};
use crate::messages::services::{tag, ServiceKind};

impl AreaContent {
    /// The content after one operation of normal use, in an area formatted for `capacity`
    /// tickets. Pure: the content itself is unchanged, and an operation refused changes
    /// nothing.
    ///
    /// The purse takes no operation here (its normal use is the purse application).
    pub fn apply(
        &self,
        operation: &ServiceOperation,
        capacity: u16,
    ) -> Result<AreaContent, OperationError> {
        match (self, operation) {
            (AreaContent::Tickets(book), ServiceOperation::IssueTicket(ticket)) => {
                if book.get(ticket.ticket_id).is_some() {
                    return Err(OperationError::DuplicateTicket);
                }
                let limit = usize::from(capacity).min(AREA_TICKETS_MAX);
                if book.tickets.len() >= limit {
                    return Err(OperationError::Full);
                }
                let mut book = book.clone();
                book.tickets.push(ticket.clone());
                Ok(AreaContent::Tickets(book))
            }
            (AreaContent::Tickets(book), ServiceOperation::UseRide { ticket_id, date }) => {
                let mut book = book.clone();
                let ticket = book
                    .tickets
                    .iter_mut()
                    .find(|ticket| ticket.ticket_id == *ticket_id)
                    .ok_or(OperationError::UnknownTicket)?;
                if !ticket.is_valid_on(*date) {
                    return Err(OperationError::NotValidOn);
                }
                if let Some(rides) = &mut ticket.rides_left {
                    *rides = rides.checked_sub(1).ok_or(OperationError::NoRidesLeft)?;
                }
                Ok(AreaContent::Tickets(book))
            }
            (AreaContent::Points(account), ServiceOperation::EarnPoints { points, expiry }) => {
                let points = account
                    .points
                    .checked_add(*points)
                    .filter(|&total| total <= POINTS_MAX)
                    .ok_or(OperationError::Overflow)?;
                Ok(AreaContent::Points(PointsAccount {
                    points,
                    expiry: account.expiry.max(*expiry),
                }))
            }
            (AreaContent::Points(account), ServiceOperation::RedeemPoints { points, date }) => {
                if *date > account.expiry {
                    return Err(OperationError::PointsExpired);
                }
                let points = account
                    .points
                    .checked_sub(*points)
                    .ok_or(OperationError::InsufficientPoints)?;
                Ok(AreaContent::Points(PointsAccount {
                    points,
                    expiry: account.expiry,
                }))
            }
            _ => Err(OperationError::WrongKind),
        }
    }
}

/// One operation of normal use on an area (UPDATE AREA under the area's main key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceOperation {
    /// Adds a ticket to a tickets area.
    IssueTicket(Ticket),
    /// Validates a ticket on `date`; a carnet loses one ride.
    UseRide { ticket_id: u32, date: Date },
    /// Adds points to a points area; the account's expiry becomes the later of the two.
    EarnPoints { points: u64, expiry: Date },
    /// Takes points from a points area on `date`.
    RedeemPoints { points: u64, date: Date },
}

impl ServiceOperation {
    const ISSUE_TICKET: u8 = 0x01;
    const USE_RIDE: u8 = 0x02;
    const EARN_POINTS: u8 = 0x03;
    const REDEEM_POINTS: u8 = 0x04;

    /// The kind of area the operation applies to.
    pub fn kind(&self) -> ServiceKind {
        match self {
            ServiceOperation::IssueTicket(_) | ServiceOperation::UseRide { .. } => {
                ServiceKind::Tickets
            }
            ServiceOperation::EarnPoints { .. } | ServiceOperation::RedeemPoints { .. } => {
                ServiceKind::Points
            }
        }
    }

    fn code(&self) -> u8 {
        match self {
            ServiceOperation::IssueTicket(_) => Self::ISSUE_TICKET,
            ServiceOperation::UseRide { .. } => Self::USE_RIDE,
            ServiceOperation::EarnPoints { .. } => Self::EARN_POINTS,
            ServiceOperation::RedeemPoints { .. } => Self::REDEEM_POINTS,
        }
    }

    /// Appends the operation as one TLV object under [`tag::OPERATION`].
    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::OPERATION, |o| {
            o.put_u8(ctag::OPERATION_CODE, self.code());
            match self {
                ServiceOperation::IssueTicket(ticket) => ticket.encode_into(o),
                ServiceOperation::UseRide { ticket_id, date } => {
                    o.put_u32(ctag::TICKET_ID, *ticket_id)
                        .put_u32(tag::DATE, date.0);
                }
                ServiceOperation::EarnPoints { points, expiry } => {
                    o.put_u64(ctag::POINTS, *points)
                        .put_u32(ctag::EXPIRY, expiry.0);
                }
                ServiceOperation::RedeemPoints { points, date } => {
                    o.put_u64(ctag::POINTS, *points).put_u32(tag::DATE, date.0);
                }
            }
        });
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(40);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    /// Decodes the value of a [`tag::OPERATION`] object.
    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let [code] = r.expect_array::<1>(ctag::OPERATION_CODE)?;
        let operation = match code {
            Self::ISSUE_TICKET => {
                ServiceOperation::IssueTicket(Ticket::decode_value(r.expect(ctag::TICKET)?)?)
            }
            Self::USE_RIDE => ServiceOperation::UseRide {
                ticket_id: u32_field(&mut r, ctag::TICKET_ID)?,
                date: date(&mut r, tag::DATE)?,
            },
            Self::EARN_POINTS => ServiceOperation::EarnPoints {
                points: points_field(&mut r)?,
                expiry: date(&mut r, ctag::EXPIRY)?,
            },
            Self::REDEEM_POINTS => ServiceOperation::RedeemPoints {
                points: points_field(&mut r)?,
                date: date(&mut r, tag::DATE)?,
            },
            _ => return Err(refused("operation", "unknown")),
        };
        r.finish()?;
        Ok(operation)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let operation = Self::decode_value(r.expect(tag::OPERATION)?)?;
        r.finish()?;
        Ok(operation)
    }
}

/// Why an operation of normal use was refused (the content is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    #[error("the operation is not for this kind of area")]
    WrongKind,
    #[error("the area holds as many tickets as it can")]
    Full,
    #[error("the area already holds a ticket with this ID")]
    DuplicateTicket,
    #[error("the area holds no ticket with this ID")]
    UnknownTicket,
    #[error("the ticket is not valid on this date")]
    NotValidOn,
    #[error("the ticket has no rides left")]
    NoRidesLeft,
    #[error("the account holds fewer points than asked")]
    InsufficientPoints,
    #[error("the points have expired")]
    PointsExpired,
    #[error("the points would exceed the maximum of {POINTS_MAX}")]
    Overflow,
}
