//! `valuecard bench purchase`: host CPU per offline purchase, against the floor of the
//! signature operations that purchase needs, measured in the same run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_reader::{CardReader, InProcessReader, ReaderError};
use valuecard_sim::{Storage, World};

#[derive(clap::Args, Debug)]
pub struct PurchaseArgs {
    /// Purchases per measurement round.
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
    /// Measurement rounds (the median round is reported).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Counts command/response pairs.
pub(crate) struct CountingReader<R> {
    pub(crate) inner: R,
    pub(crate) pairs: u64,
}

impl<R: CardReader> CardReader for CountingReader<R> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        self.pairs += 1;
        self.inner.transmit_raw(apdu)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

/// The signature operations of one purchase: the terminal verifies the card certificate,
/// the card's signature, the last writer's certificate and its signature, and signs the
/// commit; the card verifies the terminal certificate and the commit, and signs its offer.
struct Floor {
    keys: Vec<SigningKeyPair>,
    messages: Vec<Vec<u8>>,
}

impl Floor {
    const VERIFIES: usize = 6;
    const SIGNS: usize = 2;

    fn new() -> Self {
        let keys: Vec<_> = (0..Self::VERIFIES)
            .map(|_| SigningKeyPair::generate(&mut OsRng))
            .collect();
        // Message sizes of the real signed strings: certificate bodies (~130 bytes) and
        // protocol messages (~110 bytes).
        let messages = (0..Self::VERIFIES)
            .map(|i| vec![i as u8; if i % 2 == 0 { 130 } else { 110 }])
            .collect();
        Floor { keys, messages }
    }

    fn one_purchase(&self) {
        let signatures: Vec<_> = self
            .keys
            .iter()
            .zip(&self.messages)
            .map(|(k, m)| (k.public_key(), k.sign(m)))
            .collect();
        let start = Instant::now();
        let _ = start;
        for ((public, signature), message) in signatures.iter().zip(&self.messages) {
            let _ = std::hint::black_box(public.verify(message, signature));
        }
        for index in 0..Self::SIGNS {
            std::hint::black_box(self.keys[index].sign(&self.messages[index]));
        }
    }
}

fn time_floor(floor: &Floor, iterations: u32) -> Duration {
    // Signatures to verify are made outside the timed loop.
    let prepared: Vec<_> = floor
        .keys
        .iter()
        .zip(&floor.messages)
        .map(|(k, m)| (k.public_key(), k.sign(m)))
        .collect();
    let start = Instant::now();
    for _ in 0..iterations {
        for ((public, signature), message) in prepared.iter().zip(&floor.messages) {
            let _ = std::hint::black_box(public.verify(std::hint::black_box(message), signature));
        }
        for index in 0..Floor::SIGNS {
            std::hint::black_box(
                floor.keys[index].sign(std::hint::black_box(&floor.messages[index])),
            );
        }
    }
    start.elapsed()
}

/// The median of measured rounds (zero for none).
pub(crate) fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Times `iterations` runs of a floor's operations; an error when any of its own checks
/// failed (the floor would then be wrong).
pub(crate) fn time_checked(
    iterations: u32,
    mut one: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut ok = true;
    for _ in 0..iterations {
        ok &= one();
    }
    let elapsed = start.elapsed();
    if ok {
        Ok(elapsed)
    } else {
        Err("the floor's own operations failed their checks".into())
    }
}

pub fn purchase(args: PurchaseArgs) -> Result<ExitCode, String> {
    let iterations = args.iterations.max(1);
    let rounds = args.rounds.max(1);
    let today = SystemClock.today();
    let mut world = World::create(Storage::Memory, 2, today).map_err(|e| e.to_string())?;
    let card = world
        .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
        .map_err(|e| e.to_string())?;
    let mut reader = CountingReader {
        inner: InProcessReader::with_card("bench", card),
        pairs: 0,
    };
    let needed = u64::from(iterations) * u64::from(rounds + 1) + 1;
    let initial = Amount::new(needed.min(Amount::MAX.minor())).map_err(|e| e.to_string())?;
    world
        .issue(&mut reader, initial)
        .map_err(|e| e.to_string())?;
    let one = Amount::new(1).map_err(|e| e.to_string())?;
    // Warm-up purchase: afterwards the card's last writer is a terminal, as in steady use.
    world.terminals[0]
        .purchase(&mut reader, one)
        .map_err(|e| e.to_string())?;
    reader.pairs = 0;
    world.terminals[0]
        .purchase(&mut reader, one)
        .map_err(|e| e.to_string())?;
    let pairs_per_purchase = reader.pairs;

    let floor = Floor::new();
    floor.one_purchase();
    let mut purchase_times = Vec::new();
    let mut floor_times = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            world.terminals[0]
                .purchase(&mut reader, one)
                .map_err(|e| e.to_string())?;
        }
        purchase_times.push(start.elapsed());
        floor_times.push(time_floor(&floor, iterations));
    }
    let purchase_each = median(purchase_times) / iterations;
    let floor_each = median(floor_times) / iterations;
    let ratio = floor_each.as_secs_f64() / purchase_each.as_secs_f64();
    let pairs_after_select = pairs_per_purchase.saturating_sub(1);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "purchase",
                "iterations": iterations,
                "rounds": rounds,
                "purchase_us": purchase_each.as_secs_f64() * 1e6,
                "purchases_per_second": 1.0 / purchase_each.as_secs_f64(),
                "floor_us": floor_each.as_secs_f64() * 1e6,
                "floor_operations": { "ed25519_verify": Floor::VERIFIES, "ed25519_sign": Floor::SIGNS },
                "ratio_to_floor": ratio,
                "target_ratio": 0.8,
                "target_met": ratio >= 0.8,
                "command_pairs_after_select": pairs_after_select,
            })
        );
    } else {
        println!("offline purchase, in-process card, one core, median of {rounds} rounds x {iterations}:");
        println!(
            "  purchase:  {:8.1} us  ({:.0} purchases/s)",
            purchase_each.as_secs_f64() * 1e6,
            1.0 / purchase_each.as_secs_f64()
        );
        println!(
            "  floor:     {:8.1} us  ({} Ed25519 strict verifications + {} signatures)",
            floor_each.as_secs_f64() * 1e6,
            Floor::VERIFIES,
            Floor::SIGNS
        );
        println!("  ratio to floor: {ratio:.3} (target >= 0.8)");
        if ratio < 0.8 {
            println!("  BELOW TARGET: this run missed the target ratio");
        }
        println!("  command/response pairs after SELECT: {pairs_after_select} (target <= 3)");
    }
    Ok(ExitCode::SUCCESS)
}
