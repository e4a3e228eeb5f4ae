//! Card-to-card transfer shown end to end (seed 000): value moved between the demo's cards
//! and spent at a terminal, a transfer-key rotation at the center reaching one card with a
//! load and the next card through a symmetric key update, an update-key rotation that makes
//! the next update take the public-key path; and every transfer attack, in a world of its
//! own so that its attempts stay out of the demo's reconciliation.

use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_core::messages::transfer::KeyUpdateMode;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_terminal::transfer::{KeyUpdate, TransferReceipt};

use crate::attacks::AttackOutcome;
use crate::transfer_attacks::{self, Spoil};
use crate::{Storage, World, WorldError};

fn amount(minor: u64) -> Result<Amount, WorldError> {
    Amount::new(minor).map_err(|e| WorldError::Other(e.to_string()))
}

/// What the transfer part of the demo did.
#[derive(Debug, Default)]
pub struct TransferShow {
    pub lines: Vec<String>,
    pub transfers: Vec<TransferReceipt>,
    pub key_updates: Vec<KeyUpdate>,
}

impl TransferShow {
    fn record(&mut self, receipt: TransferReceipt) {
        let mut line = format!(
            "Settlement terminal moved {} from card {} to card {}: balances now {} and {} ({} command pairs after the two SELECTs)",
            receipt.amount,
            receipt.source,
            receipt.destination,
            receipt.source_balance_after,
            receipt.destination_balance_after,
            receipt.command_pairs
        );
        if let Some(update) = receipt.key_update {
            line.push_str(&format!(
                "; card {} first took transfer key {} -> {} by the {} path",
                update.card,
                update.from_key_id,
                update.to_key_id,
                update.path.as_str()
            ));
            self.key_updates.push(update);
        }
        self.lines.push(line);
        self.transfers.push(receipt);
    }
}

/// Splits out two distinct readers.
fn pair<R>(readers: &mut [R], a: usize, b: usize) -> (&mut R, &mut R) {
    if a < b {
        let (low, high) = readers.split_at_mut(b);
        (&mut low[a], &mut high[0])
    } else {
        let (low, high) = readers.split_at_mut(a);
        (&mut high[0], &mut low[b])
    }
}

/// The demo's transfers over its four cards (`readers`, each holding value).
pub fn card_to_card<R: CardReader>(
    world: &mut World,
    readers: &mut [R],
) -> Result<TransferShow, WorldError> {
    let mut show = TransferShow::default();
    if readers.len() < 4 {
        return Err(WorldError::Other(
            "the transfer show needs four cards".into(),
        ));
    }
    // 1. Same key generation: four command pairs, then the received value is spent.
    let (a, b) = pair(readers, 0, 1);
    show.record(world.transfer(a, b, amount(2_000)?)?);
    let sale = world.terminals[0].purchase(&mut readers[1], amount(2_500)?)?;
    show.lines.push(format!(
        "Terminal {} sold {} to card {} from value that came card to card: balance {} -> {}",
        world.terminals[0].device_id(),
        sale.amount,
        sale.card_id,
        sale.balance_before,
        sale.balance_after
    ));
    // 2. The center rotates the transfer key; a load delivers it to card 3; card 4 takes
    //    it from card 3 under the update key both share (symmetric path).
    let generation = world.center.rotate_transfer_key()?;
    show.lines.push(format!(
        "Center rotated the transfer key to generation {generation} (cards accept it up to the limit they were given)"
    ));
    world.load(&mut readers[2], amount(1_000)?)?;
    show.lines.push(format!(
        "Card {} loaded with 10.00 and given transfer-key generation {generation} by the dispenser",
        crate::read_purse(&mut readers[2])?.card_id
    ));
    let (c, d) = pair(readers, 2, 3);
    show.record(world.transfer(c, d, amount(500)?)?);
    // 3. The center rotates the update key; card 1 receives it with a load; card 2, still
    //    on the old update key and the old transfer key, takes the new transfer key from
    //    card 1 sealed to its own certified key (public-key path, claim 14).
    let update = world.center.rotate_update_key()?;
    show.lines.push(format!(
        "Center rotated the update key to generation {update}"
    ));
    world.load(&mut readers[0], amount(1_000)?)?;
    let (a, b) = pair(readers, 0, 1);
    show.record(world.transfer(a, b, amount(750)?)?);
    let receipt = world.upload_transfers()?;
    show.lines.push(format!(
        "Settlement terminal uploaded its transfer reports: {} stored, {} refused",
        receipt.stored,
        receipt.refused.len()
    ));
    Ok(show)
}

