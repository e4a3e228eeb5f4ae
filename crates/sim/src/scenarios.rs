//! The center's controls shown end to end (seed 003, Figs. 9-12): a cloned card detected and
//! refused everywhere, a lost card blocked, a stolen terminal's later cards refused while its
//! earlier ones stay good.

use valuecard_card::eeprom::{Eeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{CenterError, ListReason};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_terminal::TerminalError;

use crate::{read_purse, Storage, World, WorldError};

fn amount(minor: u64) -> Result<Amount, WorldError> {
    Amount::new(minor).map_err(|e| WorldError::Other(e.to_string()))
}

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioOutcome {
    pub name: &'static str,
    /// Whether the system behaved as the seed requires.
    pub held: bool,
    pub detail: String,
}

/// Uploads every terminal's purchases, then brings every terminal's lists up to date (so a
/// clone found in one terminal's upload reaches all of them). A terminal the center no
/// longer knows (one reported stolen) is left out. Returns the clones found and how many
/// terminals are up to date.
pub fn sync_all(world: &mut World) -> Result<(Vec<CardId>, usize), WorldError> {
    let mut clones = Vec::new();
    let center = &mut world.center;
    let mut active = Vec::new();
    for (index, terminal) in world.terminals.iter_mut().enumerate() {
        match terminal.upload_usage(&mut *center) {
            Ok(receipt) => {
                clones.extend(receipt.clones_detected);
                active.push(index);
            }
            Err(TerminalError::Center(CenterError::UnknownDevice(_))) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    for index in &active {
        world.terminals[*index].update_lists(&mut *center)?;
    }
    Ok((clones, active.len()))
}

/// A card copied bit for bit (its image read out of the chip) spends the same value twice.
/// Run as a drill with its own center so the copy's spending, which is value created by the
/// attacker, stays out of the main reconciliation. Returns the outcome and the clones found.
pub fn cloned_card_drill(today: Date) -> Result<(ScenarioOutcome, usize), WorldError> {
    let mut world = World::create(Storage::Memory, 2, today)?;
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let card = world.manufacture_card(memory.clone())?;
    let mut original = InProcessReader::with_card("original", card);
    let card_id = world.issue(&mut original, amount(5_000)?)?;
    let copy = MemoryEeprom::new(EEPROM_SIZE);
    copy.restore(&memory.snapshot());
    let mut clone = InProcessReader::with_card("clone", Card::open(copy, world.fork_rng())?);
    world.terminals[0].purchase(&mut original, amount(1_000)?)?;
    world.terminals[1].purchase(&mut clone, amount(1_500)?)?;
    let (clones, _) = sync_all(&mut world)?;
    let mut refusals = 0;
    for terminal in &mut world.terminals {
        for reader in [&mut original, &mut clone] {
            if let Err(TerminalError::CardListed {
                reason: ListReason::Cloned,
                ..
            }) = terminal.purchase(reader, amount(1)?)
            {
                refusals += 1;
            }
        }
    }
    let load_refused = world.load(&mut original, amount(100)?).is_err();
    let held = clones == vec![card_id] && refusals == 4 && load_refused;
    let detail = format!(
        "card {card_id} spent twice from one state (10.00 by the original, 15.00 by its copy); the center found it \
         in the uploads, listed it, and both copies were refused at both terminals ({refusals}/4) and for loads"
    );
    Ok((
        ScenarioOutcome {
            name: "cloned card detected and refused everywhere",
            held,
            detail,
        },
        clones.len(),
    ))
}

/// The holder reports the card lost; after their next list update every terminal refuses it.
pub fn lost_card<E: Eeprom, R: rand_core::CryptoRngCore>(
    world: &mut World,
    reader: &mut InProcessReader<E, R>,
) -> Result<ScenarioOutcome, WorldError> {
    let card_id = read_purse(reader)?.card_id;
    world.center.report_card(&card_id, ListReason::Lost)?;
    let (_, updated) = sync_all(world)?;
    let mut refusals = 0;
    for terminal in &mut world.terminals {
        if let Err(TerminalError::CardListed {
            reason: ListReason::Lost,
            ..
        }) = terminal.purchase(reader, amount(1)?)
        {
            refusals += 1;
        }
    }
    let load_refused = world.load(reader, amount(100)?).is_err();
    let held = updated > 0 && refusals == updated && load_refused;
    Ok(ScenarioOutcome {
        name: "lost card blocked",
        held,
        detail: format!(
            "card {card_id} reported lost; refused at {refusals}/{updated} terminals after their list update, and for loads"
        ),
    })
}

/// Terminal `stolen` reports its stamp and sells to `before`, and is stolen and reported
/// the same day. The thief never advances or reports anything: a day passes on the world's
/// calendar, the stolen terminal's SAM advances its own chain, and the thief sells to
/// `after`. Terminal 0 (or 1), after its list update, accepts `before` and refuses `after`.
/// Returns the outcome and the number of refusals.
pub fn stolen_terminal(
    world: &mut World,
    stolen: usize,
    before: &mut impl CardReader,
    after: &mut impl CardReader,
) -> Result<(ScenarioOutcome, usize), WorldError> {
    let stolen_id = world.terminals[stolen].device_id();
    // The operator's daily routine while the terminal is still in honest hands.
    world.terminals[stolen].advance_stamp(&mut world.center)?;
    world.terminals[stolen].purchase(before, amount(120)?)?;
    sync_all(world)?;
    let listed_at = world.center.report_stolen_terminal(stolen_id)?;
    // The thief does nothing to the stamp; only time passes.
    world.pass_days(1);
    world.terminals[stolen].purchase(after, amount(80)?)?;
    let center = &mut world.center;
    for (index, terminal) in world.terminals.iter_mut().enumerate() {
        if index != stolen {
            terminal.update_lists(&mut *center)?;
        }
    }
    let honest = if stolen == 0 { 1 } else { 0 };
    let accepted = world.terminals[honest]
        .purchase(before, amount(10)?)
        .is_ok();
    let refused = matches!(
        world.terminals[honest].purchase(after, amount(10)?),
        Err(TerminalError::WrittenByStolenTerminal { .. })
    );
    Ok((
        ScenarioOutcome {
            name: "stolen terminal",
            held: accepted && refused,
            detail: format!(
                "terminal {stolen_id} reported stolen at stamp {listed_at}: a card it wrote before was {}, a card it \
                 wrote after the theft was {}",
                if accepted { "accepted" } else { "REFUSED" },
                if refused { "refused" } else { "ACCEPTED" }
            ),
        },
        usize::from(refused),
    ))
}

/// Credit mode (Figs. 13-17): card `a` gets its credit function, its holder registers a
/// password with the setting number and is served twice; the center's statement for the
/// month sums the card-signed records. Card `b`'s holder registers a password and then types
/// a wrong one three times: the credit function locks, and the right password no longer
/// opens it. Returns both outcomes and the statement.
pub fn credit_mode(
    world: &mut World,
    a: &mut impl CardReader,
    b: &mut impl CardReader,
) -> Result<
    (
        ScenarioOutcome,
        ScenarioOutcome,
        valuecard_center::credit::Statement,
    ),
    WorldError,
> {
    use valuecard_core::messages::credit::Password;
    let password = |text: &str| Password::parse(text).map_err(|e| WorldError::Other(e.to_string()));
    let setting_a = world.enable_credit(a, None)?;
    let session = world.terminals[0].open_credit(a)?;
    world.terminals[0].register_password(a, &session, &setting_a, &password("4321")?)?;
    world.terminals[0].credit_service(a, &password("4321")?, amount(1_200)?)?;
    world.terminals[0].credit_service(a, &password("4321")?, amount(350)?)?;
    world.upload_service_records()?;
    let month = {
        let (year, month, _) = world.today().to_ymd();
        format!("{year:04}-{month:02}")
    };
    let statement = world.center.statement(&month)?;
    let billed = statement
        .cards
        .iter()
        .find(|card| Some(card.card_id) == read_purse(a).ok().map(|s| s.card_id));
    let statement_held =
        billed.is_some_and(|card| card.total_minor == 1_550 && card.lines.len() == 2);
    let statement_outcome = ScenarioOutcome {
        name: "monthly statement",
        held: statement_held,
        detail: format!(
            "two services (12.00 and 3.50) signed by the card with its password verified; the center's statement for \
             {month} charges the card {}",
            billed.map_or("nothing".to_owned(), |card| Amount::new(card.total_minor).map_or(String::new(), |a| a.to_string()))
        ),
    };

    let setting_b = world.enable_credit(b, None)?;
    let session = world.terminals[0].open_credit(b)?;
    world.terminals[0].register_password(b, &session, &setting_b, &password("2468")?)?;
    let mut answers = Vec::new();
    for wrong in ["1111", "2222", "3333"] {
        answers.push(
            match world.terminals[0].credit_service(b, &password(wrong)?, amount(100)?) {
                Err(TerminalError::WrongPassword { tries_left }) => {
                    format!("wrong, {tries_left} left")
                }
                Err(TerminalError::CreditBlocked) => "locked".to_owned(),
                other => format!("{other:?}"),
            },
        );
    }
    let right_refused = matches!(
        world.terminals[0].credit_service(b, &password("2468")?, amount(100)?),
        Err(TerminalError::CreditBlocked)
    );
    let lock_outcome = ScenarioOutcome {
        name: "password locked after three wrong tries",
        held: answers.last().is_some_and(|answer| answer == "locked") && right_refused,
        detail: format!(
            "three wrong passwords: {}; the right password afterwards: {}",
            answers.join(", "),
            if right_refused {
                "refused (locked)"
            } else {
                "ACCEPTED"
            }
        ),
    };
    Ok((lock_outcome, statement_outcome, statement))
}
