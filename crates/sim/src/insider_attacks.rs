//! Attacks by insiders, the ones an operator of offline value fears most: the owner of one
//! card's chip (who can read and rewrite its image, key included), a dishonest dispenser, a
//! dishonest terminal, and someone between a dispenser and a card. Each runs in its own
//! world, so the value an attacker tries to create stays out of the main reconciliation,
//! and each is judged by its refusal **and** by the books: no value created, and what the
//! center cannot prevent it detects (the card listed, an alert raised).

use rand_core::OsRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::state::PersistentState;
use valuecard_card::Card;
use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{
    CenterError, CenterLink, ListReason, LoadApproval, LoadRequest, LoadSettlement, UsageUpload,
};
use valuecard_core::messages::purse::{ins, CreditCommand, InitializeLoad, LoadOffer};
use valuecard_core::money::Amount;
use valuecard_core::time::{Date, FixedClock};
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_terminal::card_commands::{proprietary, select};
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::TerminalError;

use crate::attacks::AttackOutcome;
use crate::{
    install_sam, last_transaction, read_purse, LosingAnswer, Storage, World, WorldError, WorldRng,
};

type MemoryReader = InProcessReader<MemoryEeprom, WorldRng>;

fn other(error: impl std::fmt::Display) -> WorldError {
    WorldError::Other(error.to_string())
}

fn amount(minor: u64) -> Result<Amount, WorldError> {
    Amount::new(minor).map_err(other)
}

/// A world with two terminals and a card issued with `initial`.
fn world_with_card(today: Date, initial: u64) -> Result<(World, MemoryReader, CardId), WorldError> {
    let mut world = World::create(Storage::Memory, 2, today)?;
    let card = world.manufacture_card(MemoryEeprom::new(EEPROM_SIZE))?;
    let mut reader = InProcessReader::with_card("insider", card);
    let card_id = world.issue(&mut reader, amount(initial)?)?;
    Ok((world, reader, card_id))
}

/// A card whose state is `state` on fresh memory: a copy of a chip, or its edited image.
fn card_from_state(
    world: &mut World,
    state: PersistentState,
    name: &str,
) -> Result<MemoryReader, WorldError> {
    let card = Card::with_state(MemoryEeprom::new(EEPROM_SIZE), state, world.fork_rng())?;
    Ok(InProcessReader::with_card(name, card))
}

fn state_of(reader: &MemoryReader) -> Result<PersistentState, WorldError> {
    Ok(reader
        .card()
        .ok_or_else(|| other("no card in the reader"))?
        .state()
        .clone())
}

fn listed(world: &mut World, card: CardId) -> Result<Option<ListReason>, WorldError> {
    Ok(world.center.listed_reason(&card)?)
}

/// What the center counts as value put on cards: committed loads (issue and recharge).
fn loaded(world: &mut World) -> Result<u64, WorldError> {
    let totals = world.center.load_totals()?;
    Ok(totals.issued + totals.loaded)
}

/// The owner of a chip rewrites its image: the balance raised, the checksum fixed, the key
/// kept. A small load would make the center sign the inflated balance plus the load.
pub fn edited_image_mint(today: Date) -> Result<AttackOutcome, WorldError> {
    let (mut world, reader, card_id) = world_with_card(today, 5_000)?;
    let PersistentState::Personalized(mut purse) = state_of(&reader)? else {
        return Err(other("the card must be personalized"));
    };
    purse.balance = amount(1_000_000)?;
    let mut edited = card_from_state(&mut world, PersistentState::Personalized(purse), "edited")?;
    let before = loaded(&mut world)?;
    let outcome = world.load(&mut edited, amount(100)?);
    let after = loaded(&mut world)?;
    let reason = listed(&mut world, card_id)?;
    let balance = read_purse(&mut edited)?.balance;
    let refused = matches!(
        outcome,
        Err(WorldError::Terminal(TerminalError::Center(
            CenterError::CardBlocked(_)
        )))
    ) && before == after
        && reason == Some(ListReason::Tampered)
        && balance == amount(1_000_000)?;
    Ok(AttackOutcome {
        name: "edited card image tries to mint through a load",
        refused,
        detail: format!(
            "center answered {}; card listed as {}; loads booked {before} -> {after}",
            describe(&outcome),
            reason.map_or("nothing", ListReason::as_str)
        ),
    })
}

