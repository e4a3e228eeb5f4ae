//! `valuecard bench transfer`: host CPU per card-to-card transfer (seed 000), settlement
//! terminal and both cards in this process, against the floor of the cryptographic
//! operations one transfer needs, measured in the same run.
//!
//! The two cards pass one minor unit back and forth, so neither runs out and every timed
//! transfer is the steady case: both cards on one key generation, nothing pending, each
//! card last written by the settlement terminal.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_core::crypto::{random_array, PublicKey, SecretBytes, Signature, SigningKeyPair};
use valuecard_core::ids::CardId;
use valuecard_core::messages::transfer::{
    ProofStatus, ProofSubject, TransferBinding, TransferKey, TransferProof, ValueMessage,
};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date, SystemClock};
use valuecard_reader::InProcessReader;
use valuecard_sim::{read_purse, Storage, World};

/// The command pairs a transfer may take after the two SELECTs (docs/protocols.md: INITIALIZE
/// TRANSFER IN, TRANSFER OUT, TRANSFER IN, TRANSFER COMPLETE).
const COMMAND_PAIRS_MAX: u64 = 4;
/// The goal: the transfer costs at most 1/0.8 of its cryptographic floor.
const TARGET_RATIO: f64 = 0.8;
/// Each card's value at the start: far more than the one unit in flight at a time.
const START_BALANCE_MINOR: u64 = 100_000;
/// A certificate body's size, as the signature covers it (bench.rs uses the same).
const CERTIFICATE_BODY_LEN: usize = 130;

#[derive(clap::Args, Debug)]
pub struct TransferArgs {
    /// Transfers per measurement round.
    #[arg(long, default_value_t = 1000)]
    iterations: u32,
    /// Measurement rounds (the median round is reported).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when the ratio of floor to transfer time is below this.
    #[arg(long, default_value_t = TARGET_RATIO)]
    min_ratio: f64,
}

use crate::bench::{median, time_checked, CountingReader};

type Reader = CountingReader<InProcessReader<MemoryEeprom, rand_chacha::ChaCha20Rng>>;

/// The cryptographic operations of one transfer, counted from the protocol:
///
/// Ed25519 verifications (10):
/// - the terminal verifies both card certificates at SELECT (2);
/// - the terminal verifies each card's previous record: its writer's certificate and the
///   record's signature (2 per card, 4);
/// - the destination verifies the terminal's certificate and its TransferIn record (2);
/// - the source verifies the terminal's certificate and its TransferOut record (2).
///
/// Ed25519 signatures (2): the SAM signs the two records.
///
/// AES: the source seals the value message and the destination opens it (AES-GCM, each
/// deriving the value key); the destination MACs its proof and the source checks it
/// (AES-CMAC, each deriving the proof key): 2 GCM, 2 CMAC, 4 key derivations.
struct Floor {
    verifications: Vec<(PublicKey, Vec<u8>, Signature)>,
    signers: Vec<(SigningKeyPair, Vec<u8>)>,
    key: TransferKey,
    binding: TransferBinding,
    subject: ProofSubject,
}

impl Floor {
    const CERTIFICATE_VERIFIES: usize = 6;
    const RECORD_VERIFIES: usize = 4;
    const VERIFIES: usize = Self::CERTIFICATE_VERIFIES + Self::RECORD_VERIFIES;
    const SIGNS: usize = 2;
    const GCM: usize = 2;
    const CMAC: usize = 2;
    const KEY_DERIVATIONS: usize = 4;

