//! The card dispenser (seed 003): issues cards (Fig. 4B with the key delivery of Fig. 8),
//! enables their credit function (Fig. 13's issuance data), and loads value online through
//! the center (Figs. 4C and 7).

use rand_core::{CryptoRngCore, OsRng};
use valuecard_core::cert::TrustAnchor;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{
    CardCertificationRequest, CardIdRequest, CenterLink, LoadOutcome, LoadRequest, LoadSettlement,
    SettlementChallengeRequest,
};
use valuecard_core::messages::credit::{CreditLink, CreditRequest};
use valuecard_core::messages::purse::{
    ins, CardState, Challenge, CreditCommand, GenerateKeyPairCommand, GenerateKeyPairResponse,
    InitializeLoad, LoadOffer, PersonalizeCommand, SelectResponse, UpdateConfirmation,
};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};
use valuecard_sam::Sam;

use crate::card_commands::{get_challenge, proprietary, run, select};
use crate::payment::{verify_select, VerifiedCard};
use crate::TerminalError;

/// A completed load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReceipt {
    pub card_id: CardId,
    pub load_number: u32,
    pub amount: Amount,
    pub balance_after: Amount,
}

/// A card whose credit function the center enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditEnabled {
    pub card_id: CardId,
    /// The last day the card records services.
    pub expiry: Date,
}

/// A dispenser: SAM and clock; it reaches the center through a [`CenterLink`].
pub struct Dispenser<S: Sam, R: CryptoRngCore = OsRng> {
    sam: S,
    clock: Box<dyn Clock>,
    rng: R,
}

impl<S: Sam, R: CryptoRngCore> core::fmt::Debug for Dispenser<S, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Dispenser")
            .field("device_id", &self.sam.device_id())
            .finish_non_exhaustive()
    }
}

impl<S: Sam, R: CryptoRngCore> Dispenser<S, R> {
    pub fn new(sam: S, clock: Box<dyn Clock>, rng: R) -> Result<Self, TerminalError> {
        sam.certificate()?;
        Ok(Dispenser { sam, clock, rng })
    }

    pub fn device_id(&self) -> DeviceId {
        self.sam.device_id()
    }

    fn anchor(&self) -> Result<TrustAnchor, TerminalError> {
        Ok(*self.sam.anchor()?)
    }

    fn challenge_from_card(reader: &mut impl CardReader) -> Result<Challenge, TerminalError> {
        let data = run(reader, "GET CHALLENGE", &get_challenge())?;
        data.as_slice()
            .try_into()
            .map_err(|_| TerminalError::Mismatch("GET CHALLENGE must return 16 bytes"))
    }

    /// Fig. 4B with Fig. 8: a manufactured card gets its ID from the center, generates its
    /// key pair, and receives its certificate, the root key, this dispenser's ID, and KU and
    /// KO under the transport key. The dispenser relays; it never sees a key.
    pub fn issue_card(
        &mut self,
        reader: &mut impl CardReader,
        center: &mut impl CenterLink,
    ) -> Result<CardId, TerminalError> {
        let fci = run(reader, "SELECT", &select())?;
        let fci = SelectResponse::decode(&fci).map_err(|error| TerminalError::Malformed {
            message: "FCI",
            error,
        })?;
        let dispenser_id = self.sam.device_id();
        let challenge = match fci.state {
            CardState::Manufactured | CardState::KeysGenerated => {
                Self::challenge_from_card(reader)?
            }
            state => return Err(TerminalError::CardNotReady(state)),
        };
        // The center MACs the issuance under this chip's own transport key.
        let chip_serial = fci.chip_serial.ok_or(TerminalError::Mismatch(
            "an unissued card must show its chip serial",
        ))?;
        // A card that already generated its keys (power was lost before PERSONALIZE) is
        // resumed under the ID it holds; GENERATE KEY PAIR then returns the same keys.
        let assignment = match (fci.state, fci.card_id) {
            (CardState::KeysGenerated, Some(card_id)) => center.resume_card_id(
                &CardIdRequest {
                    dispenser_id,
                    chip_serial,
                },
                &card_id,
                &challenge,
            )?,
            (CardState::KeysGenerated, None) => {
                return Err(TerminalError::Mismatch("a card with keys must name its ID"))
            }
            _ => center.assign_card_id(
                &CardIdRequest {
                    dispenser_id,
                    chip_serial,
                },
                &challenge,
            )?,
        };
        let command = GenerateKeyPairCommand {
            card_id: assignment.card_id,
            mac: assignment.mac,
        };
        let data = run(
            reader,
            "GENERATE KEY PAIR",
            &proprietary(ins::GENERATE_KEY_PAIR, command.encode()),
        )?;
        let keys =
            GenerateKeyPairResponse::decode(&data).map_err(|error| TerminalError::Malformed {
                message: "public keys",
                error,
            })?;
        let card_id = assignment.card_id;
        let challenge = Self::challenge_from_card(reader)?;
        let personalization = center.certify_card(&CardCertificationRequest {
            dispenser_id,
            chip_serial,
            card_id,
            signing_key: keys.signing_key,
            sealing_key: keys.sealing_key,
            card_challenge: challenge,
        })?;
        let command = PersonalizeCommand {
            certificate: personalization.certificate,
            anchor: personalization.anchor,
            dispenser_id,
            date: personalization.date,
            sealed_keys: personalization.sealed_keys,
            mac: personalization.mac,
        };
        run(
            reader,
            "PERSONALIZE",
            &proprietary(ins::PERSONALIZE, command.encode()),
        )?;
        Ok(card_id)
    }

