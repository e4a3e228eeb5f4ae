//! Memory cards in the whole system (seed 001): a charge machine takes float from the
//! center and charges cards, two payment machines take payments, an attacker edits and
//! copies card images with a plain storage-card reader, a card pulled out in the middle of a
//! payment is finished by the machine that was writing, and every machine uploads its
//! records for the center's books. The demo shows this; `tests/memcard_scenarios.rs` runs it.

use std::path::Path;

use valuecard_card::memcard::FileMemoryCard;
use valuecard_core::apdu::Command;
use valuecard_core::cert::Role;
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{map, MemcardLink};
use valuecard_core::money::Amount;
use valuecard_core::sw::StatusWord;
use valuecard_reader::{CardReader, EmulatedReader, ReaderError};
use valuecard_sam::memcard::ValueFormat;
use valuecard_sam::{Sam, SoftwareSam};
use valuecard_terminal::memcard::{
    ChargeMachine, MachineReceipt, MemcardRefusal, PaymentMachine, PresentedCard, RepairOutcome,
};
use valuecard_terminal::store::SqliteStore;
use valuecard_terminal::TerminalError;

use crate::attacks::AttackOutcome;
use crate::{install_sam, World, WorldError};

/// The first byte of the demo's memory card IDs: no purse card ID starts with it (the CLI's
/// `memcard issue` uses the same).
pub const MEMORY_CARD_ID_PREFIX: u8 = 0xC1;

type Charger = ChargeMachine<SoftwareSam, SqliteStore>;
type Payer = PaymentMachine<SoftwareSam, SqliteStore>;
type MemcardReader = EmulatedReader<FileMemoryCard>;

/// One memory card at the end of the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcardSummary {
    pub card_id: CardId,
    pub counter: u32,
    /// The value as a payment machine's SAM reads it; `None` for a card whose image an
    /// attacker broke (its value stays in the center's books as its last signed state).
    pub balance: Option<Amount>,
    pub sealed: bool,
}

/// One write a machine made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcardWrite {
    pub machine: String,
    pub receipt: MachineReceipt,
}

/// What the scenario did and found.
#[derive(Debug, Default)]
pub struct MemcardShow {
    pub lines: Vec<String>,
    pub writes: Vec<MemcardWrite>,
    pub cards: Vec<MemcardSummary>,
    pub attacks: Vec<AttackOutcome>,
    /// The torn payment and what presenting the card again did about it.
    pub repairs: Vec<RepairOutcome>,
    pub float_granted: Amount,
}

fn minor(value: u64) -> Result<Amount, WorldError> {
    Amount::new(value).map_err(|e| WorldError::Other(e.to_string()))
}

fn card_id(number: u8) -> CardId {
    CardId([MEMORY_CARD_ID_PREFIX, 0, 0, 0, 0, 0, 0, number])
}

fn new_card(dir: &Path, number: u8) -> Result<MemcardReader, WorldError> {
    let path = dir.join(format!("memcard-{number}.img"));
    let card = FileMemoryCard::manufacture_file(&path, card_id(number))?;
    Ok(EmulatedReader::with_card(
        format!("memory card reader {number}"),
        card,
    ))
}

fn machine_store(dir: &Path, name: &str) -> Result<SqliteStore, WorldError> {
    let machine_dir = dir.join(name);
    std::fs::create_dir_all(&machine_dir)
        .map_err(|e| WorldError::Other(format!("{}: {e}", machine_dir.display())))?;
    Ok(SqliteStore::open(&machine_dir.join("writes.sqlite"))?)
}

/// What an attacker with a plain storage-card reader does: UPDATE BINARY of any writable
/// bytes. The card lowers its counter for every write that touches the value area.
fn write_bytes(reader: &mut impl CardReader, address: u16, data: &[u8]) -> Result<(), WorldError> {
    let [p1, p2] = address.to_be_bytes();
    let response = reader
        .exchange(&Command::new(0xFF, 0xD6, p1, p2).with_data(data.to_vec()))
        .map_err(|e| WorldError::Other(e.to_string()))?;
    if response.sw != StatusWord::SUCCESS {
        return Err(WorldError::Other(format!(
            "UPDATE BINARY at {address:#06x} answered {}",
            response.sw
        )));
    }
    Ok(())
}

