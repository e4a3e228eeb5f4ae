//! `valuecard demo`: the whole system, end to end, in one data directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use valuecard_card::FileCard;
use valuecard_center::memcard::MemcardStatus;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_reader::InProcessReader;
use valuecard_sim::attacks::{self, AttackOutcome};
use valuecard_sim::insider_attacks;
use valuecard_sim::memcard_scenarios;
use valuecard_sim::scenarios::{self, ScenarioOutcome};
use valuecard_sim::transfer_scenarios;
use valuecard_sim::{card_path, read_purse, Storage, World, WorldError};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The data directory. A directory left by an earlier demo is replaced; any other
    /// non-empty directory is refused.
    #[arg(long, default_value = "valuecard-demo")]
    data: PathBuf,
    /// Print one JSON object instead of a readable account.
    #[arg(long)]
    json: bool,
}

const MARKER: &str = ".valuecard-demo";

type Reader = InProcessReader<valuecard_card::eeprom::FileEeprom, rand_core::OsRng>;

/// Makes `dir` ready for a run of `command`: an empty directory, or one an earlier run of
/// the same command left (marked with `marker`), which is cleared; any other is refused.
pub(crate) fn prepare_data_dir(dir: &Path, marker: &str, command: &str) -> Result<(), String> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            if !dir.join(marker).exists() {
                return Err(format!(
                    "{} exists and was not made by `valuecard {command}`; choose another --data directory",
                    dir.display()
                ));
            }
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir.join("cards"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(dir.join(marker), format!("made by valuecard {command}\n"))
        .map_err(|e| e.to_string())
}

fn minor(value: u64) -> Amount {
    // Every demo amount is a literal far below the purse maximum.
    Amount::new(value).unwrap_or(Amount::ZERO)
}

struct Account {
    lines: Vec<String>,
    json: bool,
}

impl Account {
    fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        if !self.json {
            println!("{line}");
        }
        self.lines.push(line);
    }
}