    /// Fig. 7: Y and the amount to the card; the card's SU(Y * X * V) to the center; the
    /// center's SA(Y * X * V * IDU) (and KU MAC) back to the card; then the outcome to the
    /// center. A lost answer leaves the load in doubt at the center until settled.
    pub fn load(
        &mut self,
        reader: &mut impl CardReader,
        center: &mut impl CenterLink,
        amount: Amount,
    ) -> Result<LoadReceipt, TerminalError> {
        if amount == Amount::ZERO {
            return Err(TerminalError::Amount("a load must be positive".into()));
        }
        let card = self.select(reader)?;
        let challenge_dispenser: Challenge = random_array(&mut self.rng);
        let dispenser_id = self.sam.device_id();
        let request = InitializeLoad {
            challenge_dispenser,
            amount,
            dispenser_id,
        };
        let data = match run(
            reader,
            "INITIALIZE LOAD",
            &proprietary(ins::INITIALIZE_LOAD, request.encode()),
        ) {
            Err(TerminalError::Card {
                sw: StatusWord::NOT_ENOUGH_MEMORY,
                ..
            }) => {
                return Err(TerminalError::Amount(format!(
                    "the card cannot hold {amount} more"
                )));
            }
            other => other?,
        };
        let offer = LoadOffer::decode(&data).map_err(|error| TerminalError::Malformed {
            message: "load offer",
            error,
        })?;
        let signed = LoadOffer::signed_message(
            &card.card_id(),
            &request,
            &offer.challenge_card,
            offer.balance,
            offer.counter,
        );
        card.public_key()
            .verify(&signed, &offer.signature)
            .map_err(|_| TerminalError::BadCardSignature)?;
        let approval = center.authorize_load(&LoadRequest {
            card_id: card.card_id(),
            dispenser_id,
            challenge_dispenser,
            amount,
            offer: offer.clone(),
        })?;
        let command = CreditCommand {
            amount,
            balance_after: approval.balance_after,
            load_number: approval.load_number,
            date: approval.date,
            signature: approval.signature,
            mac: approval.mac,
            transfer_keys: approval.transfer_keys.clone(),
        };
        let in_doubt = TerminalError::LoadInDoubt {
            load_number: approval.load_number,
        };
        let response = match reader.exchange(&proprietary(ins::CREDIT, command.encode())) {
            Ok(response) => response,
            Err(
                ReaderError::CardRemoved
                | ReaderError::MalformedResponse(_)
                | ReaderError::Transport(_),
            ) => return Err(in_doubt),
            Err(other) => return Err(other.into()),
        };
        if response.sw != StatusWord::SUCCESS {
            // The card refused the CREDIT. Its word for that, over the center's fresh
            // challenge, releases the load; without it the load stays this dispenser's.
            let refused = TerminalError::Card {
                command: "CREDIT",
                sw: response.sw,
            };
            match self.settle_with_evidence(reader, center, &card, approval.load_number, true) {
                Ok(_) => {}
                Err(TerminalError::Card { .. } | TerminalError::Reader(_)) => {}
                Err(other) => return Err(other),
            }
            return Err(refused);
        }
        match UpdateConfirmation::decode(&response.data) {
            Ok(confirmation)
                if confirmation.balance == approval.balance_after
                    && confirmation.counter == offer.counter.wrapping_add(1) => {}
            _ => return Err(in_doubt),
        }
        // The card's signed last transaction is the center's evidence that it committed.
        match self.settle_with_evidence(reader, center, &card, approval.load_number, false) {
            Ok(LoadOutcome::Committed) => {}
            Ok(_) | Err(TerminalError::Card { .. } | TerminalError::Reader(_)) => {
                return Err(in_doubt)
            }
            Err(other) => return Err(other),
        }
        Ok(LoadReceipt {
            card_id: card.card_id(),
            load_number: approval.load_number,
            amount,
            balance_after: approval.balance_after,
        })
    }