/// The owner copies the chip, takes a load on one copy and pulls it as CREDIT commits (the
/// load stays pending), then spends the state the load started from on the other copy.
pub fn pending_load_clone(today: Date) -> Result<AttackOutcome, WorldError> {
    let (mut world, mut original, card_id) = world_with_card(today, 5_000)?;
    let mut copy = card_from_state(&mut world, state_of(&original)?, "copy")?;
    let mut losing = LosingAnswer {
        inner: &mut original,
        ins: ins::CREDIT,
        delivered: true,
    };
    let pending = world
        .dispenser
        .load(&mut losing, &mut world.center, amount(3_000)?);
    world.terminals[0].purchase(&mut copy, amount(4_000)?)?;
    world.terminals[0].upload_usage(&mut world.center)?;
    world.terminals[1].purchase(&mut original, amount(7_000)?)?;
    world.terminals[1].upload_usage(&mut world.center)?;
    let reason = listed(&mut world, card_id)?;
    let totals = world.center.load_totals()?;
    let refused = matches!(pending, Err(TerminalError::LoadInDoubt { .. }))
        && reason == Some(ListReason::Cloned)
        && totals.loaded == 3_000
        && totals.in_flight_count == 0;
    Ok(AttackOutcome {
        name: "copied card hides behind a pending load",
        refused,
        detail: format!(
            "card listed as {}; the load is booked as applied ({} loaded, {} in flight)",
            reason.map_or("nothing", ListReason::as_str),
            totals.loaded,
            totals.in_flight_count
        ),
    })
}

/// A load whose answer was lost is pending. The holding dispenser reports it cancelled with
/// the card's genuine evidence gathered before it sent CREDIT (over its own challenge), and
/// another dispenser tries to settle it with the card's real evidence. Only the card's own
/// evidence settles it, fresh where freshness matters, and only for its holder.
pub fn dishonest_dispenser(today: Date) -> Result<AttackOutcome, WorldError> {
    let (mut world, mut reader, card_id) = world_with_card(today, 5_000)?;
    let own_challenge = random_array(&mut OsRng);
    let before_credit = last_transaction(&mut reader, own_challenge)?;
    let mut losing = LosingAnswer {
        inner: &mut reader,
        ins: ins::CREDIT,
        delivered: true,
    };
    let Err(TerminalError::LoadInDoubt { load_number }) =
        world
            .dispenser
            .load(&mut losing, &mut world.center, amount(700)?)
    else {
        return Err(other("the load answer was not lost"));
    };
    let mut rng = world.fork_rng();
    let rogue_sam = install_sam(
        &mut world.center,
        Role::Dispenser,
        Box::new(FixedClock(today)),
        &mut rng,
    )?;
    let rogue = Dispenser::new(rogue_sam, Box::new(FixedClock(today)), world.fork_rng())?;
    let challenge = random_array(&mut OsRng);
    let evidence = last_transaction(&mut reader, challenge)?;
    let foreign = world.center.settle_load(&LoadSettlement {
        card_id,
        dispenser_id: rogue.device_id(),
        load_number,
        challenge,
        evidence: evidence.clone(),
    });
    let lie = world.center.settle_load(&LoadSettlement {
        card_id,
        dispenser_id: world.dispenser.device_id(),
        load_number,
        challenge: own_challenge,
        evidence: before_credit,
    });
    let still_pending = world.center.pending_loads()?.len() == 1;
    let refused = foreign == Err(CenterError::NotAuthorized(rogue.device_id()))
        && lie.is_err()
        && still_pending;
    Ok(AttackOutcome {
        name: "dishonest dispenser settles a load without the card's evidence",
        refused,
        detail: format!(
            "another dispenser: {}; the holder's evidence from before CREDIT: {}; load still in flight: {still_pending}",
            describe(&foreign),
            describe(&lie)
        ),
    })
}

