//! Command and response data of the online application, each with one encoder and one
//! decoder. Decoders refuse trailing bytes, unknown tags and out-of-range values.

use crate::cert::Certificate;
use crate::crypto::{Signature, SIGNATURE_LEN};
use crate::ids::{CardId, DeviceId};
use crate::messages::field::{amount, date, u32_field};
use crate::messages::purse::{Challenge, TransactionKind, UsageRecord};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{be_u32, TlvReader, TlvWriter};

use super::{tag, SettlementId, CRYPTOGRAM_LEN, ONLINE_AID};

fn online_kind(r: &mut TlvReader<'_>) -> Result<TransactionKind, DecodeError> {
    let [kind] = r.expect_array::<1>(tag::KIND)?;
    match TransactionKind::from_u8(kind)? {
        kind @ (TransactionKind::OnlinePayment | TransactionKind::OnlineCharge) => Ok(kind),
        _ => Err(DecodeError::Field {
            field: "kind",
            reason: "not an online transaction kind",
        }),
    }
}

/// The FCI of SELECT on the online application: the card ID (which the security server
/// needs to derive KC) and the version of KC, absent until a key is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineFci {
    pub card_id: CardId,
    pub key_version: Option<u32>,
}

impl OnlineFci {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(40);
        w.nested(tag::FCI, |fci| {
            fci.put(tag::DF_NAME, &ONLINE_AID)
                .nested(tag::FCI_PROPRIETARY, |p| {
                    p.put(tag::CARD_ID, self.card_id.as_bytes());
                    if let Some(version) = self.key_version {
                        p.put_u32(tag::KEY_VERSION, version);
                    }
                });
        });
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = TlvReader::new(bytes);
        let mut fci = TlvReader::new(outer.expect(tag::FCI)?);
        outer.finish()?;
        if fci.expect(tag::DF_NAME)? != ONLINE_AID {
            return Err(DecodeError::Field {
                field: "DF name",
                reason: "not the online application",
            });
        }
        let mut p = TlvReader::new(fci.expect(tag::FCI_PROPRIETARY)?);
        fci.finish()?;
        let card_id = CardId(p.expect_array(tag::CARD_ID)?);
        let key_version = p
            .optional(tag::KEY_VERSION)?
            .map(|value| be_u32(tag::KEY_VERSION, value))
            .transpose()?;
        p.finish()?;
        Ok(OnlineFci {
            card_id,
            key_version,
        })
    }
}

/// INSTALL KEY: KC sealed to the card's X25519 key by a security server whose certificate
/// the center issued, and signed by it, so that the card takes a key only from a certified
/// security server and only for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInstallation {
    pub server_certificate: Certificate,
    pub key_version: u32,
    /// KC sealed to the card (`crypto::seal_to`, associated data [`Self::seal_context`]).
    pub sealed_key: Vec<u8>,
    /// The security server's signature over [`Self::signed_message`].
    pub signature: Signature,
}

impl KeyInstallation {
    /// The associated data of the sealed key: bound to the card and the version.
    pub fn seal_context(card_id: &CardId, key_version: u32) -> Vec<u8> {
        let mut aad = b"valuecard/online/key/v1".to_vec();
        aad.extend_from_slice(card_id.as_bytes());
        aad.extend_from_slice(&key_version.to_be_bytes());
        aad
    }

    /// What the security server signs.
    pub fn signed_message(card_id: &CardId, key_version: u32, sealed_key: &[u8]) -> Vec<u8> {
        let mut m = b"valuecard/online/install/v1".to_vec();
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(&key_version.to_be_bytes());
        m.extend_from_slice(sealed_key);
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(400);
        w.put_raw(&self.server_certificate.encode())
            .put_u32(tag::KEY_VERSION, self.key_version)
            .put(tag::SEALED_KEY, &self.sealed_key)
            .put(tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let server_certificate = Certificate::decode_value(r.expect(tag::CERTIFICATE)?)?;
        let key_version = u32_field(&mut r, tag::KEY_VERSION)?;
        let sealed_key = r.expect(tag::SEALED_KEY)?.to_vec();
        let signature = Signature(r.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?);
        r.finish()?;
        Ok(KeyInstallation {
            server_certificate,
            key_version,
            sealed_key,
            signature,
        })
    }
}

/// INITIALIZE UPDATE command data: the server's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeUpdate {
    pub host_challenge: Challenge,
}

impl InitializeUpdate {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(20);
        w.put(tag::CHALLENGE_HOST, &self.host_challenge);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let host_challenge = r.expect_array(tag::CHALLENGE_HOST)?;
        r.finish()?;
        Ok(InitializeUpdate { host_challenge })
    }
}

/// INITIALIZE UPDATE response: the card's challenge, its cryptogram and KC's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeUpdateResponse {
    pub card_challenge: Challenge,
    pub card_cryptogram: [u8; CRYPTOGRAM_LEN],
    pub key_version: u32,
}

