//! Codec tests for every protocol message and the certificate: one sample of each message
//! (and of each optional field present and absent), then the same properties checked over
//! all of them: exact round trip, refusal of truncations, trailing bytes, out-of-range
//! amounts and unknown enumerations, and decoders that never panic.
//!
//! Samples carry real Ed25519 keys, real signatures and real MACs, so a decoder that only
//! accepted well-formed cryptographic material would still be exercised.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use proptest::prelude::*;
use rand_core::{CryptoRng, CryptoRngCore, OsRng, RngCore};

use valuecard_core::apdu::{Command, Response};
use valuecard_core::cert::{CertError, Certificate, CertificateBody, Role, TrustAnchor};
use valuecard_core::crypto::{
    aes_cmac, aes_gcm_seal, random_array, sha256, AesKey, PublicKey, SealingKeyPair, Signature,
    SigningKeyPair, GCM_NONCE_LEN,
};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::limits::{BALANCE_MAX_MINOR, CARD_LOG_ENTRIES_MAX, CHALLENGE_LEN};
use valuecard_core::messages::purse::{
    ins, tag, CardState, Challenge, CreditCommand, DebitCommand, GenerateKeyPairCommand,
    GenerateKeyPairResponse, GetLastTransaction, InitializeLoad, InitializePurchase,
    LastTransaction, LoadAuthorization, LoadOffer, LogEntry, PersonalizeCommand, PurchaseCommit,
    PurchaseOffer, PurseStatus, SelectResponse, TerminalStamp, TransactionKind, UpdateConfirmation,
    UsageRecord, CLA_ISO, CLA_PROPRIETARY, PURSE_AID, SEALED_KEYS_PLAINTEXT_LEN,
};
use valuecard_core::messages::DecodeError;
use valuecard_core::money::{Amount, AmountError};
use valuecard_core::sw::StatusWord;
use valuecard_core::time::Date;
use valuecard_core::tlv::{TlvReader, TlvWriter};

