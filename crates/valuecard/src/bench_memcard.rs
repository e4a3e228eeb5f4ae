//! `valuecard bench memcard`: host CPU per memory-card payment (seed 001) at a payment
//! machine, the machine, its SAM and the memory card in this process, against the floor of
//! the cryptographic operations one payment needs, measured in the same run.
//!
//! A memory card does no cryptography: everything is the machine's. The card is charged
//! once, then pays one minor unit per payment at the same machine, so every timed payment is
//! the steady case: the card last written by this machine (its certificate already on the
//! card), nothing pending in the log.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::memcard::MemoryCard;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{
    aes_gcm_open, aes_gcm_seal, derivation, diversify_key, random_array, PublicKey, SecretBytes,
    Signature, SigningKeyPair,
};
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{state_signing_input, PlainValue, ValueArea};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date, SystemClock};
use valuecard_reader::EmulatedReader;
use valuecard_sam::{SoftwareSam, ValueFormat};
use valuecard_sim::{install_sam, Storage, World};
use valuecard_terminal::memcard::{ChargeMachine, PaymentMachine};
use valuecard_terminal::store::MemoryStore;

use crate::bench::{median, time_checked, CountingReader};

/// The goal: a payment costs at most 1/0.6 of its cryptographic floor (the card's reads and
/// writes, the machine's log and its checks are the rest).
const TARGET_RATIO: f64 = 0.6;
/// A certificate body's size, as the signature covers it (bench.rs uses the same).
const CERTIFICATE_BODY_LEN: usize = 130;

#[derive(clap::Args, Debug)]
pub struct MemcardArgs {
    /// Payments per measurement round.
    #[arg(long, default_value_t = 1000)]
    iterations: u32,
    /// Measurement rounds (the median round is reported).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Claim 4: the card's value sealed under the writer's key (adds AES-GCM to the floor).
    #[arg(long)]
    sealed: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when the ratio of floor to payment time is below this.
    #[arg(long, default_value_t = TARGET_RATIO)]
    min_ratio: f64,
}

type Reader = CountingReader<EmulatedReader<MemoryCard<MemoryEeprom>>>;
type Payer = PaymentMachine<SoftwareSam, MemoryStore>;

/// The cryptographic operations of one payment (docs/memory-card-machines.md):
///
/// - Ed25519 verifications (2): the writer's certificate against the center's key, and the
///   writer's signature over (card ID, counter, value area);
/// - Ed25519 signature (1): the machine's SAM signs the new state;
/// - sealed values only: the SAM derives the last writer's value key and opens the value,
///   derives its own and seals the new one (2 key derivations, 2 AES-GCM).
struct Floor {
    verifications: Vec<(PublicKey, Vec<u8>, Signature)>,
    signer: SigningKeyPair,
    state: Vec<u8>,
    /// For sealed values: the common key and a value sealed under a writer's key.
    sealed: Option<(SecretBytes<16>, Vec<u8>)>,
}

impl Floor {
    const VERIFIES: usize = 2;
    const SIGNS: usize = 1;

    fn new(sealed: bool, today: Date) -> Result<Self, String> {
        let card = CardId([0xC1, 0, 0, 0, 0, 0, 0, 1]);
        let value = PlainValue {
            date: today,
            amount: Amount::new(12_345).map_err(|e| e.to_string())?,
        };
        let state = state_signing_input(&card, 65_000, &ValueArea::Plain(value).encode());
        let verifications = [CERTIFICATE_BODY_LEN, state.len()]
            .iter()
            .map(|&len| {
                let key = SigningKeyPair::generate(&mut OsRng);
                let message = vec![0x5A; len];
                let signature = key.sign(&message);
                (key.public_key(), message, signature)
            })
            .collect();
        let sealed = sealed.then(|| {
            let common_key = SecretBytes(random_array(&mut OsRng));
            let writer_key = diversify_key(&common_key, derivation::MEMCARD_VALUE_KEY, &[1; 8]);
            let ciphertext = aes_gcm_seal(&writer_key, &[7; 12], &state[..20], &value.encode());
            (common_key, ciphertext)
        });
        Ok(Floor {
            verifications,
            signer: SigningKeyPair::generate(&mut OsRng),
            state,
            sealed,
        })
    }

    fn one_payment(&self) -> bool {
        use std::hint::black_box;
        let mut ok = true;
        for (public, message, signature) in &self.verifications {
            ok &= black_box(public.verify(black_box(message), signature)).is_ok();
        }
        black_box(self.signer.sign(black_box(&self.state)));
        if let Some((common_key, ciphertext)) = &self.sealed {
            let constant = derivation::MEMCARD_VALUE_KEY;
            let writer_key = diversify_key(common_key, constant, black_box(&[1u8; 8]));
            let opened = aes_gcm_open(&writer_key, &[7; 12], &self.state[..20], ciphertext);
            ok &= black_box(opened).is_ok();
            let own_key = diversify_key(common_key, constant, black_box(&[2u8; 8]));
            black_box(aes_gcm_seal(
                &own_key,
                &[8; 12],
                &self.state[..20],
                &[9; 12],
            ));
        }
        ok
    }
}

fn time_floor(floor: &Floor, iterations: u32) -> Result<Duration, String> {
    time_checked(iterations, || floor.one_payment())
}

/// A charged memory card at a payment machine that has written it once.
struct Bench {
    payer: Payer,
    card: Reader,
    one: Amount,
}