/// A terminal uploads a sale it invented for a genuine card at the card's current state,
/// signed by its own SAM: the center must not believe it, nor take the genuine sale that
/// follows for a clone.
pub fn terminal_invents_a_sale(today: Date) -> Result<AttackOutcome, WorldError> {
    let (mut world, mut reader, card_id) = world_with_card(today, 5_000)?;
    world.terminals[0].purchase(&mut reader, amount(300)?)?;
    let record = world.terminals[0]
        .store()
        .pending_uploads(1)?
        .pop()
        .ok_or_else(|| other("no purchase stored"))?;
    let genuine = valuecard_terminal::payment::usage_item(&record)
        .ok_or_else(|| other("the purchase has no usage item"))?;
    let terminal_id = world.terminals[0].device_id();
    let mut invented = genuine.clone();
    invented.terminal_sequence += 1_000;
    invented.challenge_terminal = random_array(&mut OsRng);
    invented.amount = amount(5_000)?;
    invented.amount_max = amount(5_000)?;
    invented.balance_after = Amount::ZERO;
    // The terminal's key, copied out of its SAM: its SAM would sign only purchases it takes
    // part in, so the owner of a dishonest terminal signs with the key itself.
    let terminal_key = world.terminals[0].sam().extract_signing_key();
    invented.terminal_signature = terminal_key.sign(&invented.commit(terminal_id).signed_message());
    let forged = world.center.ingest_usage(&UsageUpload {
        terminal_id,
        items: vec![invented],
    })?;
    let honest = world.center.ingest_usage(&UsageUpload {
        terminal_id,
        items: vec![genuine],
    })?;
    let reason = listed(&mut world, card_id)?;
    let refused = forged.stored == 0
        && forged.refused.len() == 1
        && honest.stored == 1
        && honest.clones_detected.is_empty()
        && reason.is_none();
    Ok(AttackOutcome {
        name: "terminal invents a sale and frames the card",
        refused,
        detail: format!(
            "invented sale: {}; the genuine sale after it: stored {}, clones {}",
            forged
                .refused
                .first()
                .map_or("stored".to_owned(), |(_, why)| format!("refused, {why}")),
            honest.stored,
            honest.clones_detected.len()
        ),
    })
}

/// INITIALIZE LOAD on the card, the center's real approval for it.
fn approved_load(
    world: &mut World,
    reader: &mut MemoryReader,
    card_id: CardId,
    value: Amount,
) -> Result<LoadApproval, WorldError> {
    let dispenser_id = world.dispenser.device_id();
    let challenge_dispenser = random_array(&mut OsRng);
    let request = InitializeLoad {
        challenge_dispenser,
        amount: value,
        dispenser_id,
    };
    send(reader, &select())?;
    let response = send(reader, &proprietary(ins::INITIALIZE_LOAD, request.encode()))?;
    let offer = LoadOffer::decode(&response.data).map_err(other)?;
    Ok(world.center.authorize_load(&LoadRequest {
        card_id,
        dispenser_id,
        challenge_dispenser,
        amount: value,
        offer,
    })?)
}

fn credit_for(approval: &LoadApproval, value: Amount) -> CreditCommand {
    CreditCommand {
        amount: value,
        balance_after: approval.balance_after,
        load_number: approval.load_number,
        date: approval.date,
        signature: approval.signature,
        mac: approval.mac,
        transfer_keys: None,
    }
}

fn send(
    reader: &mut impl CardReader,
    command: &valuecard_core::apdu::Command,
) -> Result<valuecard_core::apdu::Response, WorldError> {
    reader
        .exchange(command)
        .map_err(|error| WorldError::Terminal(error.into()))
}

