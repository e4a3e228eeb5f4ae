//! The load exchanges of Fig. 7: INITIALIZE LOAD and its signed offer, the center's signed
//! authorization, and CREDIT.

use super::*;

/// INITIALIZE LOAD command data (Fig. 7): the dispenser's challenge Y, the amount V to add,
/// and the dispenser ID IDC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeLoad {
    pub challenge_dispenser: Challenge,
    pub amount: Amount,
    pub dispenser_id: DeviceId,
}

impl InitializeLoad {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(48);
        w.put(tag::CHALLENGE_TERMINAL, &self.challenge_dispenser)
            .put_u64(tag::AMOUNT, self.amount.minor())
            .put(tag::DEVICE_ID, self.dispenser_id.as_bytes());
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = InitializeLoad {
            challenge_dispenser: challenge(&mut r, tag::CHALLENGE_TERMINAL)?,
            amount: amount(&mut r, tag::AMOUNT)?,
            dispenser_id: DeviceId(r.expect_array(tag::DEVICE_ID)?),
        };
        r.finish()?;
        Ok(message)
    }
}

/// INITIALIZE LOAD response: X, the current balance and counter, SU(Y * X * V), and, as in
/// a purchase, the card's last usage record with the certificate of the terminal that wrote
/// it. The record is the writer's signed word for the balance the card claims: the center
/// refuses to add value to a balance that no writer signed (a card whose image was edited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOffer {
    pub challenge_card: Challenge,
    pub balance: Amount,
    pub counter: u32,
    pub signature: Signature,
    pub last_usage: Option<UsageRecord>,
    pub last_writer_certificate: Option<Certificate>,
}

impl LoadOffer {
    pub fn signed_message(
        card_id: &CardId,
        request: &InitializeLoad,
        challenge_card: &Challenge,
        balance: Amount,
        counter: u32,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(100);
        m.extend_from_slice(b"valuecard/load/card/v1");
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(request.dispenser_id.as_bytes());
        m.extend_from_slice(&request.challenge_dispenser);
        m.extend_from_slice(challenge_card);
        m.extend_from_slice(&request.amount.to_be_bytes());
        m.extend_from_slice(&balance.to_be_bytes());
        m.extend_from_slice(&counter.to_be_bytes());
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
        let message = LoadOffer {
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

/// The center's load authorization SA(Y * X * V * IDU) of Fig. 7, which the card verifies
/// with the root key before it adds value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadAuthorization {
    pub card_id: CardId,
    pub dispenser_id: DeviceId,
    pub challenge_dispenser: Challenge,
    pub challenge_card: Challenge,
    /// The card's counter before this load.
    pub counter: u32,
    pub amount: Amount,
    pub balance_after: Amount,
    /// The center's number for this load, unique per center.
    pub load_number: u32,
    /// The center's date, which the card adopts as its notion of today.
    pub date: Date,
}

impl LoadAuthorization {
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(b"valuecard/load/center/v1");
        m.extend_from_slice(self.card_id.as_bytes());
        m.extend_from_slice(self.dispenser_id.as_bytes());
        m.extend_from_slice(&self.challenge_dispenser);
        m.extend_from_slice(&self.challenge_card);
        m.extend_from_slice(&self.counter.to_be_bytes());
        m.extend_from_slice(&self.amount.to_be_bytes());
        m.extend_from_slice(&self.balance_after.to_be_bytes());
        m.extend_from_slice(&self.load_number.to_be_bytes());
        m.extend_from_slice(&self.date.0.to_be_bytes());
        m
    }
}

/// CREDIT command data: the center's signature and a MAC under the card key KU (Fig. 8,
/// last paragraph: the center derives KU from IDU and uses it for loads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditCommand {
    pub amount: Amount,
    pub balance_after: Amount,
    pub load_number: u32,
    pub date: Date,
    pub signature: Signature,
    pub mac: [u8; MAC_LEN],
    /// The center's newest transfer keys for the card (seed 000), sealed under KU for this
    /// load (`TransferKeySet::seal_for_load`); absent when the center sends none.
    pub transfer_keys: Option<Vec<u8>>,
}

impl CreditCommand {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(140);
        w.put_u64(tag::AMOUNT, self.amount.minor())
            .put_u64(tag::BALANCE, self.balance_after.minor())
            .put_u32(tag::SEQUENCE, self.load_number)
            .put_u32(tag::DATE, self.date.0)
            .put(tag::SIGNATURE, &self.signature.0)
            .put(tag::MAC, &self.mac);
        if let Some(sealed) = &self.transfer_keys {
            w.put(crate::messages::transfer::tag::TRANSFER_KEYS, sealed);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = CreditCommand {
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            load_number: u32_field(&mut r, tag::SEQUENCE)?,
            date: Date(u32_field(&mut r, tag::DATE)?),
            signature: signature(&mut r)?,
            mac: r.expect_array(tag::MAC)?,
            transfer_keys: r
                .optional(crate::messages::transfer::tag::TRANSFER_KEYS)?
                .map(<[u8]>::to_vec),
        };
        r.finish()?;
        Ok(message)
    }
}
