//! The samples behind the codec tests: one of every protocol message (and of each optional
//! field present and absent), with real keys, signatures and MACs, and the helpers that edit
//! their TLV trees.

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

/// A reproducible generator (SHA-256 in counter mode), used only to write the fuzz seeds so
/// that rewriting them gives the same files. The tests draw their keys from `OsRng`.
pub struct SeedRng {
    pub counter: u64,
    pub pending: Vec<u8>,
}

impl SeedRng {
    pub fn new() -> Self {
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

pub fn build_fixture(mut rng: impl CryptoRngCore) -> Fixture {
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
pub enum Node {
    Primitive(u32, Vec<u8>),
    Constructed(u32, Vec<Node>),
}

pub fn parse_tree(bytes: &[u8]) -> Vec<Node> {
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

pub fn encode_tree(nodes: &[Node]) -> Vec<u8> {
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
pub fn single_edits(nodes: &[Node], edit: &dyn Fn(&Node) -> Option<Node>) -> Vec<Vec<Node>> {
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
pub fn with_field(sample: &Sample, field_tag: u32, len: usize, value: &[u8]) -> Vec<Vec<u8>> {
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
