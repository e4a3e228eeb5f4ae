//! `valuecard bench ingest`: the center verifying, de-duplicating and durably storing signed
//! usage records, against Ed25519 batch verification of the same signatures on the same
//! cores in the same run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore, SeedableRng};
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_center::Center;
use valuecard_core::crypto::{verify_batch, PublicKey, Signature};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::{UsageItem, UsageUpload, USAGE_BATCH_MAX};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_reader::InProcessReader;
use valuecard_sim::{Storage, World, WorldRng};
use valuecard_terminal::payment::usage_item;
use valuecard_terminal::store::TerminalStore;

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Usage records to ingest.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Store in PostgreSQL (a fresh schema, dropped afterwards) instead of a SQLite file.
    #[arg(long)]
    database: Option<String>,
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when the ratio of floor to ingestion time is below this.
    #[arg(long, default_value_t = TARGET_RATIO)]
    min_ratio: f64,
}

/// The goal: ingestion at this fraction of the batch-verification floor or better.
const TARGET_RATIO: f64 = 0.7;

fn error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Real usage items: real cards, issued and loaded by the world's dispenser, each buy
/// `per_card` times at terminal 0 through the full purchase protocol; the items are what
/// that terminal would upload. Every item carries three real signatures: the card's over
/// the state it spent, the terminal's over the purchase, and the previous writer's.
fn generate(world: &mut World, records: usize) -> Result<Vec<UsageItem>, String> {
    let per_card = 50;
    let mut bought = 0;
    while bought < records {
        let card = world
            .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
            .map_err(error)?;
        let mut reader = InProcessReader::with_card("bench", card);
        world
            .issue(&mut reader, Amount::new(1_000_000).map_err(error)?)
            .map_err(error)?;
        for _ in 0..per_card.min(records - bought) {
            world.terminals[0]
                .purchase(&mut reader, Amount::new(1).map_err(error)?)
                .map_err(error)?;
            bought += 1;
        }
    }
    let pending = world.terminals[0]
        .store()
        .pending_uploads(records)
        .map_err(error)?;
    let items: Vec<UsageItem> = pending.iter().filter_map(usage_item).collect();
    if items.len() != records {
        return Err(format!("generated {} of {records} records", items.len()));
    }
    Ok(items)
}

/// The signed strings of one record, with their keys and signatures.
type SignedSet = [(PublicKey, Vec<u8>, Signature); 3];

fn signed_sets(
    items: &[UsageItem],
    seller: (DeviceId, PublicKey),
    center: &mut Center,
) -> Result<Vec<SignedSet>, String> {
    let mut card_keys = std::collections::HashMap::new();
    let mut messages: Vec<SignedSet> = Vec::with_capacity(items.len());
    for item in items {
        let card_key = match card_keys.get(&item.card_id) {
            Some(key) => *key,
            None => {
                let key = center.card_public_key(&item.card_id).map_err(error)?;
                card_keys.insert(item.card_id, key);
                key
            }
        };
        // Every item here spends from a load (first) or from this terminal's own sale.
        let writer = match item.previous_usage.kind {
            TransactionKind::Load => center.anchor().public_key,
            TransactionKind::Purchase => seller.1,
            TransactionKind::TransferOut
            | TransactionKind::TransferIn
            | TransactionKind::OnlinePayment
            | TransactionKind::OnlineCharge
            | TransactionKind::MigrationIn => {
                return Err("the ingest workload holds only loads and purchases".into())
            }
        };
        messages.push([
            (
                card_key,
                item.card_signed_message(seller.0),
                item.card_signature,
            ),
            (
                seller.1,
                item.commit(seller.0).signed_message(),
                item.terminal_signature,
            ),
            (
                writer,
                item.previous_usage.signed_message(&item.card_id),
                item.previous_usage.signature,
            ),
        ]);
    }
    Ok(messages)
}