    /// Reads the card's signed last transaction and hands it to the center as the evidence
    /// of how load `load_number` ended. Evidence that the card is still at the load's
    /// state must answer a challenge the center draws now (`fresh`); evidence of a commit
    /// needs no freshness, since only a committed card can show the load's record.
    fn settle_with_evidence(
        &mut self,
        reader: &mut impl CardReader,
        center: &mut impl CenterLink,
        card: &VerifiedCard,
        load_number: u32,
        fresh: bool,
    ) -> Result<LoadOutcome, TerminalError> {
        let dispenser_id = self.sam.device_id();
        let challenge = if fresh {
            center.settlement_challenge(&SettlementChallengeRequest {
                dispenser_id,
                card_id: card.card_id(),
                load_number,
            })?
        } else {
            random_array(&mut self.rng)
        };
        let evidence = crate::payment::read_last_transaction_over(reader, card, challenge)?;
        Ok(center.settle_load(&LoadSettlement {
            card_id: card.card_id(),
            dispenser_id,
            load_number,
            challenge,
            evidence,
        })?)
    }

    /// Fig. 13's issuance data: the center draws the setting number Ns for the card in the
    /// reader, seals it (with a secret salt) to the card's certified X25519 key and signs
    /// SA(IDU, expiry, C); the dispenser relays ENABLE CREDIT and never sees Ns. `expiry` is
    /// the operator's choice of last day, or the center's default. Asking again for an
    /// enabled card relays the same data, which the card accepts without change.
    pub fn enable_credit(
        &mut self,
        reader: &mut impl CardReader,
        center: &mut impl CreditLink,
        expiry: Option<Date>,
    ) -> Result<CreditEnabled, TerminalError> {
        let card = self.select(reader)?;
        let command = center.enable_credit(&CreditRequest {
            dispenser_id: self.sam.device_id(),
            card_id: card.card_id(),
            expiry,
        })?;
        run(
            reader,
            "ENABLE CREDIT",
            &proprietary(ins::ENABLE_CREDIT, command.encode()),
        )?;
        Ok(CreditEnabled {
            card_id: card.card_id(),
            expiry: command.expiry,
        })
    }

    fn select(&mut self, reader: &mut impl CardReader) -> Result<VerifiedCard, TerminalError> {
        let fci = crate::card_commands::select_active(reader)?;
        verify_select(&fci, &self.anchor()?, self.clock.today())
    }

    /// Settles a load this dispenser holds as pending for the card in the reader, from the
    /// card's signed last transaction over a challenge the center draws now. Returns
    /// whether it had committed, or `None` when the evidence does not decide (the card has
    /// moved on: a usage upload will show which update consumed the load's state).
    pub fn settle_pending_load(
        &mut self,
        reader: &mut impl CardReader,
        center: &mut impl CenterLink,
        load_number: u32,
    ) -> Result<Option<bool>, TerminalError> {
        let card =
            crate::payment::select_for_settlement(reader, &self.anchor()?, self.clock.today())?;
        Ok(
            match self.settle_with_evidence(reader, center, &card, load_number, true)? {
                LoadOutcome::Committed => Some(true),
                LoadOutcome::Cancelled => Some(false),
                LoadOutcome::Undecided => None,
            },
        )
    }
}
