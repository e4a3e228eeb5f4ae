//! Fixed keys, certificates, records, bindings and proofs shared by the transfer message
//! tests.
#![allow(clippy::unwrap_used, dead_code)]

use valuecard_core::cert::{Certificate, CertificateBody, Role};
use valuecard_core::crypto::{AesKey, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::{TerminalStamp, TransactionKind, UsageRecord};
use valuecard_core::messages::transfer::{
    ProofStatus, ProofSubject, RecordSignature, TransferBinding, TransferKey, TransferProof,
    ValueMessage,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

pub const CENTER: DeviceId = DeviceId(*b"CENTER01");
pub const SOURCE: CardId = CardId(*b"CARD0001");
pub const DESTINATION: CardId = CardId(*b"CARD0002");
pub const TODAY: Date = Date(20_600);

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

pub fn key(id: u32, byte: u8) -> TransferKey {
    TransferKey {
        id,
        key: AesKey::from_slice(&[byte; 16]).unwrap(),
    }
}

pub fn certificate(role: Role, subject: [u8; 8], sealing: bool) -> Certificate {
    let root = SigningKeyPair::from_seed(&[0x52; 32]);
    CertificateBody {
        issuer: CENTER,
        subject: DeviceId(subject),
        role,
        effective: TODAY,
        expiry: TODAY.add_days(365),
        signing_key: SigningKeyPair::from_seed(&[subject[7]; 32]).public_key(),
        sealing_key: sealing.then(|| SealingKeyPair::from_secret([subject[7]; 32]).public_key()),
    }
    .sign(&root)
}

pub fn record(kind: TransactionKind, stamp: bool) -> UsageRecord {
    UsageRecord {
        kind,
        counter: 7,
        challenge_writer: [0x11; 16],
        challenge_card: [0x22; 16],
        amount: amount(250),
        balance_after: amount(1_000),
        writer: DeviceId(*b"SETTLE01"),
        writer_sequence: 3,
        date: TODAY,
        signature: SigningKeyPair::from_seed(&[9; 32]).sign(b"record"),
        stamp: stamp.then(|| TerminalStamp {
            count: 4,
            signature: SigningKeyPair::from_seed(&[8; 32]).sign(b"stamp"),
        }),
    }
}

pub fn record_signature(stamp: bool) -> RecordSignature {
    let full = record(TransactionKind::TransferIn, stamp);
    RecordSignature {
        writer_sequence: full.writer_sequence,
        signature: full.signature,
        stamp: full.stamp,
    }
}

pub fn binding() -> TransferBinding {
    TransferBinding {
        key_id: 3,
        source: SOURCE,
        source_counter: 5,
        challenge_source: [0xA1; 16],
        destination: DESTINATION,
        destination_counter: 9,
        challenge_destination: [0xB2; 16],
        challenge_terminal: [0xC3; 16],
        date: TODAY,
    }
}

pub fn value_message() -> ValueMessage {
    ValueMessage::seal(&key(3, 0x33), &binding(), amount(250))
}

pub fn subject(amount_minor: u64) -> ProofSubject {
    ProofSubject {
        source: SOURCE,
        challenge_source: [0xA1; 16],
        destination: DESTINATION,
        amount: amount(amount_minor),
    }
}

pub fn proof(status: ProofStatus) -> TransferProof {
    TransferProof::make(status, &key(3, 0x33), 10, &subject(250))
}