impl InitializeUpdateResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(40);
        w.put(tag::CHALLENGE_CARD, &self.card_challenge)
            .put(tag::CRYPTOGRAM, &self.card_cryptogram)
            .put_u32(tag::KEY_VERSION, self.key_version);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let response = InitializeUpdateResponse {
            card_challenge: r.expect_array(tag::CHALLENGE_CARD)?,
            card_cryptogram: r.expect_array(tag::CRYPTOGRAM)?,
            key_version: u32_field(&mut r, tag::KEY_VERSION)?,
        };
        r.finish()?;
        Ok(response)
    }
}

/// EXTERNAL AUTHENTICATE command data: the server's cryptogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAuthenticate {
    pub host_cryptogram: [u8; CRYPTOGRAM_LEN],
}

impl ExternalAuthenticate {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(12);
        w.put(tag::CRYPTOGRAM, &self.host_cryptogram);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let host_cryptogram = r.expect_array(tag::CRYPTOGRAM)?;
        r.finish()?;
        Ok(ExternalAuthenticate { host_cryptogram })
    }
}

/// BRC, the balance readout request (plaintext of READ BALANCE's secured data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceReadout {
    pub settlement_id: SettlementId,
}

impl BalanceReadout {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(20);
        w.put(tag::SETTLEMENT_ID, &self.settlement_id);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let settlement_id = r.expect_array(tag::SETTLEMENT_ID)?;
        r.finish()?;
        Ok(BalanceReadout { settlement_id })
    }
}

/// BI, the balance information (plaintext of READ BALANCE's secured response): what the
/// security server builds the SPC from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceInfo {
    pub card_id: CardId,
    pub settlement_id: SettlementId,
    pub balance: Amount,
    /// The balance less value reserved by a card-to-card transfer not yet settled.
    pub spendable: Amount,
    pub counter: u32,
    /// The latest date the card holds from an authenticated source.
    pub date: Date,
    /// The settlement the card applied last, if any.
    pub last_settlement: Option<SettlementId>,
    /// The card's last usage record (whoever wrote it): the security server hands it to the
    /// center with the online record that follows it, so the center can check the chain.
    pub last_usage: Option<UsageRecord>,
}

impl BalanceInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(80);
        w.put(tag::CARD_ID, self.card_id.as_bytes())
            .put(tag::SETTLEMENT_ID, &self.settlement_id)
            .put_u64(tag::BALANCE, self.balance.minor())
            .put_u64(tag::SPENDABLE, self.spendable.minor())
            .put_u32(tag::COUNTER, self.counter)
            .put_u32(tag::DATE, self.date.0);
        if let Some(last) = &self.last_settlement {
            w.put(tag::LAST_SETTLEMENT, last);
        }
        if let Some(record) = &self.last_usage {
            record.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let info = BalanceInfo {
            card_id: CardId(r.expect_array(tag::CARD_ID)?),
            settlement_id: r.expect_array(tag::SETTLEMENT_ID)?,
            balance: amount(&mut r, tag::BALANCE)?,
            spendable: amount(&mut r, tag::SPENDABLE)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            date: date(&mut r, tag::DATE)?,
            last_settlement: r
                .optional(tag::LAST_SETTLEMENT)?
                .map(<SettlementId>::try_from)
                .transpose()
                .map_err(|_| DecodeError::Field {
                    field: "last settlement",
                    reason: "wrong length",
                })?,
            last_usage: r
                .optional(tag::LAST_USAGE)?
                .map(UsageRecord::decode_value)
                .transpose()?,
        };
        r.finish()?;
        if info.spendable > info.balance {
            return Err(DecodeError::Field {
                field: "spendable",
                reason: "above the balance",
            });
        }
        if info.last_usage.as_ref().is_some_and(|record| {
            record.counter != info.counter || record.balance_after != info.balance
        }) {
            return Err(DecodeError::Field {
                field: "last usage",
                reason: "does not describe the balance and counter",
            });
        }
        Ok(info)
    }
}

/// SPC (settlement processing request, ST14) or value update (charge, Figs. 24-32): the
/// plaintext of SETTLE's or CHARGE's secured data. It carries the log writing information
/// (`party`, `date`) and the subtraction or addition, bound to the counter the card held
/// in BI, and the security server's signature over the usage record the card will keep
/// ([`super::OnlineRecord`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceUpdate {
    pub settlement_id: SettlementId,
    /// `OnlinePayment` (SPC) or `OnlineCharge` (value update).
    pub kind: TransactionKind,
    pub amount: Amount,
    /// The card's counter before the update, as BI gave it.
    pub counter: u32,
    pub balance_after: Amount,
    pub date: Date,
    /// The store paid (a payment) or the security server (a charge): the card's log entry.
    pub party: DeviceId,
    /// The security server that signed the record.
    pub writer: DeviceId,
    pub writer_sequence: u32,
    /// The security server's signature over the record (SIG of [`super::OnlineRecord`]).
    pub signature: Signature,
}