    /// `record_len`: the length of a real transfer record's signed message.
    fn new(record_len: usize, source: CardId, destination: CardId, date: Date) -> Self {
        let message = |index: usize, len: usize| vec![index as u8; len];
        let verifications = (0..Self::VERIFIES)
            .map(|index| {
                let key = SigningKeyPair::generate(&mut OsRng);
                let len = if index < Self::CERTIFICATE_VERIFIES {
                    CERTIFICATE_BODY_LEN
                } else {
                    record_len
                };
                let m = message(index, len);
                let signature = key.sign(&m);
                (key.public_key(), m, signature)
            })
            .collect();
        let signers = (0..Self::SIGNS)
            .map(|index| {
                (
                    SigningKeyPair::generate(&mut OsRng),
                    message(index, record_len),
                )
            })
            .collect();
        let key = TransferKey {
            id: 1,
            key: SecretBytes(random_array(&mut OsRng)),
        };
        let binding = TransferBinding {
            key_id: key.id,
            source,
            source_counter: 7,
            challenge_source: random_array(&mut OsRng),
            destination,
            destination_counter: 9,
            challenge_destination: random_array(&mut OsRng),
            challenge_terminal: random_array(&mut OsRng),
            date,
        };
        let subject = ProofSubject {
            source,
            challenge_source: binding.challenge_source,
            destination,
            amount: Amount::new(1).unwrap_or(Amount::ZERO),
        };
        Floor {
            verifications,
            signers,
            key,
            binding,
            subject,
        }
    }

    /// One transfer's operations; `false` if any check failed (the floor would be wrong).
    fn one_transfer(&self) -> bool {
        use std::hint::black_box;
        let mut ok = true;
        for (public, message, signature) in &self.verifications {
            ok &= black_box(public.verify(black_box(message), signature)).is_ok();
        }
        for (key, message) in &self.signers {
            black_box(key.sign(black_box(message)));
        }
        let sealed = ValueMessage::seal(&self.key, black_box(&self.binding), self.subject.amount);
        ok &= black_box(sealed.open(&self.key, &self.binding)).is_ok();
        let proof = TransferProof::make(
            ProofStatus::Received,
            &self.key,
            10,
            black_box(&self.subject),
        );
        ok &= black_box(proof.verify(&self.key, &self.subject)).is_ok();
        ok
    }
}

fn time_floor(floor: &Floor, iterations: u32) -> Result<Duration, String> {
    time_checked(iterations, || floor.one_transfer())
}

/// Two issued cards in counting readers, each already written once by the settlement
/// terminal (as in steady use).
struct Bench {
    world: World,
    a: Reader,
    b: Reader,
    /// Transfers done, to alternate the direction.
    count: u64,
}

impl Bench {
    fn new(today: Date) -> Result<Self, String> {
        let mut world = World::create(Storage::Memory, 1, today).map_err(|e| e.to_string())?;
        let mut reader = |name: &str| -> Result<Reader, String> {
            let card = world
                .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
                .map_err(|e| e.to_string())?;
            Ok(CountingReader {
                inner: InProcessReader::with_card(name, card),
                pairs: 0,
            })
        };
        let mut a = reader("A")?;
        let mut b = reader("B")?;
        let start = Amount::new(START_BALANCE_MINOR).map_err(|e| e.to_string())?;
        world.issue(&mut a, start).map_err(|e| e.to_string())?;
        world.issue(&mut b, start).map_err(|e| e.to_string())?;
        let mut bench = Bench {
            world,
            a,
            b,
            count: 0,
        };
        bench.one()?;
        bench.one()?;
        Ok(bench)
    }

    /// One transfer of one minor unit, A to B and B to A in turn; its command pairs after
    /// the two SELECTs.
    fn one(&mut self) -> Result<u64, String> {
        let one = Amount::new(1).map_err(|e| e.to_string())?;
        let (from, to) = if self.count.is_multiple_of(2) {
            (&mut self.a, &mut self.b)
        } else {
            (&mut self.b, &mut self.a)
        };
        let before = from.pairs + to.pairs;
        let receipt = self
            .world
            .transfer(from, to, one)
            .map_err(|e| format!("transfer {}: {e}", self.count))?;
        self.count += 1;
        if receipt.key_update.is_some() || receipt.settled_first.is_some() {
            return Err("a steady-state transfer updated a key or settled another".into());
        }
        // Two SELECTs, then the transfer's own pairs.
        Ok((from.pairs + to.pairs - before).saturating_sub(2))
    }
}

