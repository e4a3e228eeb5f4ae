//! The payment terminal (seed 003, Figs. 5, 6 and 9): an offline purchase in two command
//! pairs after SELECT, and the settlement of purchases left in doubt.

use rand_core::{CryptoRngCore, OsRng};
use valuecard_core::cert::{TrustAnchor, VerifiedCertificate};
use valuecard_core::crypto::{random_array, PublicKey};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::{
    ins, Challenge, DebitCommand, InitializePurchase, PurchaseOffer, PurseStatus,
    UpdateConfirmation,
};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};
use valuecard_sam::{PurchaseOrder, Sam};

use crate::card_commands::{proprietary, run, select};
use crate::store::{PurchaseRecord, PurchaseStatus, TerminalStore};
use crate::TerminalError;

mod evidence;

use evidence::decide;
pub(crate) use evidence::{read_last_transaction, read_last_transaction_over, read_log};
pub use evidence::{select_for_settlement, verify_select};
pub(crate) use evidence::{verify_previous_usage, ClaimedState};
use valuecard_core::messages::center::{
    TerminalLink, UploadReceipt, UsageItem, UsageUpload, USAGE_BATCH_MAX,
};

/// A card whose certificate (nU, IDU, SA(nU * IDU)) verified under the center root: the
/// state after the first step of Fig. 5.
#[derive(Debug, Clone)]
pub struct VerifiedCard {
    certificate: VerifiedCertificate,
    card_id: CardId,
}

impl VerifiedCard {
    pub fn card_id(&self) -> CardId {
        self.card_id
    }

    pub fn public_key(&self) -> &PublicKey {
        self.certificate.signing_key()
    }
}

/// Proof that the card's SU(R * X * V) and its previous usage record verified. Only
/// [`PaymentTerminal::initialize_purchase`] creates one.
#[derive(Debug)]
pub struct CardSignatureVerified(());

/// The state between INITIALIZE PURCHASE and DEBIT: the card's balance is known and
/// authenticated, and the terminal may now debit up to `amount_max`.
#[derive(Debug)]
pub struct PurchaseReady {
    card: VerifiedCard,
    challenge_terminal: Challenge,
    offer: PurchaseOffer,
    amount_max: Amount,
    date: Date,
    _proof: CardSignatureVerified,
}

impl PurchaseReady {
    pub fn balance(&self) -> Amount {
        self.offer.balance
    }

    pub fn card_id(&self) -> CardId {
        self.card.card_id
    }
}

/// A completed purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseReceipt {
    pub sequence: u32,
    pub card_id: CardId,
    pub amount: Amount,
    pub balance_before: Amount,
    pub balance_after: Amount,
    pub card_counter: u32,
}

/// The outcome of settling one in-doubt purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub sequence: u32,
    pub status: PurchaseStatus,
}