/// The writable part of a card's memory (value, signature and certificate areas).
fn writable_areas(reader: &mut impl CardReader) -> Result<Vec<u8>, WorldError> {
    let presented = PresentedCard::read(reader)?;
    Ok(presented.memory()[map::VALUE_AREA as usize..].to_vec())
}

/// A payment attempt that must be refused by the card check, as an attack outcome.
fn expect_refused(
    name: &'static str,
    attempt: Result<MachineReceipt, TerminalError>,
) -> AttackOutcome {
    match attempt {
        Err(TerminalError::Memcard(refusal @ MemcardRefusal::State(_))) => AttackOutcome {
            name,
            refused: true,
            detail: refusal.to_string(),
        },
        Err(other) => AttackOutcome {
            name,
            refused: false,
            detail: format!("refused for another reason than the card's state: {other}"),
        },
        Ok(receipt) => AttackOutcome {
            name,
            refused: false,
            detail: format!("the machine served {} from the card", receipt.amount),
        },
    }
}

/// A reader whose card is pulled out right after the card committed the value area of the
/// `after`-th UPDATE BINARY that touches it: the counter moved, the signature was never
/// written (the torn write of the words).
struct PulledAfterValueWrite<'a, R> {
    inner: &'a mut R,
    value_writes_left: usize,
    pulled: bool,
}

impl<R: CardReader> CardReader for PulledAfterValueWrite<'_, R> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        if self.pulled {
            return Err(ReaderError::NoCard);
        }
        let answer = self.inner.transmit_raw(apdu)?;
        let value_write = apdu.len() >= 4
            && apdu[..2] == [0xFF, 0xD6]
            && u16::from_be_bytes([apdu[2], apdu[3]]) == map::VALUE_AREA;
        if value_write {
            if self.value_writes_left == 0 {
                self.pulled = true;
                return Err(ReaderError::CardRemoved);
            }
            self.value_writes_left -= 1;
        }
        Ok(answer)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

