//! The samples themselves: one of every message, built with real keys, and the
//! reproducible generator the fuzz seeds are written with.

use super::*;

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