impl Bench {
    fn new(today: Date, payments: u64, format: ValueFormat) -> Result<Self, String> {
        let error = |e: &dyn std::fmt::Display| e.to_string();
        let mut world = World::create(Storage::Memory, 1, today).map_err(|e| error(&e))?;
        let mut rng = world.fork_rng();
        let clock = world.clock();
        let charge_sam = install_sam(&mut world.center, Role::ChargeMachine, clock, &mut rng)
            .map_err(|e| error(&e))?;
        let clock = world.clock();
        let pay_sam = install_sam(&mut world.center, Role::PaymentMachine, clock, &mut rng)
            .map_err(|e| error(&e))?;
        let mut charger = ChargeMachine::new(charge_sam, MemoryStore::default(), world.clock())
            .map_err(|e| error(&e))?;
        let payer = PaymentMachine::new(pay_sam, MemoryStore::default(), world.clock())
            .map_err(|e| error(&e))?;
        let card = MemoryCard::manufacture(
            MemoryEeprom::new(EEPROM_SIZE),
            CardId([0xC1, 0, 0, 0, 0, 0, 0, 1]),
        )
        .map_err(|e| error(&e))?;
        let mut card = CountingReader {
            inner: EmulatedReader::with_card("bench memory card", card),
            pairs: 0,
        };
        let value = Amount::new(payments + 1).map_err(|e| error(&e))?;
        charger
            .refill_float(&mut world.center, value)
            .map_err(|e| error(&e))?;
        charger
            .charge(&mut card, value, format, None)
            .map_err(|e| error(&e))?;
        let mut bench = Bench {
            payer,
            card,
            one: Amount::new(1).map_err(|e| error(&e))?,
        };
        bench.pay()?;
        Ok(bench)
    }

    /// One payment of one minor unit; its command pairs.
    fn pay(&mut self) -> Result<u64, String> {
        let before = self.card.pairs;
        let receipt = self
            .payer
            .pay(&mut self.card, self.one, None)
            .map_err(|e| format!("payment: {e}"))?;
        if !receipt.repairs.is_empty() {
            return Err("a steady-state payment repaired an earlier write".into());
        }
        Ok(self.card.pairs - before)
    }
}

pub fn memcard(args: MemcardArgs) -> Result<ExitCode, String> {
    let iterations = args.iterations.max(1);
    let rounds = args.rounds.max(1);
    let today = SystemClock.today();
    let payments = u64::from(iterations) * u64::from(rounds) + 2;
    if payments >= u64::from(valuecard_core::messages::memcard::COUNTER_START) {
        return Err(format!(
            "{payments} payments are more value writes than a memory card takes; lower --iterations or --rounds"
        ));
    }
    let format = if args.sealed {
        ValueFormat::Sealed
    } else {
        ValueFormat::Plain
    };
    let mut bench = Bench::new(today, payments, format)?;
    let pairs = bench.pay()?;
    let floor = Floor::new(args.sealed, today)?;
    time_floor(&floor, 1)?;

    let mut payment_times = Vec::new();
    let mut floor_times = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            bench.pay()?;
        }
        payment_times.push(start.elapsed());
        floor_times.push(time_floor(&floor, iterations)?);
    }
    let payment_each = median(payment_times) / iterations;
    let floor_each = median(floor_times) / iterations;
    let ratio = floor_each.as_secs_f64() / payment_each.as_secs_f64();
    let below = ratio < args.min_ratio;
    let (gcm, derivations) = if args.sealed { (2, 2) } else { (0, 0) };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "memcard",
                "format": if args.sealed { "sealed" } else { "plain" },
                "iterations": iterations,
                "rounds": rounds,
                "payment_us": payment_each.as_secs_f64() * 1e6,
                "payments_per_second": 1.0 / payment_each.as_secs_f64(),
                "floor_us": floor_each.as_secs_f64() * 1e6,
                "floor_operations": {
                    "ed25519_verify": Floor::VERIFIES,
                    "ed25519_sign": Floor::SIGNS,
                    "aes_gcm": gcm,
                    "key_derivations": derivations,
                },
                "ratio_to_floor": ratio,
                "target_ratio": TARGET_RATIO,
                "min_ratio": args.min_ratio,
                "target_met": ratio >= TARGET_RATIO,
                "verdict": if below { "BELOW TARGET" } else { "ok" },
                "command_pairs": pairs,
            })
        );
    } else {
        println!(
            "memory-card payment ({}), machine, SAM and card in-process, one core, median of {rounds} rounds x {iterations}:",
            if args.sealed { "sealed value, claim 4" } else { "value in the clear" }
        );
        println!(
            "  payment:   {:8.1} us  ({:.0} payments/s)",
            payment_each.as_secs_f64() * 1e6,
            1.0 / payment_each.as_secs_f64()
        );
        println!(
            "  floor:     {:8.1} us  ({} Ed25519 strict verifications + {} signature{})",
            floor_each.as_secs_f64() * 1e6,
            Floor::VERIFIES,
            Floor::SIGNS,
            if args.sealed {
                ", 2 key derivations, 2 AES-GCM"
            } else {
                ""
            }
        );
        println!(
            "  ratio to floor: {ratio:.3} (target >= {TARGET_RATIO}, required >= {})",
            args.min_ratio
        );
        println!("  command/response pairs per payment: {pairs}");
        if below {
            println!(
                "BELOW TARGET: ratio {ratio:.3} is below the required {}",
                args.min_ratio
            );
        }
    }
    Ok(if below {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