/// Runs the memory-card scenario against `world`'s center, keeping cards and machine logs
/// under `dir`.
pub fn memory_cards(world: &mut World, dir: &Path) -> Result<MemcardShow, WorldError> {
    let mut show = MemcardShow::default();
    let mut rng = world.fork_rng();
    let clock = world.clock();
    let charge_sam = install_sam(&mut world.center, Role::ChargeMachine, clock, &mut rng)?;
    let mut charger = Charger::new(
        charge_sam,
        machine_store(dir, "charge-machine-1")?,
        world.clock(),
    )?;
    let mut payers = Vec::new();
    for index in 1..=2 {
        let clock = world.clock();
        let sam = install_sam(&mut world.center, Role::PaymentMachine, clock, &mut rng)?;
        let mut payer = Payer::new(
            sam,
            machine_store(dir, &format!("payment-machine-{index}"))?,
            world.clock(),
        )?;
        payer.machine_mut().update_lists(&mut world.center)?;
        payers.push(payer);
    }
    charger.machine_mut().update_lists(&mut world.center)?;
    show.lines.push(format!(
        "Charge machine {} and payment machines {} and {} installed (their SAMs certified by the center)",
        charger.machine().device_id(),
        payers[0].machine().device_id(),
        payers[1].machine().device_id()
    ));
    show.float_granted = charger.refill_float(&mut world.center, minor(20_000)?)?;
    show.lines.push(format!(
        "The center granted the charge machine a float of {} (area 23A of its SAM)",
        show.float_granted
    ));

    // Three cards: two for their holders (one in the clear, one sealed, claim 4) and one
    // that an attacker works on with a storage-card reader.
    let cards_dir = dir.join("cards");
    std::fs::create_dir_all(&cards_dir)
        .map_err(|e| WorldError::Other(format!("{}: {e}", cards_dir.display())))?;
    let mut readers = Vec::new();
    for (number, value, format) in [
        (1u8, 5_000u64, ValueFormat::Plain),
        (2, 3_000, ValueFormat::Sealed),
        (3, 2_000, ValueFormat::Plain),
    ] {
        let mut reader = new_card(&cards_dir, number)?;
        let link: &mut dyn MemcardLink = &mut world.center;
        let receipt = charger.charge(&mut reader, minor(value)?, format, Some(link))?;
        show.lines.push(format!(
            "Memory card {} charged with {} ({}), counter now {}",
            receipt.card_id,
            receipt.amount,
            if format == ValueFormat::Sealed {
                "date and amount sealed under the writer's key, claim 4"
            } else {
                "date and amount in the clear, signed with the card ID and counter"
            },
            receipt.counter_after
        ));
        show.writes.push(MemcardWrite {
            machine: "charge-machine-1".into(),
            receipt,
        });
        readers.push(reader);
    }

    // Spent at two payment machines; each re-signs the card with its own key.
    for (payer, card, value) in [
        (0usize, 0usize, 1_200u64),
        (1, 0, 800),
        (1, 1, 500),
        (0, 2, 300),
    ] {
        let link: &mut dyn MemcardLink = &mut world.center;
        let receipt = payers[payer].pay(&mut readers[card], minor(value)?, Some(link))?;
        show.lines.push(format!(
            "Payment machine {} took {} from memory card {}: {} -> {}",
            payers[payer].machine().device_id(),
            receipt.amount,
            receipt.card_id,
            receipt.balance_before,
            receipt.balance_after
        ));
        show.writes.push(MemcardWrite {
            machine: format!("payment-machine-{}", payer + 1),
            receipt,
        });
    }

    // A torn payment: card 1 is pulled out after its value area and counter changed, before
    // the machine wrote its signature. Presented again, the machine finishes it from its log.
    {
        let link: &mut dyn MemcardLink = &mut world.center;
        let mut pulled = PulledAfterValueWrite {
            inner: &mut readers[0],
            value_writes_left: 0,
            pulled: false,
        };
        let torn = payers[0].pay(&mut pulled, minor(400)?, Some(link));
        show.lines.push(format!(
            "Memory card {} pulled out in the middle of a payment of {}: {}",
            card_id(1),
            minor(400)?,
            match &torn {
                Ok(_) => "the payment completed".to_string(),
                Err(error) => format!("{error}"),
            }
        ));
        let elsewhere = {
            let link: &mut dyn MemcardLink = &mut world.center;
            payers[1].pay(&mut readers[0], minor(100)?, Some(link))
        };
        show.lines.push(format!(
            "  at the other payment machine the card is refused: {}",
            match &elsewhere {
                Ok(_) => "it was not".to_string(),
                Err(error) => error.to_string(),
            }
        ));
        if elsewhere.is_ok() {
            return Err(WorldError::Other(
                "a card with a torn write was accepted by another machine".into(),
            ));
        }
        let link: &mut dyn MemcardLink = &mut world.center;
        let receipt = payers[0].pay(&mut readers[0], minor(100)?, Some(link))?;
        show.lines.push(format!(
            "  back at the machine that was writing, it finishes the torn payment from its log ({:?}) and takes {} more: balance {}",
            receipt.repairs, receipt.amount, receipt.balance_after
        ));
        show.repairs.extend(receipt.repairs.iter().cloned());
        show.writes.push(MemcardWrite {
            machine: "payment-machine-1".into(),
            receipt,
        });
    }

    // A payment torn at one machine, the card taken to another: the writing machine reports
    // its pending write at its next sync, the center holds it as evidence, and the other
    // machine finishes the card from it. The next record of the card shows the write landed,
    // so the center counts it, and the writing machine marks it done at its next report.
    {
        let link: &mut dyn MemcardLink = &mut world.center;
        let mut pulled = PulledAfterValueWrite {
            inner: &mut readers[1],
            value_writes_left: 0,
            pulled: false,
        };
        let torn = payers[1].pay(&mut pulled, minor(300)?, Some(link));
        if torn.is_ok() {
            return Err(WorldError::Other(
                "a pulled card completed its payment".into(),
            ));
        }
        let reported = payers[1].machine_mut().report_pending(&mut world.center)?;
        show.lines.push(format!(
            "Memory card {} pulled out in the middle of a payment of {} at payment machine {}; at its sync the machine reports the pending write and the center holds it as evidence ({} held)",
            card_id(2),
            minor(300)?,
            payers[1].machine().device_id(),
            reported.held
        ));
        let link: &mut dyn MemcardLink = &mut world.center;
        let receipt = payers[0].pay(&mut readers[1], minor(200)?, Some(link))?;
        show.lines.push(format!(
            "  at payment machine {} the card is restored from the center's evidence ({:?}) and pays {}: balance {}",
            payers[0].machine().device_id(),
            receipt.repairs,
            receipt.amount,
            receipt.balance_after
        ));
        show.repairs.extend(receipt.repairs.iter().cloned());
        show.writes.push(MemcardWrite {
            machine: "payment-machine-1".into(),
            receipt,
        });
        payers[0].machine_mut().upload_writes(&mut world.center)?;
        let settled = payers[1].machine_mut().report_pending(&mut world.center)?;
        show.lines.push(format!(
            "  the restoring machine's upload shows the torn payment landed: the center counts it, and the writing machine's next report marks it done ({} landed)",
            settled.landed
        ));
        if settled.landed != 1 {
            return Err(WorldError::Other(
                "the center did not settle a torn payment its next record showed landed".into(),
            ));
        }
    }

    // The attacks, each on the attacker's own card 3 or with a copy of card 1's image.
    let before_payment = writable_areas(&mut readers[2])?;
    {
        let link: &mut dyn MemcardLink = &mut world.center;
        let receipt = payers[1].pay(&mut readers[2], minor(500)?, Some(link))?;
        show.writes.push(MemcardWrite {
            machine: "payment-machine-2".into(),
            receipt,
        });
    }
    let after_payment = writable_areas(&mut readers[2])?;
    let mut fourth = new_card(&cards_dir, 4)?;
    write_bytes(&mut fourth, map::VALUE_AREA, &after_payment)?;
    let copied = {
        let link: &mut dyn MemcardLink = &mut world.center;
        payers[0].pay(&mut fourth, minor(100)?, Some(link))
    };
    show.attacks.push(expect_refused(
        "memory card image copied onto another card ID",
        copied,
    ));

    write_bytes(&mut readers[2], map::VALUE_AREA, &before_payment)?;
    let restored = {
        let link: &mut dyn MemcardLink = &mut world.center;
        payers[0].pay(&mut readers[2], minor(100)?, Some(link))
    };
    show.attacks.push(expect_refused(
        "memory card older image written back",
        restored,
    ));

    let mut edited = after_payment.clone();
    // The amount's lowest byte: format byte, 4 bytes of date, then 8 bytes of amount.
    edited[12] = edited[12].wrapping_add(0x40);
    write_bytes(
        &mut readers[2],
        map::VALUE_AREA,
        &edited[..map::VALUE_AREA_LEN],
    )?;
    let edited_result = {
        let link: &mut dyn MemcardLink = &mut world.center;
        payers[1].pay(&mut readers[2], minor(100)?, Some(link))
    };
    show.attacks.push(expect_refused(
        "memory card amount edited by hand",
        edited_result,
    ));

    // Card 1's signature over card 4's (copied) value area: signatures name their card.
    let card1 = PresentedCard::read(&mut readers[0])?;
    write_bytes(&mut fourth, map::SIGNATURE_AREA, card1.signature_bytes())?;
    let borrowed = {
        let link: &mut dyn MemcardLink = &mut world.center;
        payers[1].pay(&mut fourth, minor(100)?, Some(link))
    };
    show.attacks.push(expect_refused(
        "memory card signature copied from another card",
        borrowed,
    ));
    for attack in &show.attacks {
        show.lines.push(format!(
            "Attack: {} -> {}",
            attack.name,
            if attack.refused {
                "refused"
            } else {
                "NOT refused"
            }
        ));
    }

    // Every machine uploads its records; the center's books cover them.
    let mut uploaded = 0;
    uploaded += charger
        .machine_mut()
        .upload_writes(&mut world.center)?
        .stored;
    for payer in &mut payers {
        uploaded += payer.machine_mut().upload_writes(&mut world.center)?.stored;
    }
    show.lines.push(format!(
        "The machines uploaded {uploaded} write records to the center"
    ));

    for (reader, number) in readers.iter_mut().zip(1u8..).chain([(&mut fourth, 4u8)]) {
        let presented = PresentedCard::read(reader)?;
        let content = presented.content()?;
        let checked = payers[0]
            .machine()
            .sam()
            .check_memcard_content(&content, world.center.today());
        show.cards.push(MemcardSummary {
            card_id: card_id(number),
            counter: presented.counter(),
            balance: checked.ok().map(|state| state.balance()),
            sealed: matches!(
                content.value_area,
                valuecard_core::messages::memcard::ValueArea::Sealed { .. }
            ),
        });
    }
    Ok(show)
}
