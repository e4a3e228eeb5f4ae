//! `valuecard bench sam`: Ed25519 signatures per second through the `Sam` trait, by a
//! PKCS#11 SAM in a throw-away SoftHSM2 token against the software SAM, in the same run.
//!
//! Two measurements, each the median of several rounds:
//! - request signatures (`sign_device_request`): one EdDSA signature and nothing else, so
//!   the PKCS#11 figure is the token's signing rate plus the PKCS#11 call;
//! - purchase signatures (`sign_purchase`): what a payment terminal asks at every DEBIT,
//!   where the PKCS#11 SAM also reserves a block of sequences in the token before the first
//!   of them (one state write per `SEQUENCE_BLOCK` purchases, synced to disk by SoftHSM2).
//!
//! There is no target: the ratio says what a terminal gives up by keeping its keys in a
//! token; a real HSM's figure depends on the device and its link.

use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;
use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::InstallationRequest;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date, SystemClock};
use valuecard_sam::{PurchaseOrder, Sam, SoftwareSam};
use valuecard_sam_pkcs11::softhsm::{self, THROWAWAY_USER_PIN};
use valuecard_sam_pkcs11::{Pkcs11Sam, TokenAddress};
use valuecard_sim::{Storage, World};

use crate::bench::median;

#[derive(clap::Args, Debug)]
pub struct BenchSamArgs {
    /// Request signatures per round and SAM (purchases: a quarter of it).
    #[arg(long, default_value_t = 2000)]
    signatures: u32,
    /// Measurement rounds (the median round is reported).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Installs `sam` at the world's center as a payment terminal.
fn install(world: &mut World, sam: &mut dyn Sam) -> Result<(), String> {
    let challenge = random_array(&mut world.fork_rng());
    let request = InstallationRequest {
        device_id: sam.device_id(),
        signing_key: sam.signing_key(),
        sealing_key: sam.sealing_key(),
        challenge,
    };
    let installation = world
        .center
        .install_device(&request, Role::PaymentTerminal)
        .map_err(error)?;
    sam.install(
        &installation,
        &challenge,
        Role::PaymentTerminal,
        world.today(),
    )
    .map_err(error)?;
    Ok(())
}

/// Operations per second of `operation` run `count` times, median of `rounds`.
fn rate(
    rounds: u32,
    count: u32,
    mut operation: impl FnMut(u32) -> Result<(), String>,
) -> Result<f64, String> {
    let mut times = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let started = Instant::now();
        for index in 0..count {
            operation(index)?;
        }
        times.push(started.elapsed());
    }
    Ok(f64::from(count) / median(times).as_secs_f64().max(1e-9))
}

fn purchase_order(card_id: CardId, date: Date) -> Result<PurchaseOrder, String> {
    let balance = Amount::new(1_000_000).map_err(error)?;
    Ok(PurchaseOrder {
        card_id,
        challenge_terminal: [1; 16],
        challenge_card: [2; 16],
        counter: 1,
        balance_before: balance,
        amount_max: balance,
        amount: Amount::new(1).map_err(error)?,
        date,
        sequence_floor: 0,
    })
}

pub fn sam(args: BenchSamArgs) -> Result<ExitCode, String> {
    if args.signatures == 0 || args.rounds == 0 {
        return Err("--signatures and --rounds must be positive".into());
    }
    let module = softhsm::installed_module().ok_or(
        "bench sam runs a throw-away SoftHSM2 token: install softhsm2 (Debian package softhsm2)",
    )?;
    let tokens = tempfile::tempdir().map_err(error)?;
    softhsm::use_directory_for_process(tokens.path())?;
    let label = softhsm::fresh_token(&module, "bench").map_err(error)?;
    let address = TokenAddress::parse(
        &format!("pkcs11:token={label};object=bench?pin-value={THROWAWAY_USER_PIN}"),
        Some(&module),
    )
    .map_err(error)?;

    let today = SystemClock.today();
    let mut world = World::create(Storage::Memory, 0, today).map_err(error)?;
    let software_id = world.center.allocate_device_id().map_err(error)?;
    let mut software = SoftwareSam::manufacture(
        software_id,
        world.center.transport_key_for_device(&software_id),
        &mut world.fork_rng(),
    )
    .with_clock(world.clock());
    install(&mut world, &mut software)?;
    let token_id = world.center.allocate_device_id().map_err(error)?;
    let mut token = Pkcs11Sam::manufacture(
        &address,
        token_id,
        world.center.transport_key_for_device(&token_id),
    )
    .map_err(error)?
    .with_clock(world.clock());
    install(&mut world, &mut token)?;

    let count = args.signatures;
    let body = [0u8; 256];
    let sign_request = |sam: &mut dyn Sam| {
        rate(args.rounds, count, |index| {
            sam.sign_device_request("POST", "/v1/usage", u64::from(index), &body)
                .map(|_| ())
                .map_err(error)
        })
    };
    let software_requests = sign_request(&mut software)?;
    let token_requests = sign_request(&mut token)?;
    let purchases = (count / 4).max(1);
    let order = purchase_order(CardId(random_array(&mut world.fork_rng())), today)?;
    let sign_purchase = |sam: &mut dyn Sam| {
        rate(args.rounds, purchases, |_| {
            sam.sign_purchase(&order).map(|_| ()).map_err(error)
        })
    };
    let software_purchases = sign_purchase(&mut software)?;
    let token_purchases = sign_purchase(&mut token)?;
    let request_ratio = token_requests / software_requests;
    let purchase_ratio = token_purchases / software_purchases;

    if args.json {
        println!(
            "{}",
            json!({
                "module": module.display().to_string(),
                "signatures_per_round": count,
                "purchases_per_round": purchases,
                "rounds": args.rounds,
                "software_request_signatures_per_second": software_requests,
                "pkcs11_request_signatures_per_second": token_requests,
                "request_ratio": request_ratio,
                "software_purchases_per_second": software_purchases,
                "pkcs11_purchases_per_second": token_purchases,
                "purchase_ratio": purchase_ratio,
            })
        );
    } else {
        println!(
            "bench sam: Ed25519 through the Sam trait, median of {} rounds; PKCS#11 = {}",
            args.rounds,
            module.display()
        );
        println!(
            "  request signatures ({count}/round):  software {software_requests:>9.0}/s   PKCS#11 {token_requests:>9.0}/s   ratio {request_ratio:.3}"
        );
        println!(
            "  purchase signatures ({purchases}/round, PKCS#11 reserving sequences in the token):  software {software_purchases:>9.0}/s   PKCS#11 {token_purchases:>9.0}/s   ratio {purchase_ratio:.4}"
        );
    }
    drop(token);
    drop(tokens);
    Ok(ExitCode::SUCCESS)
}
