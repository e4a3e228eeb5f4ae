//! The samples behind the codec tests: one of every protocol message (and of each optional
//! field present and absent), with real keys, signatures and MACs, and the helpers that edit
//! their TLV trees.

mod samples;
mod tree;

pub use samples::*;
pub use tree::*;

use std::sync::OnceLock;

use rand_core::{CryptoRng, CryptoRngCore, OsRng, RngCore};

use valuecard_core::cert::{CertError, Certificate, CertificateBody, Role, TrustAnchor};
use valuecard_core::crypto::{
    aes_cmac, aes_gcm_seal, random_array, sha256, AesKey, PublicKey, SealingKeyPair, Signature,
    SigningKeyPair, GCM_NONCE_LEN,
};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::limits::CARD_LOG_ENTRIES_MAX;
use valuecard_core::messages::purse::{
    CardState, Challenge, CreditCommand, DebitCommand, GenerateKeyPairCommand,
    GenerateKeyPairResponse, GetLastTransaction, InitializeLoad, InitializePurchase,
    LastTransaction, LoadAuthorization, LoadOffer, LogEntry, PersonalizeCommand, PurchaseCommit,
    PurchaseOffer, PurseStatus, SelectResponse, TerminalStamp, TransactionKind, UpdateConfirmation,
    UsageRecord, SEALED_KEYS_PLAINTEXT_LEN,
};
use valuecard_core::messages::DecodeError;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::tlv::{TlvReader, TlvWriter};

pub const CENTER_ID: DeviceId = DeviceId([0xCE, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);
pub const TERMINAL_ID: DeviceId = DeviceId([0x7E, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2A]);
pub const DISPENSER_ID: DeviceId = DeviceId([0xD1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05]);
pub const CARD_ID: CardId = CardId([0xCA, 0x4D, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34]);
pub const TODAY: Date = Date(20_600);

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

// ---------------------------------------------------------------------------------------
// Every decodable message, behind one enum.
// ---------------------------------------------------------------------------------------

/// One decoder of the message set. The position in [`Kind::ALL`] of every kind but
/// `Certificate` is the selector byte of the `purse_messages` fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Select,
    GenerateKeyPairCommand,
    GenerateKeyPairResponse,
    Personalize,
    UsageRecord,
    PurseStatus,
    Log,
    InitializePurchase,
    PurchaseOffer,
    Debit,
    UpdateConfirmation,
    InitializeLoad,
    LoadOffer,
    Credit,
    GetLastTransaction,
    LastTransaction,
    Certificate,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::Select,
        Kind::GenerateKeyPairCommand,
        Kind::GenerateKeyPairResponse,
        Kind::Personalize,
        Kind::UsageRecord,
        Kind::PurseStatus,
        Kind::Log,
        Kind::InitializePurchase,
        Kind::PurchaseOffer,
        Kind::Debit,
        Kind::UpdateConfirmation,
        Kind::InitializeLoad,
        Kind::LoadOffer,
        Kind::Credit,
        Kind::GetLastTransaction,
        Kind::LastTransaction,
        Kind::Certificate,
    ];

    /// The selector byte of the `purse_messages` fuzz target, which covers every kind but
    /// the certificate (that one has a target of its own).
    pub fn fuzz_selector(self) -> Option<u8> {
        if self == Kind::Certificate {
            return None;
        }
        Kind::ALL
            .iter()
            .position(|&kind| kind == self)
            .map(|index| index as u8)
    }

    pub fn decode(self, bytes: &[u8]) -> Result<Message, Refusal> {
        use Refusal::Message as M;
        match self {
            Kind::Select => SelectResponse::decode(bytes)
                .map(Message::Select)
                .map_err(M),
            Kind::GenerateKeyPairCommand => GenerateKeyPairCommand::decode(bytes)
                .map(Message::GenerateKeyPairCommand)
                .map_err(M),
            Kind::GenerateKeyPairResponse => GenerateKeyPairResponse::decode(bytes)
                .map(Message::GenerateKeyPairResponse)
                .map_err(M),
            Kind::Personalize => PersonalizeCommand::decode(bytes)
                .map(Message::Personalize)
                .map_err(M),
            Kind::UsageRecord => UsageRecord::decode(bytes)
                .map(Message::UsageRecord)
                .map_err(M),
            Kind::PurseStatus => PurseStatus::decode(bytes)
                .map(Message::PurseStatus)
                .map_err(M),
            Kind::Log => LogEntry::decode_list(bytes).map(Message::Log).map_err(M),
            Kind::InitializePurchase => InitializePurchase::decode(bytes)
                .map(Message::InitializePurchase)
                .map_err(M),
            Kind::PurchaseOffer => PurchaseOffer::decode(bytes)
                .map(Message::PurchaseOffer)
                .map_err(M),
            Kind::Debit => DebitCommand::decode(bytes).map(Message::Debit).map_err(M),
            Kind::UpdateConfirmation => UpdateConfirmation::decode(bytes)
                .map(Message::UpdateConfirmation)
                .map_err(M),
            Kind::InitializeLoad => InitializeLoad::decode(bytes)
                .map(Message::InitializeLoad)
                .map_err(M),
            Kind::LoadOffer => LoadOffer::decode(bytes).map(Message::LoadOffer).map_err(M),
            Kind::Credit => CreditCommand::decode(bytes).map(Message::Credit).map_err(M),
            Kind::GetLastTransaction => GetLastTransaction::decode(bytes)
                .map(Message::GetLastTransaction)
                .map_err(M),
            Kind::LastTransaction => LastTransaction::decode(bytes)
                .map(Message::LastTransaction)
                .map_err(M),
            Kind::Certificate => Certificate::decode(bytes)
                .map(Message::Certificate)
                .map_err(Refusal::Certificate),
        }
    }
}

