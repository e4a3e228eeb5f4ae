//! The persistent state of the common-key application (seed 004): the card's KC, its
//! version, the certificate of the security server that installed it, and the completion of
//! the last settlement or charge applied, from which a lost PCN is answered again. One TLV
//! encoding inside the purse state (absent until a key is installed).

use valuecard_core::cert::Certificate;
use valuecard_core::crypto::AesKey;
use valuecard_core::messages::online::{Completion, SettlementId};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::tlv::{be_u32, be_u64, TlvReader, TlvWriter};

use crate::state::StateError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineApp {
    /// KC, shared with the security server only.
    pub card_key: AesKey,
    pub key_version: u32,
    /// The security server that installed KC: the writer of this card's online records,
    /// whose certificate the card hands on with them.
    pub server_certificate: Certificate,
    /// The settlement or charge applied last, answered again by GET COMPLETION.
    pub last: Option<Completion>,
}

mod field {
    pub const CARD_KEY: u32 = 0x80;
    pub const KEY_VERSION: u32 = 0x81;
    pub const SETTLEMENT_ID: u32 = 0x82;
    pub const KIND: u32 = 0x83;
    pub const AMOUNT: u32 = 0x84;
    pub const COUNTER: u32 = 0x85;
    pub const BALANCE: u32 = 0x86;
}

fn bad<E>(_: E) -> StateError {
    StateError("online application")
}

impl OnlineApp {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(300);
        w.put(field::CARD_KEY, self.card_key.expose())
            .put_u32(field::KEY_VERSION, self.key_version)
            .put_raw(&self.server_certificate.encode());
        if let Some(last) = &self.last {
            w.put(field::SETTLEMENT_ID, &last.settlement_id)
                .put_u8(field::KIND, last.kind as u8)
                .put_u64(field::AMOUNT, last.amount.minor())
                .put_u32(field::COUNTER, last.counter)
                .put_u64(field::BALANCE, last.balance_after.minor());
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = TlvReader::new(bytes);
        let card_key = AesKey::from_slice(r.expect(field::CARD_KEY).map_err(bad)?).map_err(bad)?;
        let key_version = be_u32(
            field::KEY_VERSION,
            r.expect(field::KEY_VERSION).map_err(bad)?,
        )
        .map_err(bad)?;
        let server_certificate = Certificate::decode_value(
            r.expect(valuecard_core::cert::TAG_CERTIFICATE)
                .map_err(bad)?,
        )
        .map_err(bad)?;
        let last = match r.optional(field::SETTLEMENT_ID).map_err(bad)? {
            None => None,
            Some(id) => {
                let settlement_id = SettlementId::try_from(id).map_err(bad)?;
                let [kind] = r.expect_array::<1>(field::KIND).map_err(bad)?;
                let amount = |r: &mut TlvReader<'_>, tag| -> Result<Amount, StateError> {
                    Amount::new(be_u64(tag, r.expect(tag).map_err(bad)?).map_err(bad)?).map_err(bad)
                };
                Some(Completion {
                    settlement_id,
                    kind: TransactionKind::from_u8(kind).map_err(bad)?,
                    amount: amount(&mut r, field::AMOUNT)?,
                    counter: be_u32(field::COUNTER, r.expect(field::COUNTER).map_err(bad)?)
                        .map_err(bad)?,
                    balance_after: amount(&mut r, field::BALANCE)?,
                })
            }
        };
        r.finish().map_err(bad)?;
        Ok(OnlineApp {
            card_key,
            key_version,
            server_certificate,
            last,
        })
    }
}