const CENTER_ID: DeviceId = DeviceId([0xCE, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);
const TERMINAL_ID: DeviceId = DeviceId([0x7E, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2A]);
const DISPENSER_ID: DeviceId = DeviceId([0xD1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05]);
const CARD_ID: CardId = CardId([0xCA, 0x4D, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34]);
const TODAY: Date = Date(20_600);

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

// ---------------------------------------------------------------------------------------
// Every decodable message, behind one enum.
// ---------------------------------------------------------------------------------------

/// One decoder of the message set. The position in [`Kind::ALL`] of every kind but
/// `Certificate` is the selector byte of the `purse_messages` fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
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
    const ALL: [Kind; 17] = [
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
    fn fuzz_selector(self) -> Option<u8> {
        if self == Kind::Certificate {
            return None;
        }
        Kind::ALL
            .iter()
            .position(|&kind| kind == self)
            .map(|index| index as u8)
    }

    fn decode(self, bytes: &[u8]) -> Result<Message, Refusal> {
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
enum Message {
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
    fn kind(&self) -> Kind {
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

    fn encode(&self) -> Vec<u8> {
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
enum Refusal {
    Message(DecodeError),
    Certificate(CertError),
}

// ---------------------------------------------------------------------------------------
// Samples.
// ---------------------------------------------------------------------------------------

struct Sample {
    name: &'static str,
    message: Message,
    /// Valid messages of the same kind whose encodings are strict prefixes of this one's:
    /// the same message without its trailing optional usage record, or a shorter log.
    /// Top-level encodings are TLV sequences, not one enclosing object, so such prefixes
    /// decode; the APDU length fields are what delimit them on the wire.
    shorter: Vec<Message>,
}

impl Sample {
    fn new(name: &'static str, message: Message) -> Self {
        Sample {
            name,
            message,
            shorter: Vec::new(),
        }
    }

    fn with_shorter(mut self, shorter: Message) -> Self {
        self.shorter.push(shorter);
        self
    }
}

/// Records every signature made for a sample, so that a test can check they all verify.
#[derive(Default)]
struct SignatureLog {
    entries: Vec<(PublicKey, Vec<u8>, Signature)>,
}

impl SignatureLog {
    fn sign(&mut self, key: &SigningKeyPair, message: Vec<u8>) -> Signature {
        let signature = key.sign(&message);
        self.entries.push((key.public_key(), message, signature));
        signature
    }
}

struct Fixture {
    samples: Vec<Sample>,
    signatures: Vec<(PublicKey, Vec<u8>, Signature)>,
    anchor: TrustAnchor,
    certificates: Vec<(Certificate, Role)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| build_fixture(OsRng))
}

fn log_entries(count: usize) -> Vec<LogEntry> {
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

/// A reproducible generator (SHA-256 in counter mode), used only to write the fuzz seeds so
/// that rewriting them gives the same files. The tests draw their keys from `OsRng`.
struct SeedRng {
    counter: u64,
    pending: Vec<u8>,
}

impl SeedRng {
    fn new() -> Self {
        SeedRng {
            counter: 0,
            pending: Vec::new(),
        }
    }
}

impl RngCore for SeedRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.pending.is_empty() {
                let mut block = b"valuecard fuzz seeds".to_vec();
                block.extend_from_slice(&self.counter.to_be_bytes());
                self.pending = sha256(&block).to_vec();
                self.counter += 1;
            }
            *byte = self.pending.remove(0);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for SeedRng {}

fn build_fixture(mut rng: impl CryptoRngCore) -> Fixture {
    let root_key = SigningKeyPair::generate(&mut rng);
    let terminal_key = SigningKeyPair::generate(&mut rng);
    let card_key = SigningKeyPair::generate(&mut rng);
    let card_sealing = SealingKeyPair::generate(&mut rng);
    let transport_key = AesKey::random(&mut rng);
    let anchor = TrustAnchor {
        center: CENTER_ID,
        public_key: root_key.public_key(),
    };
    let mut log = SignatureLog::default();

    let card_certificate = CertificateBody {
        issuer: CENTER_ID,
        subject: DeviceId(CARD_ID.0),
        role: Role::Card,
        effective: Date(TODAY.0 - 10),
        expiry: Date(TODAY.0 + 3_650),
        signing_key: card_key.public_key(),
        sealing_key: Some(card_sealing.public_key()),
    }
    .sign(&root_key);
    let terminal_certificate = CertificateBody {
        issuer: CENTER_ID,
        subject: TERMINAL_ID,
        role: Role::PaymentTerminal,
        effective: Date(TODAY.0 - 400),
        expiry: Date(TODAY.0 + 1_000),
        signing_key: terminal_key.public_key(),
        sealing_key: None,
    }
    .sign(&root_key);

    // Personalization (Figs. 4B and 8).
    let card_challenge: Challenge = random_array(&mut rng);
    let generate_key_pair_command = GenerateKeyPairCommand {
        card_id: CARD_ID,
        mac: aes_cmac(
            &transport_key,
            &GenerateKeyPairCommand::mac_input(&card_challenge, &CARD_ID),
        ),
    };
    let generate_key_pair_response = GenerateKeyPairResponse {
        signing_key: card_key.public_key(),
        sealing_key: card_sealing.public_key(),
    };
    let session_key = AesKey::random(&mut rng);
    let card_keys: [u8; SEALED_KEYS_PLAINTEXT_LEN] = random_array(&mut rng);
    let mut personalize = PersonalizeCommand {
        certificate: card_certificate.clone(),
        anchor,
        dispenser_id: DISPENSER_ID,
        date: TODAY,
        sealed_keys: aes_gcm_seal(
            &session_key,
            &[0u8; GCM_NONCE_LEN],
            &PersonalizeCommand::sealed_keys_aad(&CARD_ID),
            &card_keys,
        ),
        mac: [0; 16],
    };
    personalize.mac = aes_cmac(
        &transport_key,
        &PersonalizeCommand::mac_input(&card_challenge, &personalize.encode_unmacced()),
    );

    // A purchase (Fig. 6): balance 500.00, at most 20.00, debit 12.50, counter 7 -> 8.
    let challenge_terminal: Challenge = random_array(&mut rng);
    let challenge_card: Challenge = random_array(&mut rng);
    let balance = amount(50_000);
    let amount_max = amount(2_000);
    let debit_amount = amount(1_250);
    let after_purchase = amount(48_750);
    let initialize_purchase = InitializePurchase {
        terminal_certificate: terminal_certificate.clone(),
        challenge_terminal,
        amount_max,
        date: TODAY,
    };
    let offer_signature = log.sign(
        &card_key,
        PurchaseOffer::signed_message(
            &CARD_ID,
            &TERMINAL_ID,
            &challenge_terminal,
            &challenge_card,
            balance,
            7,
            amount_max,
        ),
    );
    let first_stamp: [u8; 32] = random_array(&mut rng);
    let stamp = TerminalStamp {
        count: 3,
        signature: log.sign(
            &terminal_key,
            TerminalStamp::signed_message(
                &TERMINAL_ID,
                3,
                &TerminalStamp::at(&first_stamp, 3).unwrap(),
            ),
        ),
    };
    let commit = PurchaseCommit {
        card_id: CARD_ID,
        terminal_id: TERMINAL_ID,
        challenge_terminal,
        challenge_card,
        counter: 7,
        amount: debit_amount,
        balance_after: after_purchase,
        terminal_sequence: 41,
        date: TODAY,
        stamp,
    };
    let debit = DebitCommand {
        amount: debit_amount,
        balance_after: after_purchase,
        terminal_sequence: 41,
        stamp,
        signature: log.sign(&terminal_key, commit.signed_message()),
    };
    let mut purchase_record = UsageRecord {
        kind: TransactionKind::Purchase,
        counter: 8,
        challenge_writer: challenge_terminal,
        challenge_card,
        amount: debit_amount,
        balance_after: after_purchase,
        writer: TERMINAL_ID,
        writer_sequence: 41,
        date: TODAY,
        signature: Signature([0; 64]),
        stamp: Some(stamp),
    };
    purchase_record.signature = log.sign(&terminal_key, purchase_record.signed_message(&CARD_ID));

    // A load (Fig. 7): 100.00 onto 487.50, counter 8 -> 9.
    let challenge_dispenser: Challenge = random_array(&mut rng);
    let load_card_challenge: Challenge = random_array(&mut rng);
    let load_amount = amount(10_000);
    let after_load = amount(58_750);
    let initialize_load = InitializeLoad {
        challenge_dispenser,
        amount: load_amount,
        dispenser_id: DISPENSER_ID,
    };
    let load_offer = LoadOffer {
        challenge_card: load_card_challenge,
        balance: after_purchase,
        counter: 8,
        signature: log.sign(
            &card_key,
            LoadOffer::signed_message(
                &CARD_ID,
                &initialize_load,
                &load_card_challenge,
                after_purchase,
                8,
            ),
        ),
        last_usage: Some(purchase_record.clone()),
        last_writer_certificate: Some(terminal_certificate.clone()),
    };
    let authorization = LoadAuthorization {
        card_id: CARD_ID,
        dispenser_id: DISPENSER_ID,
        challenge_dispenser,
        challenge_card: load_card_challenge,
        counter: 8,
        amount: load_amount,
        balance_after: after_load,
        load_number: 1_001,
        date: TODAY,
    };
    let credit_signature = log.sign(&root_key, authorization.signed_message());
    let credit_mac = aes_cmac(&AesKey::random(&mut rng), &authorization.signed_message());
    let credit = CreditCommand {
        amount: load_amount,
        balance_after: after_load,
        load_number: 1_001,
        date: TODAY,
        signature: credit_signature,
        mac: credit_mac,
        transfer_keys: None,
    };
    let mut load_record = UsageRecord {
        kind: TransactionKind::Load,
        counter: 9,
        challenge_writer: challenge_dispenser,
        challenge_card: load_card_challenge,
        amount: load_amount,
        balance_after: after_load,
        writer: DISPENSER_ID,
        writer_sequence: 1_001,
        date: TODAY,
        signature: Signature([0; 64]),
        stamp: None,
    };
    load_record.signature = log.sign(&root_key, load_record.signed_message(&CARD_ID));

    // An offer made between the purchase and the load carries the purchase as the previous
    // usage, with the certificate of the terminal that wrote it (Fig. 9).
    let between_challenge_terminal: Challenge = random_array(&mut rng);
    let between_challenge_card: Challenge = random_array(&mut rng);
    let between_offer_signature = log.sign(
        &card_key,
        PurchaseOffer::signed_message(
            &CARD_ID,
            &TERMINAL_ID,
            &between_challenge_terminal,
            &between_challenge_card,
            after_purchase,
            8,
            amount_max,
        ),
    );

    // The second purchase's offer carries the load as the previous usage; the center wrote
    // it, so no writer certificate comes with it.
    let second_challenge_terminal: Challenge = random_array(&mut rng);
    let second_challenge_card: Challenge = random_array(&mut rng);
    let second_offer_signature = log.sign(
        &card_key,
        PurchaseOffer::signed_message(
            &CARD_ID,
            &TERMINAL_ID,
            &second_challenge_terminal,
            &second_challenge_card,
            after_load,
            9,
            amount_max,
        ),
    );

    let get_last_transaction = GetLastTransaction {
        challenge: random_array(&mut rng),
    };
    let last_purchase = LastTransaction {
        record: purchase_record.clone(),
        signature: log.sign(
            &card_key,
            LastTransaction::signed_message(
                &CARD_ID,
                &get_last_transaction.challenge,
                &purchase_record,
            ),
        ),
    };
    let last_load = LastTransaction {
        record: load_record.clone(),
        signature: log.sign(
            &card_key,
            LastTransaction::signed_message(
                &CARD_ID,
                &get_last_transaction.challenge,
                &load_record,
            ),
        ),
    };

    let purse_status_fresh = PurseStatus {
        state: CardState::Active,
        card_id: CARD_ID,
        balance: Amount::ZERO,
        counter: 0,
        abnormal_events: 0,
        last_usage: None,
    };
    let purse_status_after_purchase = PurseStatus {
        state: CardState::Active,
        card_id: CARD_ID,
        balance: after_purchase,
        counter: 8,
        abnormal_events: 0,
        last_usage: Some(purchase_record.clone()),
    };
    let purse_status_blocked = PurseStatus {
        state: CardState::Blocked,
        card_id: CARD_ID,
        balance: Amount::MAX,
        counter: u32::MAX,
        abnormal_events: u8::MAX,
        last_usage: Some(load_record.clone()),
    };
    let first_offer = PurchaseOffer {
        challenge_card,
        balance,
        counter: 7,
        signature: offer_signature,
        last_usage: None,
        last_writer_certificate: None,
    };
    let between_offer = PurchaseOffer {
        challenge_card: between_challenge_card,
        balance: after_purchase,
        counter: 8,
        signature: between_offer_signature,
        last_usage: Some(purchase_record.clone()),
        last_writer_certificate: Some(terminal_certificate.clone()),
    };
    let second_offer = PurchaseOffer {
        challenge_card: second_challenge_card,
        balance: after_load,
        counter: 9,
        signature: second_offer_signature,
        last_usage: Some(load_record.clone()),
        last_writer_certificate: None,
    };

    let mut samples = vec![
        Sample::new(
            "select_manufactured",
            Message::Select(SelectResponse {
                state: CardState::Manufactured,
                card_id: None,
                chip_serial: Some([0xC5, 1, 2, 3, 4, 5, 6, 7]),
                certificate: None,
                transfer: None,
            }),
        ),
        Sample::new(
            "select_keys_generated",
            Message::Select(SelectResponse {
                state: CardState::KeysGenerated,
                card_id: Some(CARD_ID),
                chip_serial: Some([0xC5, 1, 2, 3, 4, 5, 6, 7]),
                certificate: None,
                transfer: None,
            }),
        ),
        Sample::new(
            "select_active",
            Message::Select(SelectResponse {
                state: CardState::Active,
                card_id: Some(CARD_ID),
                chip_serial: None,
                certificate: Some(card_certificate.clone()),
                transfer: None,
            }),
        ),
        Sample::new(
            "select_active_with_transfer_keys",
            Message::Select(SelectResponse {
                state: CardState::Active,
                card_id: Some(CARD_ID),
                chip_serial: None,
                certificate: Some(card_certificate.clone()),
                transfer: Some(valuecard_core::messages::transfer::TransferSummary {
                    transfer_key_id: 2,
                    update_key_id: 1,
                    key_limit: 3,
                    pending: true,
                }),
            }),
        ),
        Sample::new(
            "select_blocked_certificate_only",
            Message::Select(SelectResponse {
                state: CardState::Blocked,
                card_id: None,
                chip_serial: None,
                certificate: Some(card_certificate.clone()),
                transfer: None,
            }),
        ),
        Sample::new(
            "generate_key_pair_command",
            Message::GenerateKeyPairCommand(generate_key_pair_command),
        ),
        Sample::new(
            "generate_key_pair_response",
            Message::GenerateKeyPairResponse(generate_key_pair_response),
        ),
        Sample::new("personalize", Message::Personalize(personalize)),
        Sample::new(
            "usage_record_purchase",
            Message::UsageRecord(purchase_record.clone()),
        ),
        Sample::new(
            "usage_record_load",
            Message::UsageRecord(load_record.clone()),
        ),
        Sample::new(
            "purse_status_fresh",
            Message::PurseStatus(purse_status_fresh),
        ),
        Sample::new(
            "purse_status_after_purchase",
            Message::PurseStatus(purse_status_after_purchase.clone()),
        )
        .with_shorter(Message::PurseStatus(PurseStatus {
            last_usage: None,
            ..purse_status_after_purchase
        })),
        Sample::new(
            "purse_status_blocked",
            Message::PurseStatus(purse_status_blocked.clone()),
        )
        .with_shorter(Message::PurseStatus(PurseStatus {
            last_usage: None,
            ..purse_status_blocked
        })),
        Sample::new(
            "initialize_purchase",
            Message::InitializePurchase(initialize_purchase),
        ),
        Sample::new("purchase_offer_first", Message::PurchaseOffer(first_offer)),
        Sample::new(
            "purchase_offer_with_last_usage",
            Message::PurchaseOffer(second_offer.clone()),
        )
        .with_shorter(Message::PurchaseOffer(PurchaseOffer {
            last_usage: None,
            ..second_offer
        })),
        Sample::new(
            "purchase_offer_with_writer_certificate",
            Message::PurchaseOffer(between_offer.clone()),
        )
        .with_shorter(Message::PurchaseOffer(PurchaseOffer {
            last_writer_certificate: None,
            ..between_offer.clone()
        }))
        .with_shorter(Message::PurchaseOffer(PurchaseOffer {
            last_usage: None,
            last_writer_certificate: None,
            ..between_offer
        })),
        Sample::new("debit", Message::Debit(debit)),
        Sample::new(
            "update_confirmation_purchase",
            Message::UpdateConfirmation(UpdateConfirmation {
                counter: 8,
                balance: after_purchase,
            }),
        ),
        Sample::new(
            "update_confirmation_full",
            Message::UpdateConfirmation(UpdateConfirmation {
                counter: 9,
                balance: Amount::MAX,
            }),
        ),
        Sample::new("initialize_load", Message::InitializeLoad(initialize_load)),
        Sample::new("load_offer", Message::LoadOffer(load_offer.clone()))
            .with_shorter(Message::LoadOffer(LoadOffer {
                last_writer_certificate: None,
                ..load_offer.clone()
            }))
            .with_shorter(Message::LoadOffer(LoadOffer {
                last_usage: None,
                last_writer_certificate: None,
                ..load_offer
            })),
        Sample::new("credit", Message::Credit(credit)),
        Sample::new(
            "get_last_transaction",
            Message::GetLastTransaction(get_last_transaction),
        ),
        Sample::new(
            "last_transaction_purchase",
            Message::LastTransaction(last_purchase),
        ),
        Sample::new("last_transaction_load", Message::LastTransaction(last_load)),
        Sample::new(
            "certificate_card",
            Message::Certificate(card_certificate.clone()),
        ),
        Sample::new(
            "certificate_terminal",
            Message::Certificate(terminal_certificate.clone()),
        ),
    ];
    for (name, count) in [
        ("log_empty", 0),
        ("log_one", 1),
        ("log_full", CARD_LOG_ENTRIES_MAX),
    ] {
        let entries = log_entries(count);
        let mut sample = Sample::new(name, Message::Log(entries.clone()));
        for shorter in 0..count {
            sample = sample.with_shorter(Message::Log(entries[..shorter].to_vec()));
        }
        samples.push(sample);
    }

    Fixture {
        samples,
        signatures: log.entries,
        anchor,
        certificates: vec![
            (card_certificate, Role::Card),
            (terminal_certificate, Role::PaymentTerminal),
        ],
    }
}

// ---------------------------------------------------------------------------------------
// A TLV tree, to edit encodings structurally (lengths of enclosing objects follow).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Primitive(u32, Vec<u8>),
    Constructed(u32, Vec<Node>),
}

fn parse_tree(bytes: &[u8]) -> Vec<Node> {
    let mut reader = TlvReader::new(bytes);
    let mut nodes = Vec::new();
    while let Some(tlv) = reader.next_tlv().expect("sample encodings are valid TLV") {
        nodes.push(if tlv.tag.is_constructed() {
            Node::Constructed(tlv.tag.0, parse_tree(tlv.value))
        } else {
            Node::Primitive(tlv.tag.0, tlv.value.to_vec())
        });
    }
    nodes
}

fn encode_tree(nodes: &[Node]) -> Vec<u8> {
    let mut writer = TlvWriter::new();
    for node in nodes {
        match node {
            Node::Primitive(tag, value) => writer.put(*tag, value),
            Node::Constructed(tag, children) => writer.put(*tag, &encode_tree(children)),
        };
    }
    writer.into_bytes()
}

/// Every tree obtained by replacing exactly one node, at any depth, with what `edit`
/// returns for it.
fn single_edits(nodes: &[Node], edit: &dyn Fn(&Node) -> Option<Node>) -> Vec<Vec<Node>> {
    let mut out = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        if let Some(replacement) = edit(node) {
            let mut copy = nodes.to_vec();
            copy[index] = replacement;
            out.push(copy);
        }
        if let Node::Constructed(tag, children) = node {
            for edited in single_edits(children, edit) {
                let mut copy = nodes.to_vec();
                copy[index] = Node::Constructed(*tag, edited);
                out.push(copy);
            }
        }
    }
    out
}

/// Encodings of `sample` with one primitive field of `field_tag` and `len` bytes replaced
/// by `value`.
fn with_field(sample: &Sample, field_tag: u32, len: usize, value: &[u8]) -> Vec<Vec<u8>> {
    let edit = |node: &Node| match node {
        Node::Primitive(found, old) if *found == field_tag && old.len() == len => {
            Some(Node::Primitive(*found, value.to_vec()))
        }
        _ => None,
    };
    single_edits(&parse_tree(&sample.message.encode()), &edit)
        .iter()
        .map(|tree| encode_tree(tree))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn samples_cover_every_kind() {
    let covered: BTreeSet<Kind> = fixture().samples.iter().map(|s| s.message.kind()).collect();
    let all: BTreeSet<Kind> = Kind::ALL.into_iter().collect();
    assert_eq!(covered, all);
    let mut names: Vec<&str> = fixture().samples.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        fixture().samples.len(),
        "sample names must be unique"
    );
}

#[test]
fn sample_signatures_verify() {
    let fixture = fixture();
    assert!(!fixture.signatures.is_empty());
    for (key, message, signature) in &fixture.signatures {
        key.verify(message, signature).unwrap();
    }
    for (certificate, role) in &fixture.certificates {
        fixture
            .anchor
            .verify(std::slice::from_ref(certificate), *role, TODAY)
            .unwrap();
    }
}

#[test]
fn can_round_trip_all_messages() {
    for sample in &fixture().samples {
        let bytes = sample.message.encode();
        let decoded =
            sample.message.kind().decode(&bytes).unwrap_or_else(|e| {
                panic!("{}: decoding its own encoding failed: {e:?}", sample.name)
            });
        assert_eq!(
            decoded, sample.message,
            "{}: decoded differently",
            sample.name
        );
        assert_eq!(
            decoded.encode(),
            bytes,
            "{}: re-encoding differs",
            sample.name
        );
        // The encoding is strict BER-TLV: a re-encoding of its parse tree is byte-identical.
        assert_eq!(
            encode_tree(&parse_tree(&bytes)),
            bytes,
            "{}: TLV not minimal",
            sample.name
        );
    }
}

#[test]
fn can_detect_truncation_of_all_messages() {
    for sample in &fixture().samples {
        let bytes = sample.message.encode();
        let kind = sample.message.kind();
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            match sample
                .shorter
                .iter()
                .find(|shorter| shorter.encode() == prefix)
            {
                // A complete shorter message: it must decode as exactly that message.
                Some(shorter) => assert_eq!(
                    &kind
                        .decode(prefix)
                        .unwrap_or_else(|e| panic!("{}: prefix {cut}: {e:?}", sample.name)),
                    shorter,
                    "{}: prefix of {cut} bytes",
                    sample.name
                ),
                None => assert!(
                    kind.decode(prefix).is_err(),
                    "{}: accepted truncation to {cut} of {} bytes",
                    sample.name,
                    bytes.len()
                ),
            }
        }
    }
}

#[test]
fn rejects_trailing_bytes_on_all_messages() {
    let trailers: [&[u8]; 5] = [
        &[0x00],
        &[0xFF],
        &[0x90],
        &[0x90, 0x00],
        &[0x9F, 0x7F, 0x01, 0x55],
    ];
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        let bytes = sample.message.encode();
        for trailer in trailers {
            let mut long = bytes.clone();
            long.extend_from_slice(trailer);
            assert!(
                kind.decode(&long).is_err(),
                "{}: accepted trailer {trailer:02X?}",
                sample.name
            );
        }
    }
}

#[test]
fn rejects_trailing_objects_inside_every_constructed_object() {
    let mut checked = 0;
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        let edit = |node: &Node| match node {
            Node::Constructed(object, children) => {
                let mut children = children.clone();
                children.push(Node::Primitive(0x90, vec![0x01]));
                Some(Node::Constructed(*object, children))
            }
            Node::Primitive(..) => None,
        };
        for tree in single_edits(&parse_tree(&sample.message.encode()), &edit) {
            let bytes = encode_tree(&tree);
            assert!(
                kind.decode(&bytes).is_err(),
                "{}: accepted {}",
                sample.name,
                hex::encode(&bytes)
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} nested objects checked");
}

#[test]
fn rejects_out_of_range_amounts() {
    let mut kinds_with_amounts = BTreeSet::new();
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        for field in [tag::AMOUNT, tag::BALANCE] {
            // The largest balance a purse may hold is accepted...
            for bytes in with_field(sample, field, 8, &BALANCE_MAX_MINOR.to_be_bytes()) {
                let decoded = kind.decode(&bytes).unwrap_or_else(|e| {
                    panic!("{}: refused the maximum amount: {e:?}", sample.name)
                });
                assert_eq!(decoded.encode(), bytes, "{}", sample.name);
            }
            // ...and anything above it is refused.
            for too_large in [BALANCE_MAX_MINOR + 1, 1 << 53, u64::MAX] {
                for bytes in with_field(sample, field, 8, &too_large.to_be_bytes()) {
                    kinds_with_amounts.insert(kind);
                    match kind.decode(&bytes) {
                        Err(Refusal::Message(DecodeError::Amount(AmountError::TooLarge(
                            value,
                        )))) => {
                            assert_eq!(value, too_large, "{}", sample.name)
                        }
                        other => panic!("{}: amount {too_large} gave {other:?}", sample.name),
                    }
                }
            }
        }
    }
    let expected: BTreeSet<Kind> = [
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
        Kind::LastTransaction,
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds_with_amounts, expected);
}

#[test]
fn rejects_unknown_state_and_kind() {
    let mut covered = BTreeSet::new();
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        for (field_tag, field, valid) in [
            (tag::STATE, "state", &[0x01u8, 0x02, 0x03, 0x7F][..]),
            // Purchase, load, and the transfer out and in of seed 000.
            (tag::KIND, "kind", &[0x01u8, 0x02, 0x03, 0x04][..]),
        ] {
            for value in 0..=u8::MAX {
                for bytes in with_field(sample, field_tag, 1, &[value]) {
                    covered.insert((field, kind));
                    match kind.decode(&bytes) {
                        Ok(decoded) if valid.contains(&value) => {
                            assert_eq!(decoded.encode(), bytes)
                        }
                        Err(Refusal::Message(DecodeError::Field { field: refused, .. }))
                            if !valid.contains(&value) && refused == field => {}
                        // A purchase record turned into a load still carries the
                        // purchase's stamp, which a load may not have.
                        Err(Refusal::Message(DecodeError::Field { field: "stamp", .. }))
                            if field == "kind" && value == 0x02 => {}
                        other => panic!("{}: {field} {value:#04x} gave {other:?}", sample.name),
                    }
                }
            }
        }
    }
    let expected: BTreeSet<(&str, Kind)> = [
        ("state", Kind::Select),
        ("state", Kind::PurseStatus),
        ("kind", Kind::UsageRecord),
        ("kind", Kind::PurseStatus),
        ("kind", Kind::Log),
        ("kind", Kind::PurchaseOffer),
        ("kind", Kind::LoadOffer),
        ("kind", Kind::LastTransaction),
    ]
    .into_iter()
    .collect();
    assert_eq!(covered, expected);
}

#[test]
fn rejects_unknown_certificate_role() {
    let mut checked = 0;
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        for value in (0..=u8::MAX).filter(|value| Role::from_u8(*value).is_none()) {
            for bytes in with_field(sample, valuecard_core::cert::TAG_ROLE, 1, &[value]) {
                checked += 1;
                match kind.decode(&bytes) {
                    Err(Refusal::Certificate(CertError::UnknownRole(role)))
                    | Err(Refusal::Message(DecodeError::Certificate(CertError::UnknownRole(
                        role,
                    )))) => {
                        assert_eq!(role, value)
                    }
                    other => panic!("{}: role {value:#04x} gave {other:?}", sample.name),
                }
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn log_lists_are_bounded() {
    let full = LogEntry::encode_list(&log_entries(CARD_LOG_ENTRIES_MAX));
    assert_eq!(
        LogEntry::decode_list(&full).unwrap().len(),
        CARD_LOG_ENTRIES_MAX
    );
    let too_many = LogEntry::encode_list(&log_entries(CARD_LOG_ENTRIES_MAX + 1));
    assert!(matches!(
        LogEntry::decode_list(&too_many),
        Err(DecodeError::Field {
            field: "log",
            reason: "too many entries"
        })
    ));
}

#[test]
fn rejects_wrong_fixed_lengths() {
    // Every fixed-length field one byte short and one byte long.
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        let shorten = |node: &Node| match node {
            Node::Primitive(field, value) if !value.is_empty() && *field != tag::SEALED_KEYS => {
                Some(Node::Primitive(*field, value[..value.len() - 1].to_vec()))
            }
            _ => None,
        };
        let lengthen = |node: &Node| match node {
            Node::Primitive(field, value) if *field != tag::SEALED_KEYS => {
                let mut value = value.clone();
                value.push(0);
                Some(Node::Primitive(*field, value))
            }
            _ => None,
        };
        for edit in [&shorten as &dyn Fn(&Node) -> Option<Node>, &lengthen] {
            for tree in single_edits(&parse_tree(&sample.message.encode()), edit) {
                let bytes = encode_tree(&tree);
                assert!(
                    kind.decode(&bytes).is_err(),
                    "{}: accepted {}",
                    sample.name,
                    hex::encode(&bytes)
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn decoders_never_panic_on_random_bytes(
        index in 0..Kind::ALL.len(),
        bytes in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        if let Ok(message) = Kind::ALL[index].decode(&bytes) {
            prop_assert_eq!(message.encode(), bytes);
        }
    }

    #[test]
    fn decoders_never_panic_on_mutated_samples(
        index in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let sample = index.get(&fixture().samples);
        let mut bytes = sample.message.encode();
        for (at, byte, operation) in edits {
            let position = if bytes.is_empty() { 0 } else { at.index(bytes.len()) };
            match operation {
                0 if !bytes.is_empty() => bytes[position] = byte,
                1 => bytes.insert(position, byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(position);
                }
                _ => bytes.push(byte),
            }
        }
        if let Ok(message) = sample.message.kind().decode(&bytes) {
            prop_assert_eq!(message.encode(), bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fuzz seeds.
// ---------------------------------------------------------------------------------------

/// Writes the seed corpora of the fuzz targets under `fuzz/seeds/`. Run with
/// `cargo test -p valuecard-core --test messages -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run explicitly to refresh fuzz/seeds"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let fixture = &build_fixture(SeedRng::new());
    let encoding_of = |name: &str| {
        fixture
            .samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.message.encode())
            .unwrap()
    };

    for sample in &fixture.samples {
        let bytes = sample.message.encode();
        match sample.message.kind().fuzz_selector() {
            Some(selector) => {
                let mut input = vec![selector];
                input.extend_from_slice(&bytes);
                write("purse_messages", sample.name, &input);
            }
            None => write("certificate", sample.name, &bytes),
        }
        if !bytes.is_empty() {
            write("tlv", sample.name, &bytes);
        }
    }

    let commands = [
        (
            "select",
            Command::new(CLA_ISO, ins::SELECT, 0x04, 0x00)
                .with_data(PURSE_AID.to_vec())
                .with_le(256),
        ),
        (
            "get_challenge",
            Command::new(CLA_ISO, ins::GET_CHALLENGE, 0, 0).with_le(CHALLENGE_LEN as u32),
        ),
        (
            "read_purse",
            Command::new(CLA_PROPRIETARY, ins::READ_PURSE, 0, 0).with_le(256),
        ),
        (
            "read_log_case1",
            Command::new(CLA_PROPRIETARY, ins::READ_LOG, 0, 0),
        ),
        (
            "read_log_extended_le",
            Command::new(CLA_PROPRIETARY, ins::READ_LOG, 0, 0).with_le(65_536),
        ),
        (
            "generate_key_pair",
            Command::new(CLA_PROPRIETARY, ins::GENERATE_KEY_PAIR, 0, 0)
                .with_data(encoding_of("generate_key_pair_command"))
                .with_le(256),
        ),
        (
            "personalize_extended",
            Command::new(CLA_PROPRIETARY, ins::PERSONALIZE, 0, 0)
                .with_data(encoding_of("personalize")),
        ),
        (
            "initialize_purchase",
            Command::new(CLA_PROPRIETARY, ins::INITIALIZE_PURCHASE, 0, 0)
                .with_data(encoding_of("initialize_purchase"))
                .with_le(65_536),
        ),
        (
            "debit",
            Command::new(CLA_PROPRIETARY, ins::DEBIT, 0, 0)
                .with_data(encoding_of("debit"))
                .with_le(256),
        ),
        (
            "initialize_load",
            Command::new(CLA_PROPRIETARY, ins::INITIALIZE_LOAD, 0, 0)
                .with_data(encoding_of("initialize_load"))
                .with_le(256),
        ),
        (
            "credit",
            Command::new(CLA_PROPRIETARY, ins::CREDIT, 0, 0).with_data(encoding_of("credit")),
        ),
        (
            "get_last_transaction",
            Command::new(CLA_PROPRIETARY, ins::GET_LAST_TRANSACTION, 0, 0)
                .with_data(encoding_of("get_last_transaction"))
                .with_le(256),
        ),
    ];
    for (name, command) in commands {
        let bytes = command.encode();
        assert_eq!(Command::parse(&bytes).unwrap(), command, "{name}");
        write("apdu_command", name, &bytes);
    }

    let responses = [
        ("select", Response::success(encoding_of("select_active"))),
        (
            "read_purse",
            Response::success(encoding_of("purse_status_after_purchase")),
        ),
        ("read_log", Response::success(encoding_of("log_full"))),
        (
            "purchase_offer",
            Response::success(encoding_of("purchase_offer_with_writer_certificate")),
        ),
        ("ok_empty", Response::success(Vec::new())),
        ("wrong_data", Response::error(StatusWord::WRONG_DATA)),
        (
            "insufficient_funds",
            Response::error(StatusWord::INSUFFICIENT_FUNDS),
        ),
    ];
    for (name, response) in responses {
        let bytes = response.encode();
        assert_eq!(Response::parse(&bytes).unwrap(), response, "{name}");
        write("apdu_response", name, &bytes);
    }
}