// Samples are few and short-lived: their size does not matter, boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Select(SelectResponse),
    GenerateKeyPairCommand(GenerateKeyPairCommand),
    GenerateKeyPairResponse(GenerateKeyPairResponse),
    Personalize(PersonalizeCommand),
    UsageRecord(UsageRecord),
    PurseStatus(PurseStatus),
    Log(Vec<LogEntry>),
    InitializePurchase(InitializePurchase),
    PurchaseOffer(PurchaseOffer),
    Debit(DebitCommand),
    UpdateConfirmation(UpdateConfirmation),
    InitializeLoad(InitializeLoad),
    LoadOffer(LoadOffer),
    Credit(CreditCommand),
    GetLastTransaction(GetLastTransaction),
    LastTransaction(LastTransaction),
    Certificate(Certificate),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Select(_) => Kind::Select,
            Message::GenerateKeyPairCommand(_) => Kind::GenerateKeyPairCommand,
            Message::GenerateKeyPairResponse(_) => Kind::GenerateKeyPairResponse,
            Message::Personalize(_) => Kind::Personalize,
            Message::UsageRecord(_) => Kind::UsageRecord,
            Message::PurseStatus(_) => Kind::PurseStatus,
            Message::Log(_) => Kind::Log,
            Message::InitializePurchase(_) => Kind::InitializePurchase,
            Message::PurchaseOffer(_) => Kind::PurchaseOffer,
            Message::Debit(_) => Kind::Debit,
            Message::UpdateConfirmation(_) => Kind::UpdateConfirmation,
            Message::InitializeLoad(_) => Kind::InitializeLoad,
            Message::LoadOffer(_) => Kind::LoadOffer,
            Message::Credit(_) => Kind::Credit,
            Message::GetLastTransaction(_) => Kind::GetLastTransaction,
            Message::LastTransaction(_) => Kind::LastTransaction,
            Message::Certificate(_) => Kind::Certificate,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Select(m) => m.encode(),
            Message::GenerateKeyPairCommand(m) => m.encode(),
            Message::GenerateKeyPairResponse(m) => m.encode(),
            Message::Personalize(m) => m.encode(),
            Message::UsageRecord(m) => m.encode(),
            Message::PurseStatus(m) => m.encode(),
            Message::Log(entries) => LogEntry::encode_list(entries),
            Message::InitializePurchase(m) => m.encode(),
            Message::PurchaseOffer(m) => m.encode(),
            Message::Debit(m) => m.encode(),
            Message::UpdateConfirmation(m) => m.encode(),
            Message::InitializeLoad(m) => m.encode(),
            Message::LoadOffer(m) => m.encode(),
            Message::Credit(m) => m.encode(),
            Message::GetLastTransaction(m) => m.encode(),
            Message::LastTransaction(m) => m.encode(),
            Message::Certificate(m) => m.encode(),
        }
    }
}

/// Why a decoder refused its input.
#[derive(Debug)]
pub enum Refusal {
    Message(DecodeError),
    Certificate(CertError),
}

// ---------------------------------------------------------------------------------------
// Samples.
// ---------------------------------------------------------------------------------------

pub struct Sample {
    pub name: &'static str,
    pub message: Message,
    /// Valid messages of the same kind whose encodings are strict prefixes of this one's:
    /// the same message without its trailing optional usage record, or a shorter log.
    /// Top-level encodings are TLV sequences, not one enclosing object, so such prefixes
    /// decode; the APDU length fields are what delimit them on the wire.
    pub shorter: Vec<Message>,
}

impl Sample {
    pub fn new(name: &'static str, message: Message) -> Self {
        Sample {
            name,
            message,
            shorter: Vec::new(),
        }
    }

    pub fn with_shorter(mut self, shorter: Message) -> Self {
        self.shorter.push(shorter);
        self
    }
}

/// Records every signature made for a sample, so that a test can check they all verify.
#[derive(Default)]
pub struct SignatureLog {
    pub entries: Vec<(PublicKey, Vec<u8>, Signature)>,
}

impl SignatureLog {
    pub fn sign(&mut self, key: &SigningKeyPair, message: Vec<u8>) -> Signature {
        let signature = key.sign(&message);
        self.entries.push((key.public_key(), message, signature));
        signature
    }
}

pub struct Fixture {
    pub samples: Vec<Sample>,
    pub signatures: Vec<(PublicKey, Vec<u8>, Signature)>,
    pub anchor: TrustAnchor,
    pub certificates: Vec<(Certificate, Role)>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| build_fixture(OsRng))
}

pub fn log_entries(count: usize) -> Vec<LogEntry> {
    // Every third entry a load at the dispenser, the others purchases at the terminal.
    let parties = [
        (TransactionKind::Load, DISPENSER_ID),
        (TransactionKind::Purchase, TERMINAL_ID),
        (TransactionKind::Purchase, TERMINAL_ID),
    ];
    (0..count)
        .map(|i| {
            let (kind, party) = parties[i % parties.len()];
            let i = i as u32;
            LogEntry {
                kind,
                counter: 100 - i,
                amount: amount(100 + 37 * u64::from(i)),
                balance_after: amount(90_000 - 1_000 * u64::from(i)),
                party,
                date: Date(TODAY.0 - i),
            }
        })
        .collect()
}