/// A payment terminal: SAM, records and clock.
pub struct PaymentTerminal<S: Sam, T: TerminalStore, R: CryptoRngCore = OsRng> {
    pub(crate) sam: S,
    pub(crate) store: T,
    pub(crate) clock: Box<dyn Clock>,
    pub(crate) rng: R,
    /// The center's lists as last loaded from the store.
    lists: crate::store::ListCache,
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> core::fmt::Debug for PaymentTerminal<S, T, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PaymentTerminal")
            .field("device_id", &self.sam.device_id())
            .finish_non_exhaustive()
    }
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> PaymentTerminal<S, T, R> {
    /// A terminal over an installed SAM.
    pub fn new(sam: S, store: T, clock: Box<dyn Clock>, rng: R) -> Result<Self, TerminalError> {
        sam.certificate()?;
        Ok(PaymentTerminal {
            sam,
            store,
            clock,
            rng,
            lists: Default::default(),
        })
    }

    pub fn device_id(&self) -> DeviceId {
        self.sam.device_id()
    }

    pub fn store(&self) -> &T {
        &self.store
    }

    pub fn sam(&self) -> &S {
        &self.sam
    }

    pub fn sam_mut(&mut self) -> &mut S {
        &mut self.sam
    }

    /// Replaces the terminal's calendar (tests and simulations move time this way).
    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.clock = clock;
    }

    pub(crate) fn anchor(&self) -> Result<TrustAnchor, TerminalError> {
        Ok(*self.sam.anchor()?)
    }

    /// Fig. 5, first step: SELECT the purse and verify SA(nU * IDU) with the root key.
    pub fn select_card(
        &mut self,
        reader: &mut impl CardReader,
    ) -> Result<VerifiedCard, TerminalError> {
        let fci = crate::card_commands::select_active(reader)?;
        let card = verify_select(&fci, &self.anchor()?, self.clock.today())?;
        // Fig. 9: a card on the center's list is refused before anything else happens.
        if let Some(reason) = self.lists()?.cards.get(&card.card_id) {
            return Err(TerminalError::CardListed {
                card_id: card.card_id,
                reason: *reason,
            });
        }
        Ok(card)
    }

    fn lists(&mut self) -> Result<&crate::store::LocalLists, TerminalError> {
        self.lists.get(&self.store)
    }

    /// Reports the terminal's signed time stamp to the center (daily, by the seed). The SAM
    /// advances its chain on its own clock, one step per day, whether or not this is run:
    /// the report only lets the center list the terminal at its latest proven count. A report
    /// that fails is repeated at the next one, because the center keeps the highest count.
    pub fn advance_stamp(&mut self, link: &mut impl TerminalLink) -> Result<u32, TerminalError> {
        let stamp = self.sam.stamp()?;
        link.report_stamp(self.sam.device_id(), &stamp)?;
        Ok(stamp.count)
    }

    /// Fetches the list entries the terminal does not have yet and stores them.
    pub fn update_lists(&mut self, link: &mut impl TerminalLink) -> Result<u64, TerminalError> {
        self.lists
            .update(&mut self.store, link, self.sam.device_id())
    }

    /// Uploads every committed purchase the center has not acknowledged, in batches; a
    /// failure leaves the rest for next time, and a retried batch is not counted twice.
    pub fn upload_usage(
        &mut self,
        link: &mut impl TerminalLink,
    ) -> Result<UploadReceipt, TerminalError> {
        let mut total = UploadReceipt::default();
        loop {
            let records = self.store.pending_uploads(USAGE_BATCH_MAX)?;
            if records.is_empty() {
                return Ok(total);
            }
            let items: Vec<UsageItem> = records.iter().filter_map(usage_item).collect();
            let upload = UsageUpload {
                terminal_id: self.sam.device_id(),
                items,
            };
            let receipt = link.upload_usage(&upload)?;
            // Refused items are marked too: they were answered, and retrying cannot change
            // the answer; the receipt carries the reasons.
            let answered: Vec<u32> = records.iter().map(|record| record.sequence).collect();
            self.store.mark_uploaded(&answered)?;
            total.absorb(receipt);
        }
    }

    /// READ PURSE: the balance and state the holder may always read.
    pub fn read_purse(
        &mut self,
        reader: &mut impl CardReader,
        card: &VerifiedCard,
    ) -> Result<PurseStatus, TerminalError> {
        let data = run(
            reader,
            "READ PURSE",
            &proprietary(ins::READ_PURSE, Vec::new()),
        )?;
        let status = PurseStatus::decode(&data).map_err(|error| TerminalError::Malformed {
            message: "purse status",
            error,
        })?;
        if status.card_id != card.card_id {
            return Err(TerminalError::Mismatch("READ PURSE names another card"));
        }
        Ok(status)
    }

    /// Fig. 6, first exchange: send (nT, IDT, SA(nT * IDT)) and R; verify SU(R * X * V), the
    /// previous writer's certificate and its signature over the card's balance.
    pub fn initialize_purchase(
        &mut self,
        reader: &mut impl CardReader,
        card: VerifiedCard,
        amount_max: Amount,
    ) -> Result<PurchaseReady, TerminalError> {
        if amount_max == Amount::ZERO {
            return Err(TerminalError::Amount("a purchase must be positive".into()));
        }
        let challenge_terminal: Challenge = random_array(&mut self.rng);
        let date = self.clock.today();
        let request = InitializePurchase {
            terminal_certificate: self.sam.certificate()?.clone(),
            challenge_terminal,
            amount_max,
            date,
        };
        let data = match run(
            reader,
            "INITIALIZE PURCHASE",
            &proprietary(ins::INITIALIZE_PURCHASE, request.encode()),
        ) {
            Err(TerminalError::Card {
                sw: StatusWord::INSUFFICIENT_FUNDS,
                ..
            }) => {
                let status = self.read_purse(reader, &card)?;
                return Err(TerminalError::InsufficientBalance {
                    balance: status.balance,
                    amount: amount_max,
                });
            }
            other => other?,
        };
        let offer = PurchaseOffer::decode(&data).map_err(|error| TerminalError::Malformed {
            message: "purchase offer",
            error,
        })?;
        let signed = PurchaseOffer::signed_message(
            &card.card_id,
            &self.sam.device_id(),
            &challenge_terminal,
            &offer.challenge_card,
            offer.balance,
            offer.counter,
            amount_max,
        );
        card.public_key()
            .verify(&signed, &offer.signature)
            .map_err(|_| TerminalError::BadCardSignature)?;
        let anchor = self.anchor()?;
        let lists = self.lists.get(&self.store)?;
        verify_previous_usage(
            &card,
            evidence::ClaimedState::of_purchase(&offer),
            &anchor,
            date,
            lists,
        )?;
        if offer.balance < amount_max {
            return Err(TerminalError::InsufficientBalance {
                balance: offer.balance,
                amount: amount_max,
            });
        }
        Ok(PurchaseReady {
            card,
            challenge_terminal,
            offer,
            amount_max,
            date,
            _proof: CardSignatureVerified(()),
        })
    }

    /// Fig. 6, second exchange: record the purchase durably as in doubt, sign
    /// ST(R * X * V' * IDU) in the SAM, send DEBIT, and record the outcome.
    pub fn debit(
        &mut self,
        reader: &mut impl CardReader,
        ready: PurchaseReady,
        amount: Amount,
    ) -> Result<PurchaseReceipt, TerminalError> {
        if amount == Amount::ZERO || amount > ready.amount_max {
            return Err(TerminalError::Amount(format!(
                "{amount} is not within the authorized {}",
                ready.amount_max
            )));
        }
        let balance_after = ready.offer.balance.checked_sub(amount).map_err(|_| {
            TerminalError::InsufficientBalance {
                balance: ready.offer.balance,
                amount,
            }
        })?;
        // The SAM builds what it signs: its own terminal ID, the stamp its clock says, and a
        // sequence it never used; it refuses an amount outside the card's offer.
        let floor = self.store.next_sequence()?;
        let signed = self.sam.sign_purchase(&PurchaseOrder {
            card_id: ready.card.card_id,
            challenge_terminal: ready.challenge_terminal,
            challenge_card: ready.offer.challenge_card,
            counter: ready.offer.counter,
            balance_before: ready.offer.balance,
            amount_max: ready.amount_max,
            amount,
            date: ready.date,
            sequence_floor: floor,
        })?;
        if signed.commit.balance_after != balance_after {
            return Err(TerminalError::Mismatch("the SAM signed another balance"));
        }
        let (sequence, stamp, signature) = (
            signed.commit.terminal_sequence,
            signed.commit.stamp,
            signed.signature,
        );
        self.store.record(&PurchaseRecord {
            sequence,
            card_id: ready.card.card_id,
            card_counter: ready.offer.counter,
            amount,
            balance_before: ready.offer.balance,
            balance_after,
            challenge_terminal: ready.challenge_terminal,
            challenge_card: ready.offer.challenge_card,
            date: ready.date,
            status: PurchaseStatus::InDoubt,
            previous_usage: ready.offer.last_usage.clone(),
            terminal_signature: signature,
            stamp,
            uploaded: false,
            amount_max: ready.amount_max,
            card_signature: Some(ready.offer.signature),
        })?;
        let command = DebitCommand {
            amount,
            balance_after,
            terminal_sequence: sequence,
            stamp,
            signature,
        };
        let response = match reader.exchange(&proprietary(ins::DEBIT, command.encode())) {
            Ok(response) => response,
            Err(
                ReaderError::MalformedResponse(_)
                | ReaderError::CardRemoved
                | ReaderError::Transport(_),
            ) => {
                return Err(TerminalError::PurchaseInDoubt { sequence });
            }
            Err(other) => return Err(other.into()),
        };
        if response.sw != StatusWord::SUCCESS {
            // The card refused: by the card's rule its balance did not change.
            self.store.set_status(sequence, PurchaseStatus::Cancelled)?;
            return Err(TerminalError::Card {
                command: "DEBIT",
                sw: response.sw,
            });
        }
        let confirmation = match UpdateConfirmation::decode(&response.data) {
            Ok(confirmation) => confirmation,
            Err(_) => return Err(TerminalError::PurchaseInDoubt { sequence }),
        };
        if confirmation.balance != balance_after
            || confirmation.counter != ready.offer.counter.wrapping_add(1)
        {
            return Err(TerminalError::PurchaseInDoubt { sequence });
        }
        self.store.set_status(sequence, PurchaseStatus::Committed)?;
        Ok(PurchaseReceipt {
            sequence,
            card_id: ready.card.card_id,
            amount,
            balance_before: ready.offer.balance,
            balance_after,
            card_counter: confirmation.counter,
        })
    }

    /// The whole purchase at the counter: SELECT, settle anything in doubt for this card,
    /// INITIALIZE PURCHASE, DEBIT.
    pub fn purchase(
        &mut self,
        reader: &mut impl CardReader,
        amount: Amount,
    ) -> Result<PurchaseReceipt, TerminalError> {
        let card = self.select_card(reader)?;
        if !self.store.in_doubt_for_card(&card.card_id)?.is_empty() {
            self.settle_in_doubt(reader, &card)?;
        }
        let ready = self.initialize_purchase(reader, card, amount)?;
        self.debit(reader, ready, amount)
    }

    /// SELECT a card only to settle what is in doubt with it (blocked and listed cards too).
    pub fn select_for_settlement(
        &mut self,
        reader: &mut impl CardReader,
    ) -> Result<VerifiedCard, TerminalError> {
        let anchor = self.anchor()?;
        select_for_settlement(reader, &anchor, self.clock.today())
    }

    /// Settles every purchase this terminal holds in doubt for `card`, from the card's signed
    /// last transaction (and its log when the card has moved on since).
    pub fn settle_in_doubt(
        &mut self,
        reader: &mut impl CardReader,
        card: &VerifiedCard,
    ) -> Result<Vec<Settlement>, TerminalError> {
        let pending = self.store.in_doubt_for_card(&card.card_id)?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let last = read_last_transaction(reader, card, &mut self.rng)?;
        let log = if pending
            .iter()
            .any(|record| last.counter != record.card_counter.wrapping_add(1))
        {
            read_log(reader)?
        } else {
            Vec::new()
        };
        let mut settled = Vec::new();
        for record in pending {
            let status = decide(&record, &last, &log, self.sam.device_id());
            if let Some(status) = status {
                self.store.set_status(record.sequence, status)?;
                settled.push(Settlement {
                    sequence: record.sequence,
                    status,
                });
            }
        }
        Ok(settled)
    }
}

/// The usage item of a committed purchase, if the card showed a previous usage record and
/// its signature was kept.
pub fn usage_item(record: &PurchaseRecord) -> Option<UsageItem> {
    Some(UsageItem {
        terminal_sequence: record.sequence,
        card_id: record.card_id,
        card_counter: record.card_counter,
        amount: record.amount,
        balance_before: record.balance_before,
        balance_after: record.balance_after,
        challenge_terminal: record.challenge_terminal,
        challenge_card: record.challenge_card,
        date: record.date,
        stamp: record.stamp,
        terminal_signature: record.terminal_signature,
        previous_usage: record.previous_usage.clone()?,
        amount_max: record.amount_max,
        card_signature: record.card_signature?,
    })
}
