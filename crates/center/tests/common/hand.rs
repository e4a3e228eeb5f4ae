//! A card issued and loaded by hand against the center's API: its key pairs and keys stay
//! with the test, as they stay on a card, and its state is what a card would hold.

use rand_core::CryptoRngCore;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{aes_cmac, random_array, AesKey, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{
    CardCertificationRequest, CardIdRequest, CenterLink, LoadApproval, LoadRequest,
};
use valuecard_core::messages::purse::{
    Challenge, InitializeLoad, LoadAuthorization, LoadOffer, PersonalizeCommand, TransactionKind,
    UsageRecord, SEALED_KEYS_PLAINTEXT_LEN,
};
use valuecard_core::messages::transfer::{TransferKeySet, TRANSFER_KEY_SET_LEN};
use valuecard_core::money::Amount;

use super::Device;

pub struct HandCard {
    pub id: CardId,
    pub signing: SigningKeyPair,
    pub card_key: AesKey,
    /// The key set PERSONALIZE delivered.
    pub delivered: TransferKeySet,
    pub dispenser: Device,
    pub counter: u32,
    pub balance: Amount,
    pub last: Option<UsageRecord>,
}

/// Figs. 4B and 8 by hand: a dispenser of its own, an ID, a certificate, and the sealed
/// keys opened with the card's own X25519 key.
pub fn personalize(center: &mut Center, rng: &mut impl CryptoRngCore) -> HandCard {
    let dispenser = Device::install_with(center, Role::Dispenser, rng);
    let (serial, _) = center.manufacture_chip();
    let card_challenge: Challenge = random_array(rng);
    let request = CardIdRequest {
        dispenser_id: dispenser.id,
        chip_serial: serial,
    };
    let assignment = center.assign_card_id(&request, &card_challenge).unwrap();
    let signing = SigningKeyPair::generate(rng);
    let sealing = SealingKeyPair::generate(rng);
    let personalization = center
        .certify_card(&CardCertificationRequest {
            dispenser_id: dispenser.id,
            chip_serial: serial,
            card_id: assignment.card_id,
            signing_key: signing.public_key(),
            sealing_key: sealing.public_key(),
            card_challenge,
        })
        .unwrap();
    let plain = sealing
        .open(
            &PersonalizeCommand::sealed_keys_aad(&assignment.card_id),
            &personalization.sealed_keys,
        )
        .unwrap();
    assert_eq!(
        plain.len(),
        SEALED_KEYS_PLAINTEXT_LEN + TRANSFER_KEY_SET_LEN
    );
    HandCard {
        id: assignment.card_id,
        signing,
        card_key: AesKey::from_slice(&plain[..16]).unwrap(),
        delivered: TransferKeySet::from_bytes(&plain[SEALED_KEYS_PLAINTEXT_LEN..]).unwrap(),
        dispenser,
        counter: 0,
        balance: Amount::ZERO,
        last: None,
    }
}

impl HandCard {
    /// The load request a dispenser sends for this card's current state, with the card's
    /// signed offer.
    pub fn load_request(
        &self,
        amount: Amount,
        challenge_card: Challenge,
        challenge_dispenser: Challenge,
    ) -> LoadRequest {
        let init = InitializeLoad {
            challenge_dispenser,
            amount,
            dispenser_id: self.dispenser.id,
        };
        let signed =
            LoadOffer::signed_message(&self.id, &init, &challenge_card, self.balance, self.counter);
        LoadRequest {
            card_id: self.id,
            dispenser_id: self.dispenser.id,
            challenge_dispenser,
            amount,
            offer: LoadOffer {
                challenge_card,
                balance: self.balance,
                counter: self.counter,
                signature: self.signing.sign(&signed),
                last_usage: self.last.clone(),
                last_writer_certificate: None,
            },
        }
    }

    /// What the center authorized, as the card rebuilds it; the card checks the center's MAC
    /// under KU before it opens anything.
    pub fn authorization(
        &self,
        request: &LoadRequest,
        approval: &LoadApproval,
    ) -> LoadAuthorization {
        let authorization = LoadAuthorization {
            card_id: self.id,
            dispenser_id: request.dispenser_id,
            challenge_dispenser: request.challenge_dispenser,
            challenge_card: request.offer.challenge_card,
            counter: request.offer.counter,
            amount: request.amount,
            balance_after: approval.balance_after,
            load_number: approval.load_number,
            date: approval.date,
        };
        assert_eq!(
            approval.mac,
            aes_cmac(&self.card_key, &authorization.signed_message())
        );
        authorization
    }

    /// Asks for a load and applies it as CREDIT would.
    pub fn load(
        &mut self,
        center: &mut Center,
        amount: Amount,
        rng: &mut impl CryptoRngCore,
    ) -> (LoadApproval, LoadAuthorization) {
        let request = self.load_request(amount, random_array(rng), random_array(rng));
        let approval = center.authorize_load(&request).unwrap();
        let authorization = self.authorization(&request, &approval);
        self.apply(UsageRecord {
            kind: TransactionKind::Load,
            counter: self.counter + 1,
            challenge_writer: request.challenge_dispenser,
            challenge_card: request.offer.challenge_card,
            amount,
            balance_after: approval.balance_after,
            writer: self.dispenser.id,
            writer_sequence: approval.load_number,
            date: approval.date,
            signature: approval.signature,
            stamp: None,
        });
        (approval, authorization)
    }

    /// The card's state after `record`.
    pub fn apply(&mut self, record: UsageRecord) {
        self.counter = record.counter;
        self.balance = record.balance_after;
        self.last = Some(record);
    }

    pub fn state(&self) -> super::CardState {
        super::CardState {
            id: self.id,
            counter: self.counter,
            balance: self.balance,
            last: self.last.clone(),
        }
    }
}
