//! The workload of `bench http`: a center with payment terminals installed, their usage
//! records made through the whole purchase protocol with real cards, each run's share of
//! them, and the floor those records allow.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_center::Center;
use valuecard_center_http::client::USAGE_ITEMS_PER_REQUEST;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{verify_batch, PublicKey, Signature};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::{UsageItem, UsageUpload, USAGE_BATCH_MAX};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_reader::InProcessReader;
use valuecard_sam::SoftwareSam;
use valuecard_sim::{install_sam, WorldRng};
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::payment::{usage_item, PaymentTerminal};
use valuecard_terminal::store::{MemoryStore, TerminalStore};

use super::error;

/// The floor is a rate per record: a sample this large measures it as well as all would.
const FLOOR_SAMPLE: usize = 8192;
/// Purchases one card makes before the next card is issued (a card serves one terminal).
const PURCHASES_PER_CARD: usize = 500;
/// Purchase amounts cycle through 1..=this minor units, so the center's total is not merely
/// the record count.
const AMOUNT_CYCLE: u64 = 5;

pub(super) type BenchTerminal = PaymentTerminal<SoftwareSam, MemoryStore, WorldRng>;

/// One terminal's records for every run it takes part in, in the order it made them.
pub(super) struct Pool {
    pub(super) terminal_id: DeviceId,
    pub(super) items: Vec<UsageItem>,
}

/// The service, the center behind it, and what must be cleaned up after.
pub(super) struct Setup {
    pub(super) center: Arc<Mutex<Center>>,
    pub(super) terminals: Vec<BenchTerminal>,
    /// PostgreSQL: the scratch schema, dropped after the center (fields drop in order).
    _scratch: Option<crate::bench_db::ScratchSchema>,
    /// Which database, for the report.
    pub(super) store: &'static str,
}

fn clock() -> Box<dyn Clock> {
    Box::new(SystemClock)
}

/// A center in `dir` (SQLite there, or PostgreSQL in a fresh schema), with `terminals`
/// payment terminals installed.
pub(super) fn set_up(
    dir: &std::path::Path,
    database: Option<&str>,
    terminals: usize,
    rng: &mut WorldRng,
) -> Result<(Setup, Dispenser<SoftwareSam, WorldRng>), String> {
    let (db, cleanup) = match database {
        Some(url) => {
            let (database, scratch) = crate::bench_db::scratch_postgres(url)?;
            (Some(database), Some(scratch))
        }
        None => (None, None),
    };
    let store = crate::bench_db::store_name(db.is_some());
    let mut center = Center::init(&dir.join("center"), db, clock(), rng).map_err(error)?;
    let dispenser_sam = install_sam(&mut center, Role::Dispenser, clock(), rng).map_err(error)?;
    let dispenser = Dispenser::new(
        dispenser_sam,
        clock(),
        WorldRng::from_rng(&mut *rng).map_err(error)?,
    )
    .map_err(error)?;
    let mut installed = Vec::with_capacity(terminals);
    for _ in 0..terminals {
        let sam = install_sam(&mut center, Role::PaymentTerminal, clock(), rng).map_err(error)?;
        let terminal_rng = WorldRng::from_rng(&mut *rng).map_err(error)?;
        installed.push(
            PaymentTerminal::new(sam, MemoryStore::default(), clock(), terminal_rng)
                .map_err(error)?,
        );
    }
    Ok((
        Setup {
            center: Arc::new(Mutex::new(center)),
            terminals: installed,
            _scratch: cleanup,
            store,
        },
        dispenser,
    ))
}

pub(super) fn lock(center: &Mutex<Center>) -> std::sync::MutexGuard<'_, Center> {
    center
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type BenchCard = InProcessReader<MemoryEeprom, WorldRng>;

/// Cards issued and loaded by the dispenser, enough for `purchases` purchases at one
/// terminal.
fn issue_cards(
    center: &Mutex<Center>,
    dispenser: &mut Dispenser<SoftwareSam, WorldRng>,
    purchases: usize,
    rng: &mut WorldRng,
) -> Result<Vec<BenchCard>, String> {
    let value = Amount::new(PURCHASES_PER_CARD as u64 * AMOUNT_CYCLE).map_err(error)?;
    let mut center = lock(center);
    (0..purchases.div_ceil(PURCHASES_PER_CARD))
        .map(|_| {
            let (serial, transport_key) = center.manufacture_chip();
            let card = Card::manufacture(
                MemoryEeprom::new(EEPROM_SIZE),
                serial,
                transport_key,
                WorldRng::from_rng(&mut *rng).map_err(error)?,
            )
            .map_err(error)?;
            let mut reader = InProcessReader::with_card("bench", card);
            dispenser
                .issue_card(&mut reader, &mut *center)
                .map_err(error)?;
            dispenser
                .load(&mut reader, &mut *center, value)
                .map_err(error)?;
            Ok(reader)
        })
        .collect()
}

/// `purchases` real purchases at `terminal` with `cards`, and the usage items the terminal
/// would upload for them.
fn purchase_all(
    terminal: &mut BenchTerminal,
    cards: &mut [BenchCard],
    purchases: usize,
) -> Result<Pool, String> {
    for index in 0..purchases {
        let amount = Amount::new(1 + index as u64 % AMOUNT_CYCLE).map_err(error)?;
        let card = cards
            .get_mut(index / PURCHASES_PER_CARD)
            .ok_or("fewer cards than purchases need")?;
        terminal.purchase(card, amount).map_err(error)?;
    }
    let pending = terminal.store().pending_uploads(purchases).map_err(error)?;
    let items: Vec<UsageItem> = pending.iter().filter_map(usage_item).collect();
    if items.len() != purchases {
        return Err(format!("generated {} of {purchases} records", items.len()));
    }
    Ok(Pool {
        terminal_id: terminal.device_id(),
        items,
    })
}

