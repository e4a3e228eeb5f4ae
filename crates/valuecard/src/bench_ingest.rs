//! `valuecard bench ingest`: the center verifying, de-duplicating and durably storing signed
//! usage records, against Ed25519 batch verification of the same signatures on the same
//! cores in the same run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore, SeedableRng};
use valuecard_center::sql::Database;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, verify_batch, PublicKey, Signature};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{UsageItem, UsageUpload, USAGE_BATCH_MAX};
use valuecard_core::messages::purse::{TransactionKind, UsageRecord};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_sam::Sam;
use valuecard_sim::{install_sam, WorldRng};

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
}

fn error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Real usage items: terminal 0 sells to many cards; each item's previous usage record is the
/// previous sale (the first one by terminal 1), so every item carries two real signatures.
fn generate(
    records: usize,
    seller: &mut valuecard_sam::SoftwareSam,
    first_writer: &mut valuecard_sam::SoftwareSam,
    today: valuecard_core::time::Date,
) -> Result<Vec<UsageItem>, String> {
    let per_card = 50;
    let mut rng = WorldRng::seed_from_u64(OsRng.next_u64());
    let mut items = Vec::with_capacity(records);
    let seller_id = seller.device_id();
    // Synthetic records for a million cards that never existed: signed with the SAMs' keys
    // directly, as a terminal whose key was copied would (the SAMs sign only purchases they
    // take part in).
    let seller_key = seller.extract_signing_key();
    let first_writer_key = first_writer.extract_signing_key();
    let mut sequence = 0u32;
    let mut card_number = 0u64;
    while items.len() < records {
        card_number += 1;
        let mut id = card_number.to_be_bytes();
        id[0] = 0xCB;
        let card_id = CardId(id);
        let stamp = first_writer.stamp().map_err(error)?;
        let mut previous = UsageRecord {
            kind: TransactionKind::Purchase,
            counter: 1,
            challenge_writer: random_array(&mut rng),
            challenge_card: random_array(&mut rng),
            amount: Amount::new(1).map_err(error)?,
            balance_after: Amount::new(1_000_000).map_err(error)?,
            writer: first_writer.device_id(),
            writer_sequence: 1,
            date: today,
            signature: Signature([0; 64]),
            stamp: Some(stamp),
        };
        previous.signature = first_writer_key.sign(&previous.signed_message(&card_id));
        for _ in 0..per_card.min(records - items.len()) {
            sequence += 1;
            let stamp = seller.stamp().map_err(error)?;
            let amount = Amount::new(1).map_err(error)?;
            let balance_after = previous.balance_after.checked_sub(amount).map_err(error)?;
            let mut item = UsageItem {
                terminal_sequence: sequence,
                card_id,
                card_counter: previous.counter,
                amount,
                balance_before: previous.balance_after,
                balance_after,
                challenge_terminal: random_array(&mut rng),
                challenge_card: random_array(&mut rng),
                date: today,
                stamp,
                terminal_signature: Signature([0; 64]),
                previous_usage: previous.clone(),
            };
            item.terminal_signature = seller_key.sign(&item.commit(seller_id).signed_message());
            previous = UsageRecord {
                kind: TransactionKind::Purchase,
                counter: item.card_counter + 1,
                challenge_writer: item.challenge_terminal,
                challenge_card: item.challenge_card,
                amount,
                balance_after,
                writer: seller_id,
                writer_sequence: sequence,
                date: today,
                signature: item.terminal_signature,
                stamp: Some(stamp),
            };
            items.push(item);
        }
    }
    Ok(items)
}

/// The two signed strings of one record, with their keys and signatures.
type SignedPair = [(PublicKey, Vec<u8>, Signature); 2];

