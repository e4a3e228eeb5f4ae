//! The purchase exchanges of Fig. 6: INITIALIZE PURCHASE and its signed offer, the terminal's
//! signed commit, DEBIT, and the card's confirmation (shared with CREDIT).

use super::*;

/// INITIALIZE PURCHASE command data (Fig. 6): the terminal certificate (nT, IDT, SA(nT*IDT)),
/// the terminal challenge R, the amount the terminal may debit at most, and its date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializePurchase {
    pub terminal_certificate: Certificate,
    pub challenge_terminal: Challenge,
    pub amount_max: Amount,
    pub date: Date,
}

impl InitializePurchase {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(260);
        put_certificate(&mut w, &self.terminal_certificate);
        w.put(tag::CHALLENGE_TERMINAL, &self.challenge_terminal)
            .put_u64(tag::AMOUNT, self.amount_max.minor())
            .put_u32(tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = InitializePurchase {
            terminal_certificate: certificate(&mut r)?,
            challenge_terminal: challenge(&mut r, tag::CHALLENGE_TERMINAL)?,
            amount_max: amount(&mut r, tag::AMOUNT)?,
            date: Date(u32_field(&mut r, tag::DATE)?),
        };
        r.finish()?;
        Ok(message)
    }
}

/// INITIALIZE PURCHASE response: X, the balance V, the counter, the card's signature
/// SU(R * X * V) (over the fields of [`PurchaseOffer::signed_message`]), the previous
/// usage record, and the certificate of the terminal that wrote it (nT, IDT, SA(nT * IDT)
/// of Fig. 9), absent when the last writer was the center (a load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseOffer {
    pub challenge_card: Challenge,
    pub balance: Amount,
    pub counter: u32,
    pub signature: Signature,
    pub last_usage: Option<UsageRecord>,
    pub last_writer_certificate: Option<Certificate>,
}

impl PurchaseOffer {
    /// SU: what the card signs to answer INITIALIZE PURCHASE.
    #[allow(clippy::too_many_arguments)]
    pub fn signed_message(
        card_id: &CardId,
        terminal_id: &DeviceId,
        challenge_terminal: &Challenge,
        challenge_card: &Challenge,
        balance: Amount,
        counter: u32,
        amount_max: Amount,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(112);
        m.extend_from_slice(b"valuecard/purchase/card/v1");
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(terminal_id.as_bytes());
        m.extend_from_slice(challenge_terminal);
        m.extend_from_slice(challenge_card);
        m.extend_from_slice(&balance.to_be_bytes());
        m.extend_from_slice(&counter.to_be_bytes());
        m.extend_from_slice(&amount_max.to_be_bytes());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(300);
        w.put(tag::CHALLENGE_CARD, &self.challenge_card)
            .put_u64(tag::BALANCE, self.balance.minor())
            .put_u32(tag::COUNTER, self.counter)
            .put(tag::SIGNATURE, &self.signature.0);
        put_last_writer(&mut w, &self.last_usage, &self.last_writer_certificate);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let challenge_card = challenge(&mut r, tag::CHALLENGE_CARD)?;
        let balance = amount(&mut r, tag::BALANCE)?;
        let counter = u32_field(&mut r, tag::COUNTER)?;
        let signature = signature(&mut r)?;
        let (last_usage, last_writer_certificate) = last_writer(&mut r)?;
        let message = PurchaseOffer {
            challenge_card,
            balance,
            counter,
            signature,
            last_usage,
            last_writer_certificate,
        };
        r.finish()?;
        Ok(message)
    }
}

/// The content of a DEBIT: the terminal's ST(R * X * V' * IDU) of Fig. 6 covers all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseCommit {
    pub card_id: CardId,
    pub terminal_id: DeviceId,
    pub challenge_terminal: Challenge,
    pub challenge_card: Challenge,
    /// The card's counter before this update, as the card reported it.
    pub counter: u32,
    pub amount: Amount,
    pub balance_after: Amount,
    pub terminal_sequence: u32,
    pub date: Date,
    /// The terminal's current stamp, which the card keeps with the record.
    pub stamp: TerminalStamp,
}

impl PurchaseCommit {
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(200);
        m.extend_from_slice(b"valuecard/purchase/terminal/v2");
        m.extend_from_slice(self.card_id.as_bytes());
        m.extend_from_slice(self.terminal_id.as_bytes());
        m.extend_from_slice(&self.challenge_terminal);
        m.extend_from_slice(&self.challenge_card);
        m.extend_from_slice(&self.counter.to_be_bytes());
        m.extend_from_slice(&self.amount.to_be_bytes());
        m.extend_from_slice(&self.balance_after.to_be_bytes());
        m.extend_from_slice(&self.terminal_sequence.to_be_bytes());
        m.extend_from_slice(&self.date.0.to_be_bytes());
        self.stamp.extend(&mut m);
        m
    }
}

/// DEBIT command data: only what the card does not already hold from INITIALIZE PURCHASE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitCommand {
    pub amount: Amount,
    pub balance_after: Amount,
    pub terminal_sequence: u32,
    pub stamp: TerminalStamp,
    pub signature: Signature,
}

impl DebitCommand {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(180);
        w.put_u64(tag::AMOUNT, self.amount.minor())
            .put_u64(tag::BALANCE, self.balance_after.minor())
            .put_u32(tag::SEQUENCE, self.terminal_sequence);
        self.stamp.encode_into(&mut w);
        w.put(tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = DebitCommand {
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            terminal_sequence: u32_field(&mut r, tag::SEQUENCE)?,
            stamp: TerminalStamp::decode_optional(&mut r)?.ok_or(DecodeError::Field {
                field: "stamp",
                reason: "a DEBIT carries the terminal's stamp",
            })?,
            signature: signature(&mut r)?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// DEBIT and CREDIT response: the card's counter and balance after the committed update
/// (the "OK" of Fig. 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfirmation {
    pub counter: u32,
    pub balance: Amount,
}

impl UpdateConfirmation {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put_u32(tag::COUNTER, self.counter)
            .put_u64(tag::BALANCE, self.balance.minor());
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = UpdateConfirmation {
            counter: u32_field(&mut r, tag::COUNTER)?,
            balance: amount(&mut r, tag::BALANCE)?,
        };
        r.finish()?;
        Ok(message)
    }
}