/// Every terminal's records: the cards are issued one after another (the center is one),
/// then the terminals buy on every core, each with its own cards.
pub(super) fn generate(
    setup: &mut Setup,
    dispenser: &mut Dispenser<SoftwareSam, WorldRng>,
    needs: &[usize],
    rng: &mut WorldRng,
) -> Result<Vec<Pool>, String> {
    let mut cards = Vec::with_capacity(needs.len());
    for &need in needs {
        cards.push(issue_cards(&setup.center, dispenser, need, rng)?);
    }
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let mut jobs: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
    let mut loads = vec![0usize; workers];
    // Longest first onto the least loaded worker: the workers finish together.
    let mut work: Vec<_> = setup
        .terminals
        .iter_mut()
        .zip(cards.iter_mut())
        .zip(needs.iter().copied())
        .enumerate()
        .collect();
    work.sort_by_key(|(_, (_, need))| std::cmp::Reverse(*need));
    for (index, ((terminal, cards), need)) in work {
        let worker = (0..workers).min_by_key(|&w| loads[w]).unwrap_or(0);
        loads[worker] += need;
        jobs[worker].push((index, terminal, cards, need));
    }
    let mut made: Vec<(usize, Pool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                scope.spawn(move || {
                    job.into_iter()
                        .map(|(index, terminal, cards, need)| {
                            Ok((index, purchase_all(terminal, cards, need)?))
                        })
                        .collect::<Result<Vec<_>, String>>()
                })
            })
            .collect();
        handles.into_iter().try_fold(Vec::new(), |mut all, handle| {
            all.extend(
                handle
                    .join()
                    .map_err(|_| "a purchase worker panicked".to_owned())??,
            );
            Ok::<_, String>(all)
        })
    })?;
    // Back into terminal order.
    made.sort_by_key(|(index, _)| *index);
    let pools = made.into_iter().map(|(_, pool)| pool).collect();
    Ok(pools)
}

/// The signed strings of one record, with their keys and signatures.
type SignedSet = [(PublicKey, Vec<u8>, Signature); 3];

/// Seconds per record of Ed25519 batch verification of the three signatures of (a sample
/// of) the records, on one core, as `bench ingest` measures its floor.
pub(super) fn floor_seconds_per_record(
    pools: &[Pool],
    center: &mut Center,
) -> Result<(f64, usize), String> {
    let mut keys = std::collections::HashMap::new();
    let mut key = |center: &mut Center, device: DeviceId| -> Result<PublicKey, String> {
        if let Some(key) = keys.get(&device) {
            return Ok(*key);
        }
        let found = center.device_key(device).map_err(error)?;
        keys.insert(device, found);
        Ok(found)
    };
    let mut card_keys = std::collections::HashMap::new();
    let mut messages: Vec<SignedSet> = Vec::new();
    let per_pool = FLOOR_SAMPLE.div_ceil(pools.len().max(1));
    for pool in pools {
        let seller = key(center, pool.terminal_id)?;
        for item in pool.items.iter().take(per_pool) {
            let card_key = match card_keys.get(&item.card_id) {
                Some(key) => *key,
                None => {
                    let found = center.card_public_key(&item.card_id).map_err(error)?;
                    card_keys.insert(item.card_id, found);
                    found
                }
            };
            let writer = match item.previous_usage.kind {
                TransactionKind::Load => center.anchor().public_key,
                TransactionKind::Purchase => key(center, item.previous_usage.writer)?,
                TransactionKind::TransferOut
                | TransactionKind::TransferIn
                | TransactionKind::OnlinePayment
                | TransactionKind::OnlineCharge
                | TransactionKind::MigrationIn => {
                    return Err("the upload workload holds only loads and purchases".into())
                }
            };
            messages.push([
                (
                    card_key,
                    item.card_signed_message(pool.terminal_id),
                    item.card_signature,
                ),
                (
                    seller,
                    item.commit(pool.terminal_id).signed_message(),
                    item.terminal_signature,
                ),
                (
                    writer,
                    item.previous_usage.signed_message(&item.card_id),
                    item.previous_usage.signature,
                ),
            ]);
        }
    }
    let start = Instant::now();
    for chunk in messages.chunks(USAGE_BATCH_MAX) {
        let batch: Vec<(PublicKey, &[u8], Signature)> = chunk
            .iter()
            .flat_map(|set| {
                set.iter()
                    .map(|(key, message, signature)| (*key, message.as_slice(), *signature))
            })
            .collect();
        verify_batch(&batch, 1).map_err(error)?;
    }
    let sampled = messages.len().max(1);
    Ok((start.elapsed().as_secs_f64() / sampled as f64, sampled))
}

/// Each run's requests, per terminal: terminal t takes the next `records` of its records in
/// every run that has more than t terminals.
pub(super) fn plan_runs(
    pools: &[Pool],
    counts: &[usize],
    records: usize,
) -> Result<Vec<Vec<Vec<UsageUpload>>>, String> {
    let mut next = vec![0usize; pools.len()];
    counts
        .iter()
        .map(|&count| {
            pools
                .iter()
                .zip(next.iter_mut())
                .take(count)
                .map(|(pool, next)| {
                    let mine = pool
                        .items
                        .get(*next..*next + records)
                        .ok_or("a terminal has too few records for its runs")?;
                    *next += records;
                    Ok(mine
                        .chunks(USAGE_ITEMS_PER_REQUEST)
                        .map(|chunk| UsageUpload {
                            terminal_id: pool.terminal_id,
                            items: chunk.to_vec(),
                        })
                        .collect())
                })
                .collect()
        })
        .collect()
}