pub fn run(args: DemoArgs) -> Result<ExitCode, String> {
    crate::device_sam::SamChoice::refuse_token("demo", "its devices")?;
    prepare_data_dir(&args.data, MARKER, "demo")?;
    let mut out = Account {
        lines: Vec::new(),
        json: args.json,
    };
    let outcome = run_in(&args.data, &mut out).map_err(|error| error.to_string())?;
    let DemoReport {
        reconciliation,
        attacks,
        scenarios,
        clones_detected,
        stolen_terminal_refusals,
        statements,
        cards,
        purchases,
        transfers,
        key_updates,
        memory_cards,
        memory_cards_reconciled,
        online_purchases,
        online_charges,
        migrations,
        migrations_held,
    } = outcome;
    let all_refused = attacks.iter().all(|attack| attack.refused);
    let all_held = scenarios.iter().all(|scenario| scenario.held);
    if args.json {
        let value = serde_json::json!({
            "data_dir": args.data.display().to_string(),
            "issued": reconciliation.issued,
            "loaded": reconciliation.loaded,
            "spent": reconciliation.spent,
            "spent_online": reconciliation.spent_online,
            "charged_online": reconciliation.charged_online,
            "balances_total": reconciliation.balances_total,
            "loads_in_flight": reconciliation.loads_in_flight,
            "purchases_in_doubt": reconciliation.purchases_in_doubt,
            "transfers_in_flight": reconciliation.transfers_in_flight,
            "conserved": reconciliation.conserved,
            "attacks": attacks.iter().map(|attack| serde_json::json!({
                "name": attack.name,
                "refused": attack.refused,
                "detail": attack.detail,
            })).collect::<Vec<_>>(),
            "scenarios": scenarios.iter().map(|scenario| serde_json::json!({
                "name": scenario.name,
                "held": scenario.held,
                "detail": scenario.detail,
            })).collect::<Vec<_>>(),
            "clones_detected": clones_detected,
            "stolen_terminal_refusals": stolen_terminal_refusals,
            "statements": statements,
            "cards": cards,
            "purchases": purchases,
            "transfers": transfers,
            "key_updates": key_updates,
            "memory_cards": memory_cards,
            "online_purchases": online_purchases,
            "online_charges": online_charges,
            "migrations": migrations,
        });
        println!("{value}");
    } else {
        println!();
        println!("Reconciliation (minor units)");
        println!(
            "  issued {} + loaded {} + charged online {} - spent {} - spent online {} = {}",
            reconciliation.issued,
            reconciliation.loaded,
            reconciliation.charged_online,
            reconciliation.spent,
            reconciliation.spent_online,
            (reconciliation.issued + reconciliation.loaded + reconciliation.charged_online)
                .saturating_sub(reconciliation.spent + reconciliation.spent_online)
        );
        println!("  sum of card balances = {}", reconciliation.balances_total);
        println!(
            "  value conserved: {}",
            if reconciliation.conserved {
                "yes"
            } else {
                "NO"
            }
        );
        println!(
            "  memory cards (seed 001): {}",
            if memory_cards_reconciled {
                "charged = spent + on cards, reconciled"
            } else {
                "NOT reconciled"
            }
        );
        println!(
            "  attacks refused: {}/{}",
            attacks.iter().filter(|a| a.refused).count(),
            attacks.len()
        );
        println!(
            "  move to a new chip (seed 002): {}",
            if migrations_held {
                "every service on the new chip only, the value counted once"
            } else {
                "NOT HELD"
            }
        );
        println!(
            "  center controls held: {}/{}",
            scenarios.iter().filter(|s| s.held).count(),
            scenarios.len()
        );
    }
    Ok(
        if reconciliation.conserved
            && memory_cards_reconciled
            && all_refused
            && all_held
            && migrations_held
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

struct DemoReport {
    reconciliation: valuecard_sim::Reconciliation,
    attacks: Vec<AttackOutcome>,
    scenarios: Vec<ScenarioOutcome>,
    clones_detected: usize,
    stolen_terminal_refusals: usize,
    statements: Vec<serde_json::Value>,
    cards: Vec<serde_json::Value>,
    purchases: Vec<serde_json::Value>,
    transfers: Vec<serde_json::Value>,
    key_updates: Vec<serde_json::Value>,
    memory_cards: serde_json::Value,
    memory_cards_reconciled: bool,
    online_purchases: Vec<serde_json::Value>,
    online_charges: Vec<serde_json::Value>,
    migrations: Vec<serde_json::Value>,
    migrations_held: bool,
}

fn run_in(dir: &Path, out: &mut Account) -> Result<DemoReport, WorldError> {
    let today = SystemClock.today();
    let mut world = World::create(Storage::Directory(dir.to_path_buf()), 2, today)?;
    let anchor = world.center.anchor();
    out.say(format!(
        "Center {} set up on {today} (root key {})",
        anchor.center,
        hex_prefix(&anchor.public_key.to_bytes())
    ));
    out.say(format!(
        "Dispenser {} installed; terminals {} and {} installed (Fig. 4A, Fig. 8)",
        world.dispenser.device_id(),
        world.terminals[0].device_id(),
        world.terminals[1].device_id()
    ));

    let initial = [5_000, 3_000, 2_000, 1_000];
    let mut readers: Vec<Reader> = Vec::new();
    let mut card_ids = Vec::new();
    for (index, value) in initial.iter().enumerate() {
        let path = card_path(dir, index + 1);
        let (serial, transport_key) = world.center.manufacture_chip();
        let card = FileCard::manufacture_file(&path, serial, transport_key)?;
        let mut reader = InProcessReader::with_card(format!("reader {}", index + 1), card);
        let card_id = world.issue(&mut reader, minor(*value))?;
        out.say(format!(
            "Card {card_id} issued with {} ({})",
            minor(*value),
            path.display()
        ));
        card_ids.push(card_id);
        readers.push(reader);
    }
    for (index, amount) in [(0usize, 2_500u64), (1, 1_000)] {
        world.load(&mut readers[index], minor(amount))?;
        out.say(format!(
            "Card {} loaded with {} through the center (Fig. 7)",
            card_ids[index],
            minor(amount)
        ));
    }

    let plan: [(usize, usize, u64); 7] = [
        (0, 0, 1_250),
        (0, 1, 320),
        (1, 0, 780),
        (1, 2, 500),
        (0, 2, 90),
        (1, 1, 110),
        (0, 0, 999),
    ];
    let mut purchases = Vec::new();
    for (terminal, card, amount) in plan {
        let receipt = world.terminals[terminal].purchase(&mut readers[card], minor(amount))?;
        out.say(format!(
            "Terminal {} sold {} to card {}: balance {} -> {} (offline, 2 command pairs after SELECT)",
            world.terminals[terminal].device_id(), receipt.amount, receipt.card_id, receipt.balance_before, receipt.balance_after
        ));
        purchases.push(serde_json::json!({
            "terminal": world.terminals[terminal].device_id().to_string(),
            "card": receipt.card_id.to_string(),
            "amount": receipt.amount.minor(),
            "balance_after": receipt.balance_after.minor(),
            "sequence": receipt.sequence,
        }));
    }

    out.say("");
    out.say("Card to card (seed 000)");
    let show = transfer_scenarios::card_to_card(&mut world, &mut readers)?;
    for line in &show.lines {
        out.say(format!("  {line}"));
    }
    let transfers: Vec<serde_json::Value> = show
        .transfers
        .iter()
        .map(|t| {
            serde_json::json!({
                "sequence": t.sequence,
                "source": t.source.to_string(),
                "destination": t.destination.to_string(),
                "amount": t.amount.minor(),
                "source_balance_after": t.source_balance_after.minor(),
                "destination_balance_after": t.destination_balance_after.minor(),
                "command_pairs": t.command_pairs,
                "key_update": t.key_update.map(|u| u.path.as_str()),
            })
        })
        .collect();
    let key_updates: Vec<serde_json::Value> = show
        .key_updates
        .iter()
        .map(|u| {
            serde_json::json!({
                "card": u.card.to_string(),
                "from": u.from_key_id,
                "to": u.to_key_id,
                "path": u.path.as_str(),
            })
        })
        .collect();

    out.say("");
    out.say("Memory cards (seed 001)");
    let memcard_show = memcard_scenarios::memory_cards(&mut world, dir)?;
    for line in &memcard_show.lines {
        out.say(format!("  {line}"));
    }

    out.say("");
    out.say("Online settlement (seed 004)");
    let online = crate::online_cli::demo(&mut world, &mut readers[2]).map_err(WorldError::Other)?;
    for line in &online.lines {
        out.say(format!("  {line}"));
    }

    out.say("");
    out.say("Attacks");
    let mut outcomes = vec![
        attacks::rogue_terminal_certificate(&mut world, &mut readers[0])?,
        attacks::forged_card_signature(&mut world, &mut readers[1])?,
        attacks::replayed_purchase_commit(&mut world, &mut readers[0])?,
        attacks::balance_raised_by_terminal(&mut world, &mut readers[3])?,
        attacks::purchase_above_balance(&mut world, &mut readers[2])?,
        attacks::expired_terminal_certificate(&mut world, &mut readers[1])?,
    ];
    // The insiders: a card's owner with its chip open, a dishonest dispenser or terminal,
    // each in a world of its own so their attempts stay out of this reconciliation.
    outcomes.extend(insider_attacks::run_all(today)?);
    // Card-to-card transfer attacks (seed 000), in a world of their own as well.
    outcomes.extend(transfer_scenarios::attacks(today)?);
    // The memory-card attacks ran in the scenario above, against the machines' checks.
    outcomes.extend(memcard_show.attacks.iter().cloned());
    for attack in &outcomes {
        out.say(format!(
            "  [{}] {}: {}",
            if attack.refused {
                "refused"
            } else {
                "NOT REFUSED"
            },
            attack.name,
            attack.detail
        ));
    }

    out.say("");
    out.say("The center's controls (Figs. 9-17)");
    let (clone_outcome, clones_detected) = scenarios::cloned_card_drill(today)?;
    let (lock_outcome, statement_outcome, statement) = {
        let (first, rest) = readers.split_at_mut(2);
        scenarios::credit_mode(&mut world, &mut first[1], &mut rest[0])?
    };
    let statements = vec![serde_json::json!({
        "month": statement.month,
        "total": statement.total_minor,
        "cards": statement.cards.iter().map(|card| serde_json::json!({
            "card": card.card_id.to_string(),
            "total": card.total_minor,
            "lines": card.lines.iter().map(|line| serde_json::json!({
                "date": line.date.to_string(),
                "terminal": line.terminal_id.to_string(),
                "amount": line.amount.minor(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })];
    scenarios::sync_all(&mut world)?;
    let (stolen_outcome, stolen_terminal_refusals) = {
        let (first, rest) = readers.split_at_mut(2);
        scenarios::stolen_terminal(&mut world, 1, &mut first[1], &mut rest[0])?
    };
    let lost_outcome = scenarios::lost_card(&mut world, &mut readers[0])?;
    scenarios::sync_all(&mut world)?;

    let scenario_list = vec![
        clone_outcome,
        lost_outcome,
        stolen_outcome,
        lock_outcome,
        statement_outcome,
    ];
    for scenario in &scenario_list {
        out.say(format!(
            "  [{}] {}: {}",
            if scenario.held { "held" } else { "FAILED" },
            scenario.name,
            scenario.detail
        ));
    }
    let (reported, _) = world.center.reported_spending()?;
    let (spent, _) = world.spent()?;
    out.say(format!(
        "  usage records at the center: {} of {} spent at terminals (the stolen terminal's later sales never arrive)",
        Amount::new(reported).unwrap_or(Amount::ZERO),
        Amount::new(spent).unwrap_or(Amount::ZERO)
    ));

    out.say("");
    out.say("Moving a chip's services to a new chip (seed 002)");
    // A holder's chip in use (issued, spent at a terminal) and the new chip it is replaced by.
    let moved_index = readers.len();
    let mut chips = Vec::new();
    for (offset, value, role) in [(0, 3_000, "old"), (1, 700, "new")] {
        let path = card_path(dir, moved_index + offset + 1);
        let (serial, transport_key) = world.center.manufacture_chip();
        let mut reader = InProcessReader::with_card(
            format!("reader {}", moved_index + offset + 1),
            FileCard::manufacture_file(&path, serial, transport_key)?,
        );
        let card_id = world.issue(&mut reader, minor(value))?;
        out.say(format!(
            "  Card {card_id} issued with {} as the holder's {role} chip ({})",
            minor(value),
            path.display()
        ));
        chips.push((card_id, reader));
    }
    let (new_id, mut new_reader) = chips.pop().ok_or(WorldError::Other("no new chip".into()))?;
    let (old_id, mut old_reader) = chips.pop().ok_or(WorldError::Other("no old chip".into()))?;
    let receipt = world.terminals[0].purchase(&mut old_reader, minor(420))?;
    out.say(format!(
        "  Terminal {} sold {} to card {old_id}: balance {}",
        world.terminals[0].device_id(),
        receipt.amount,
        receipt.balance_after
    ));
    let moved =
        crate::migrate_demo::demo(&mut world, &mut old_reader, &mut new_reader, old_id, new_id)
            .map_err(WorldError::Other)?;
    for line in &moved.lines {
        out.say(format!("  {line}"));
    }
    readers.push(old_reader);
    readers.push(new_reader);
    scenarios::sync_all(&mut world)?;

    let mut balances = Vec::new();
    let mut cards = Vec::new();
    for (index, reader) in readers.iter_mut().enumerate() {
        let status = read_purse(reader)?;
        // The old chip keeps its balance as a locked backup on temporary keys; the value
        // is the new chip's now, and counted there.
        balances.push(if index == moved_index {
            Amount::ZERO
        } else {
            status.balance
        });
        cards.push(serde_json::json!({
            "card": status.card_id.to_string(),
            "balance": status.balance.minor(),
            "counter": status.counter,
            "state": format!("{:?}", status.state),
            "abnormal_events": status.abnormal_events,
            "image": card_path(dir, index + 1).display().to_string(),
            "moved_to_new_chip": index == moved_index,
        }));
        out.say(format!(
            "Card {}: balance {}, {} updates, {:?}, {} abnormal events recorded",
            status.card_id, status.balance, status.counter, status.state, status.abnormal_events
        ));
    }
    let reconciliation = world.reconcile(&balances)?;
    let memcard_books = world.center.reconciliation()?.memcards;
    let memory_cards_reconciled = memcard_books.status() == MemcardStatus::Reconciled;
    let memory_cards = memory_cards_json(&memcard_show, &memcard_books);
    Ok(DemoReport {
        reconciliation,
        attacks: outcomes,
        scenarios: scenario_list,
        clones_detected,
        stolen_terminal_refusals,
        statements,
        cards,
        purchases,
        transfers,
        key_updates,
        memory_cards,
        memory_cards_reconciled,
        online_purchases: online.purchases,
        online_charges: online.charges,
        migrations: moved.migrations,
        migrations_held: moved.held,
    })
}

/// The memory cards' part of the JSON report: each card as a machine reads it, each write,
/// the torn write's repair, and the center's books for memory cards.
fn memory_cards_json(
    show: &memcard_scenarios::MemcardShow,
    books: &valuecard_center::memcard::MemcardTotals,
) -> serde_json::Value {
    serde_json::json!({
        "cards": show.cards.iter().map(|card| serde_json::json!({
            "card": card.card_id.to_string(),
            "counter": card.counter,
            "balance": card.balance.map(Amount::minor),
            "sealed": card.sealed,
        })).collect::<Vec<_>>(),
        "writes": show.writes.iter().map(|write| serde_json::json!({
            "machine": write.machine,
            "kind": format!("{:?}", write.receipt.kind).to_lowercase(),
            "card": write.receipt.card_id.to_string(),
            "amount": write.receipt.amount.minor(),
            "balance_after": write.receipt.balance_after.minor(),
            "counter_after": write.receipt.counter_after,
        })).collect::<Vec<_>>(),
        "repairs": show.repairs.iter().map(|repair| format!("{repair:?}")).collect::<Vec<_>>(),
        "float_granted": books.float_granted,
        "charged": books.charged,
        "spent": books.spent,
        "on_cards": books.on_cards,
        "float_in_machines": books.float_in_machines,
        "states_spent_twice": books.states_spent_twice,
        "status": books.status().as_str(),
    })
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(6)
        .map(|b| format!("{b:02X}"))
        .collect::<String>()
        + "..."
}