fn floor(
    items: &[UsageItem],
    seller: DeviceId,
    keys: &[(DeviceId, PublicKey)],
    threads: usize,
) -> Result<Duration, String> {
    let key_of = |id: DeviceId| {
        keys.iter()
            .find(|(device, _)| *device == id)
            .map(|(_, key)| *key)
    };
    let messages: Vec<SignedPair> = items
        .iter()
        .map(|item| {
            let writer = key_of(item.previous_usage.writer).ok_or("unknown writer")?;
            let seller_key = key_of(seller).ok_or("unknown seller")?;
            Ok([
                (
                    seller_key,
                    item.commit(seller).signed_message(),
                    item.terminal_signature,
                ),
                (
                    writer,
                    item.previous_usage.signed_message(&item.card_id),
                    item.previous_usage.signature,
                ),
            ])
        })
        .collect::<Result<_, &str>>()?;
    let start = Instant::now();
    for chunk in messages.chunks(USAGE_BATCH_MAX) {
        let batch: Vec<(PublicKey, &[u8], Signature)> = chunk
            .iter()
            .flat_map(|pair| {
                pair.iter()
                    .map(|(key, message, signature)| (*key, message.as_slice(), *signature))
            })
            .collect();
        verify_batch(&batch, threads).map_err(error)?;
    }
    Ok(start.elapsed())
}

pub fn ingest(args: IngestArgs) -> Result<ExitCode, String> {
    let records = args.records.max(1);
    let dir = tempfile::tempdir().map_err(error)?;
    let mut rng = WorldRng::seed_from_u64(OsRng.next_u64());
    let clock = || -> Box<dyn Clock> { Box::new(SystemClock) };
    let (database, cleanup) = match &args.database {
        Some(url) => {
            let schema = format!("valuecard_bench_{:016x}", OsRng.next_u64());
            let mut admin = postgres::Client::connect(url, postgres::NoTls)
                .map_err(|e| format!("PostgreSQL: {e}"))?;
            admin
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .map_err(error)?;
            let scoped = format!("{url} options='-c search_path={schema}'");
            (
                Some(Database::connect_postgres(&scoped).map_err(error)?),
                Some((admin, schema)),
            )
        }
        None => (None, None),
    };
    let kind = if database.is_some() {
        "PostgreSQL"
    } else {
        "SQLite (WAL, synchronous=FULL)"
    };
    let mut center = Center::init(dir.path(), database, clock(), &mut rng).map_err(error)?;
    let mut seller =
        install_sam(&mut center, Role::PaymentTerminal, clock(), &mut rng).map_err(error)?;
    let mut first_writer =
        install_sam(&mut center, Role::PaymentTerminal, clock(), &mut rng).map_err(error)?;
    let keys = [
        (seller.device_id(), seller.signing_key()),
        (first_writer.device_id(), first_writer.signing_key()),
    ];
    let items = generate(records, &mut seller, &mut first_writer, center.today())?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let floor_time = floor(&items, seller.device_id(), &keys, threads)?;
    let start = Instant::now();
    let mut stored = 0u64;
    for chunk in items.chunks(USAGE_BATCH_MAX) {
        let receipt = center
            .ingest_usage(&UsageUpload {
                terminal_id: seller.device_id(),
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
        stored += u64::from(receipt.stored);
    }
    let ingest_time = start.elapsed();
    if stored != records as u64 {
        return Err(format!("stored {stored} of {records} records"));
    }
    if let Some((mut admin, schema)) = cleanup {
        drop(center);
        let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
    }
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
                "signatures_per_record": 2,
                "ratio_to_floor": ratio,
                "target_ratio": 0.7,
            })
        );
    } else {
        println!("usage-record ingestion into {kind}, {records} records, {threads} threads:");
        println!("  ingest: {per_second:10.0} records/s (verify 2 signatures, de-duplicate, store durably)");
        println!("  floor:  {floor_per_second:10.0} records/s (Ed25519 batch verification of the same signatures)");
        println!("  ratio to floor: {ratio:.3} (target >= 0.7)");
    }
    Ok(ExitCode::SUCCESS)
}