/// The floor for one upload: batch verification of its signatures, messages built.
fn floor(sets: &[SignedSet], threads: usize) -> Result<Duration, String> {
    let start = Instant::now();
    let batch: Vec<(PublicKey, &[u8], Signature)> = sets
        .iter()
        .flat_map(|set| {
            set.iter()
                .map(|(key, message, signature)| (*key, message.as_slice(), *signature))
        })
        .collect();
    verify_batch(&batch, threads).map_err(error)?;
    Ok(start.elapsed())
}

pub fn ingest(args: IngestArgs) -> Result<ExitCode, String> {
    let records = args.records.max(1);
    let dir = tempfile::tempdir().map_err(error)?;
    let mut rng = WorldRng::seed_from_u64(OsRng.next_u64());
    let (database, cleanup) = match &args.database {
        Some(url) => {
            let (database, scratch) = crate::bench_db::scratch_postgres(url)?;
            (Some(database), Some(scratch))
        }
        None => (None, None),
    };
    let kind = crate::bench_db::store_name(database.is_some());
    let storage = match database {
        Some(database) => Storage::on(database),
        None => Storage::Directory(dir.path().to_path_buf()),
    };
    let today = SystemClock.today();
    let mut world = World::create_seeded(
        storage,
        1,
        today,
        WorldRng::from_rng(&mut rng).map_err(error)?,
    )
    .map_err(error)?;
    let items = generate(&mut world, records)?;
    let seller = world.terminals[0].device_id();
    let seller_key = world.center.device_key(seller).map_err(error)?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let sets = signed_sets(&items, (seller, seller_key), &mut world.center)?;
    let center = &mut world.center;
    // Each upload right after the floor of the same items, so that both see the same load
    // of a shared machine.
    let mut floor_time = Duration::ZERO;
    let mut ingest_time = Duration::ZERO;
    let mut stored = 0u64;
    for (chunk, chunk_sets) in items
        .chunks(USAGE_BATCH_MAX)
        .zip(sets.chunks(USAGE_BATCH_MAX))
    {
        floor_time += floor(chunk_sets, threads)?;
        let start = Instant::now();
        let receipt = center
            .ingest_usage(&UsageUpload {
                terminal_id: seller,
                items: chunk.to_vec(),
            })
            .map_err(error)?;
        if !receipt.refused.is_empty() {
            return Err(format!(
                "the center refused {} generated records: {:?}",
                receipt.refused.len(),
                receipt.refused.first()
            ));
        }
        ingest_time += start.elapsed();
        stored += u64::from(receipt.stored);
    }
    if stored != records as u64 {
        return Err(format!("stored {stored} of {records} records"));
    }
    // The center's connection closes before its schema is dropped.
    drop(world);
    drop(cleanup);
    let per_second = records as f64 / ingest_time.as_secs_f64();
    let floor_per_second = records as f64 / floor_time.as_secs_f64();
    let ratio = floor_time.as_secs_f64() / ingest_time.as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "ingest",
                "store": kind,
                "records": records,
                "threads": threads,
                "records_per_second": per_second,
                "floor_records_per_second": floor_per_second,
                "signatures_per_record": 3,
                "ratio_to_floor": ratio,
                "target_ratio": TARGET_RATIO,
                "min_ratio": args.min_ratio,
                "target_met": ratio >= TARGET_RATIO,
                "verdict": if ratio < TARGET_RATIO { "BELOW TARGET" } else { "ok" },
            })
        );
    } else {
        println!("usage-record ingestion into {kind}, {records} records, {threads} threads:");
        println!("  ingest: {per_second:10.0} records/s (verify 3 signatures, de-duplicate, store durably)");
        println!("  floor:  {floor_per_second:10.0} records/s (Ed25519 batch verification of the same signatures)");
        println!(
            "  ratio to floor: {ratio:.3} (target >= {TARGET_RATIO}, required >= {})",
            args.min_ratio
        );
        if ratio < TARGET_RATIO {
            println!("  BELOW TARGET: this run missed the target ratio");
        }
    }
    if ratio < args.min_ratio {
        eprintln!(
            "ingestion at {ratio:.3} of the floor is below the required {}",
            args.min_ratio
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