pub fn transfer(args: TransferArgs) -> Result<ExitCode, String> {
    let iterations = args.iterations.max(1);
    let rounds = args.rounds.max(1);
    let today = SystemClock.today();
    let mut bench = Bench::new(today)?;
    let pairs = bench.one()?;
    let status = read_purse(&mut bench.a).map_err(|e| e.to_string())?;
    let destination = read_purse(&mut bench.b).map_err(|e| e.to_string())?.card_id;
    let record_len = status
        .last_usage
        .as_ref()
        .map_or(180, |record| record.signed_message(&status.card_id).len());
    let floor = Floor::new(record_len, status.card_id, destination, today);
    time_floor(&floor, 1)?;

    let mut transfer_times = Vec::new();
    let mut floor_times = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            bench.one()?;
        }
        transfer_times.push(start.elapsed());
        floor_times.push(time_floor(&floor, iterations)?);
    }
    let transfer_each = median(transfer_times) / iterations;
    let floor_each = median(floor_times) / iterations;
    let ratio = floor_each.as_secs_f64() / transfer_each.as_secs_f64();
    let below = ratio < args.min_ratio;
    let too_many_pairs = pairs > COMMAND_PAIRS_MAX;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "transfer",
                "iterations": iterations,
                "rounds": rounds,
                "transfer_us": transfer_each.as_secs_f64() * 1e6,
                "transfers_per_second": 1.0 / transfer_each.as_secs_f64(),
                "floor_us": floor_each.as_secs_f64() * 1e6,
                "floor_operations": {
                    "ed25519_verify": Floor::VERIFIES,
                    "ed25519_sign": Floor::SIGNS,
                    "aes_gcm": Floor::GCM,
                    "aes_cmac": Floor::CMAC,
                    "key_derivations": Floor::KEY_DERIVATIONS,
                },
                "ratio_to_floor": ratio,
                "target_ratio": TARGET_RATIO,
                "min_ratio": args.min_ratio,
                "target_met": ratio >= TARGET_RATIO,
                "verdict": if below { "BELOW TARGET" } else { "ok" },
                "command_pairs_after_selects": pairs,
                "command_pairs_max": COMMAND_PAIRS_MAX,
            })
        );
    } else {
        println!(
            "card-to-card transfer, in-process cards, one core, median of {rounds} rounds x {iterations}:"
        );
        println!(
            "  transfer:  {:8.1} us  ({:.0} transfers/s)",
            transfer_each.as_secs_f64() * 1e6,
            1.0 / transfer_each.as_secs_f64()
        );
        println!(
            "  floor:     {:8.1} us  ({} Ed25519 strict verifications + {} signatures, {} AES-GCM, \
             {} AES-CMAC, {} key derivations)",
            floor_each.as_secs_f64() * 1e6,
            Floor::VERIFIES,
            Floor::SIGNS,
            Floor::GCM,
            Floor::CMAC,
            Floor::KEY_DERIVATIONS
        );
        println!(
            "  ratio to floor: {ratio:.3} (target >= {TARGET_RATIO}, required >= {})",
            args.min_ratio
        );
        println!(
            "  command/response pairs after the two SELECTs: {pairs} (at most {COMMAND_PAIRS_MAX})"
        );
    }
    if !args.json {
        if below {
            println!(
                "BELOW TARGET: ratio {ratio:.3} is below the required {}",
                args.min_ratio
            );
        }
        if too_many_pairs {
            println!(
                "TOO MANY COMMAND PAIRS: {pairs} after the two SELECTs, at most {COMMAND_PAIRS_MAX}"
            );
        }
    }
    Ok(if below || too_many_pairs {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