/// Forged load authorizations that a real attacker can build: the center's genuine
/// authorization from another session (replayed into a new one), a genuine signature with
/// a MAC that is not the card's, and a card offer whose balance was raised on the way to
/// the center.
pub fn forged_load_authorizations(today: Date) -> Result<AttackOutcome, WorldError> {
    let (mut world, mut reader, card_id) = world_with_card(today, 5_000)?;
    let value = amount(400)?;
    let before = read_purse(&mut reader)?;
    // 1. A real approval for session one, sent inside session two.
    let first = approved_load(&mut world, &mut reader, card_id, value)?;
    let _second = approved_load(&mut world, &mut reader, card_id, value)?;
    let replayed = send(
        &mut reader,
        &proprietary(ins::CREDIT, credit_for(&first, value).encode()),
    )?;
    // 2. The current session's real signature, with a MAC that is not under the card's key.
    let third = approved_load(&mut world, &mut reader, card_id, value)?;
    let mut wrong_mac = credit_for(&third, value);
    wrong_mac.mac[0] ^= 0x01;
    let bad_mac = send(&mut reader, &proprietary(ins::CREDIT, wrong_mac.encode()))?;
    // 3. The card's offer with its balance raised between the dispenser and the center.
    let dispenser_id = world.dispenser.device_id();
    let challenge_dispenser = random_array(&mut OsRng);
    let request = InitializeLoad {
        challenge_dispenser,
        amount: value,
        dispenser_id,
    };
    send(&mut reader, &select())?;
    let response = send(
        &mut reader,
        &proprietary(ins::INITIALIZE_LOAD, request.encode()),
    )?;
    let mut offer = LoadOffer::decode(&response.data).map_err(other)?;
    offer.balance = offer.balance.checked_add(amount(100_000)?).map_err(other)?;
    let inflated = world.center.authorize_load(&LoadRequest {
        card_id,
        dispenser_id,
        challenge_dispenser,
        amount: value,
        offer,
    });
    // The approvals that never reached the card are settled from its evidence.
    let pending = world.center.pending_loads()?;
    for load in &pending {
        world
            .dispenser
            .settle_pending_load(&mut reader, &mut world.center, load.load_number)?;
    }
    let after = read_purse(&mut reader)?;
    let totals = world.center.load_totals()?;
    let refused = replayed.sw == StatusWord::SECURITY_STATUS_NOT_SATISFIED
        && bad_mac.sw == StatusWord::SECURITY_STATUS_NOT_SATISFIED
        && inflated == Err(CenterError::BadCardSignature)
        && (before.balance, before.counter) == (after.balance, after.counter)
        && totals.in_flight_count == 0
        && totals.loaded == 0;
    Ok(AttackOutcome {
        name: "forged load authorizations",
        refused,
        detail: format!(
            "another session's approval: {}; wrong MAC: {}; raised offer: {}; {} approvals settled as cancelled",
            replayed.sw,
            bad_mac.sw,
            describe(&inflated),
            pending.len()
        ),
    })
}

/// A thief takes a terminal and never advances its stamp, hoping to sign every later card
/// at the count the center listed. The terminal's SAM advances its chain on its own clock
/// (one step a day), so a card it writes a day after the theft carries a later count and
/// every synced terminal refuses it, while a card it wrote before stays good.
pub fn thief_never_advances_the_stamp(today: Date) -> Result<AttackOutcome, WorldError> {
    let (mut world, mut before, _) = world_with_card(today, 5_000)?;
    let card = world.manufacture_card(MemoryEeprom::new(EEPROM_SIZE))?;
    let mut after = InProcessReader::with_card("after", card);
    world.issue(&mut after, amount(5_000)?)?;
    let (outcome, refusals) =
        crate::scenarios::stolen_terminal(&mut world, 1, &mut before, &mut after)?;
    Ok(AttackOutcome {
        name: "thief who never advances the stolen terminal's stamp",
        refused: outcome.held && refusals == 1,
        detail: outcome.detail,
    })
}

/// Every insider attack, each in its own world.
pub fn run_all(today: Date) -> Result<Vec<AttackOutcome>, WorldError> {
    Ok(vec![
        edited_image_mint(today)?,
        pending_load_clone(today)?,
        dishonest_dispenser(today)?,
        terminal_invents_a_sale(today)?,
        forged_load_authorizations(today)?,
        thief_never_advances_the_stamp(today)?,
    ])
}

fn describe<T: std::fmt::Debug, E: std::fmt::Display>(outcome: &Result<T, E>) -> String {
    match outcome {
        Ok(value) => format!("accepted ({value:?})"),
        Err(error) => format!("refused ({error})"),
    }
}