impl BalanceUpdate {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(180);
        w.put(tag::SETTLEMENT_ID, &self.settlement_id)
            .put_u8(tag::KIND, self.kind as u8)
            .put_u64(tag::AMOUNT, self.amount.minor())
            .put_u32(tag::COUNTER, self.counter)
            .put_u64(tag::BALANCE, self.balance_after.minor())
            .put_u32(tag::DATE, self.date.0)
            .put(tag::PARTY, self.party.as_bytes())
            .put(tag::WRITER, self.writer.as_bytes())
            .put_u32(tag::WRITER_SEQUENCE, self.writer_sequence)
            .put(tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let update = BalanceUpdate {
            settlement_id: r.expect_array(tag::SETTLEMENT_ID)?,
            kind: online_kind(&mut r)?,
            amount: amount(&mut r, tag::AMOUNT)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            date: date(&mut r, tag::DATE)?,
            party: DeviceId(r.expect_array(tag::PARTY)?),
            writer: DeviceId(r.expect_array(tag::WRITER)?),
            writer_sequence: u32_field(&mut r, tag::WRITER_SEQUENCE)?,
            signature: Signature(r.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?),
        };
        r.finish()?;
        if update.amount == Amount::ZERO {
            return Err(DecodeError::Field {
                field: "amount",
                reason: "zero",
            });
        }
        Ok(update)
    }
}

/// PCN (processing completion notice, ST18) or a charge's completion: what the card did,
/// under KSES, for the security server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub settlement_id: SettlementId,
    pub kind: TransactionKind,
    pub amount: Amount,
    /// The card's counter after the update.
    pub counter: u32,
    pub balance_after: Amount,
}

impl Completion {
    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.put(tag::SETTLEMENT_ID, &self.settlement_id)
            .put_u8(tag::KIND, self.kind as u8)
            .put_u64(tag::AMOUNT, self.amount.minor())
            .put_u32(tag::COUNTER, self.counter)
            .put_u64(tag::BALANCE, self.balance_after.minor());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(60);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        Ok(Completion {
            settlement_id: r.expect_array(tag::SETTLEMENT_ID)?,
            kind: online_kind(r)?,
            amount: amount(r, tag::AMOUNT)?,
            counter: u32_field(r, tag::COUNTER)?,
            balance_after: amount(r, tag::BALANCE)?,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let completion = Completion::decode_from(&mut r)?;
        r.finish()?;
        Ok(completion)
    }
}

/// GET COMPLETION's secured data: which settlement the server asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionQuery {
    pub settlement_id: SettlementId,
}

impl CompletionQuery {
    pub fn encode(&self) -> Vec<u8> {
        BalanceReadout {
            settlement_id: self.settlement_id,
        }
        .encode()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        BalanceReadout::decode(bytes).map(|readout| CompletionQuery {
            settlement_id: readout.settlement_id,
        })
    }
}

/// GET COMPLETION's secured answer: the completion if the card applied that settlement
/// last, and the card's counter and balance now. A settlement not applied, asked in a new
/// session, can never be applied any more (its SPC was sealed under a session that
/// ended), so the server may void it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionStatus {
    pub settlement_id: SettlementId,
    pub applied: Option<Completion>,
    pub counter: u32,
    pub balance: Amount,
}

impl CompletionStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(100);
        w.put(tag::SETTLEMENT_ID, &self.settlement_id);
        if let Some(completion) = &self.applied {
            w.nested(tag::COMPLETION, |c| completion.encode_into(c));
        }
        w.put_u32(tag::COUNTER, self.counter)
            .put_u64(tag::BALANCE, self.balance.minor());
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let settlement_id = r.expect_array(tag::SETTLEMENT_ID)?;
        let applied = r
            .optional(tag::COMPLETION)?
            .map(Completion::decode)
            .transpose()?;
        let status = CompletionStatus {
            settlement_id,
            applied,
            counter: u32_field(&mut r, tag::COUNTER)?,
            balance: amount(&mut r, tag::BALANCE)?,
        };
        r.finish()?;
        if status
            .applied
            .as_ref()
            .is_some_and(|completion| completion.settlement_id != status.settlement_id)
        {
            return Err(DecodeError::Field {
                field: "completion",
                reason: "for another settlement",
            });
        }
        Ok(status)
    }
}

/// PREVIEW's answer, in the clear for the holder's screen (ST109): what an SPC would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementPreview {
    pub settlement_id: SettlementId,
    pub kind: TransactionKind,
    pub amount: Amount,
    pub balance_before: Amount,
    pub balance_after: Amount,
    pub party: DeviceId,
    pub date: Date,
}

impl SettlementPreview {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(80);
        w.put(tag::SETTLEMENT_ID, &self.settlement_id)
            .put_u8(tag::KIND, self.kind as u8)
            .put_u64(tag::AMOUNT, self.amount.minor())
            .put_u64(tag::BALANCE_BEFORE, self.balance_before.minor())
            .put_u64(tag::BALANCE, self.balance_after.minor())
            .put(tag::PARTY, self.party.as_bytes())
            .put_u32(tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let preview = SettlementPreview {
            settlement_id: r.expect_array(tag::SETTLEMENT_ID)?,
            kind: online_kind(&mut r)?,
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_before: amount(&mut r, tag::BALANCE_BEFORE)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            party: DeviceId(r.expect_array(tag::PARTY)?),
            date: date(&mut r, tag::DATE)?,
        };
        r.finish()?;
        Ok(preview)
    }
}