type MemoryReader = InProcessReader<MemoryEeprom, crate::WorldRng>;

fn issued(world: &mut World, name: &str, value: u64) -> Result<MemoryReader, WorldError> {
    let card = world.manufacture_card(MemoryEeprom::new(EEPROM_SIZE))?;
    let mut reader = InProcessReader::with_card(name, card);
    world.issue(&mut reader, amount(value)?)?;
    Ok(reader)
}

/// Every transfer attack, in a world of its own.
pub fn attacks(today: Date) -> Result<Vec<AttackOutcome>, WorldError> {
    let mut world = World::create(Storage::Memory, 1, today)?;
    let mut cards = vec![
        issued(&mut world, "A", 5_000)?,
        issued(&mut world, "B", 1_000)?,
        issued(&mut world, "C", 500)?,
    ];
    let mut outcomes = Vec::new();
    {
        let [a, b, c] = cards.as_mut_slice() else {
            return Err(WorldError::Other("three cards expected".into()));
        };
        outcomes.push(transfer_attacks::replayed_value_message(&mut world, a, b)?);
        outcomes.push(transfer_attacks::value_message_to_third_card(
            &mut world, a, b, c,
        )?);
        outcomes.push(transfer_attacks::altered_value_message(
            &mut world, a, b, false,
        )?);
        outcomes.push(transfer_attacks::altered_value_message(
            &mut world, a, b, true,
        )?);
        outcomes.push(transfer_attacks::transfer_over_ceiling(&mut world, a, b)?);
        // Key updates between two cards on one generation: nothing newer to take.
        outcomes.push(transfer_attacks::key_update_attack(
            "key update to an identifier that is not newer",
            KeyUpdateMode::Symmetric,
            b,
            a,
            Spoil::Nothing,
            StatusWord::CONDITIONS_NOT_SATISFIED,
        )?);
    }
    // A newer generation reaches card A with a load; C stays on the old one.
    world.center.rotate_transfer_key()?;
    world.load(&mut cards[0], amount(100)?)?;
    {
        let [a, _b, c] = cards.as_mut_slice() else {
            return Err(WorldError::Other("three cards expected".into()));
        };
        outcomes.push(transfer_attacks::key_update_attack(
            "key update with a wrong random number",
            KeyUpdateMode::Symmetric,
            c,
            a,
            Spoil::WrongRandom,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        )?);
        outcomes.push(transfer_attacks::key_update_attack(
            "public-key key update with a forged signature",
            KeyUpdateMode::PublicKey,
            c,
            a,
            Spoil::ForgedSignature,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        )?);
        outcomes.push(transfer_attacks::forged_peer_certificate(c)?);
        outcomes.push(transfer_attacks::transfer_under_retired_key(
            &mut world, c, a,
        )?);
    }
    // Two more generations: card A is loaded again and holds one beyond what C (still on the
    // limit it was personalized with) may accept.
    world.center.rotate_transfer_key()?;
    world.center.rotate_transfer_key()?;
    world.load(&mut cards[0], amount(100)?)?;
    {
        let [a, _b, c] = cards.as_mut_slice() else {
            return Err(WorldError::Other("three cards expected".into()));
        };
        outcomes.push(transfer_attacks::key_update_attack(
            "key update above the card's upper limit",
            KeyUpdateMode::Symmetric,
            c,
            a,
            Spoil::Nothing,
            StatusWord::REFERENCE_DATA_NOT_USABLE,
        )?);
    }
    Ok(outcomes)
}
