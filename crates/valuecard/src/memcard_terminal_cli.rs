//! `valuecard terminal charge`, `terminal pay` and `terminal machine-sync`: the charge and
//! payment machines of seed 001 for memory cards, from the command line.
//!
//! A machine is a device installed with `terminal install --charge-machine` or
//! `--payment-machine`; its SAM image and its log of writes (`writes.sqlite`) live in its
//! device directory. The SAM image is stored again right after the SAM signed a write and
//! before the write is logged and the card touched, so that its lowered float and its
//! sequence are never lost to a crash while the log holds the write.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::device_sam::DeviceSam;
use serde_json::json;
use valuecard_card::memcard::FileMemoryCard;
use valuecard_core::messages::memcard::{MemcardLink, ValueArea, WriteKind, WriteReceipt};
use valuecard_core::money::Amount;
use valuecard_reader::{CardReader, EmulatedReader};
use valuecard_sam::ValueFormat;
use valuecard_terminal::memcard::{MachineReceipt, MemcardMachine, PendingReport, RepairOutcome};
use valuecard_terminal::store::{MemcardLog, SqliteStore, WriteStatus};

use crate::datadir::{self, CenterArgs};
use crate::lifecycle::{explain, parse_amount, ReaderArgs};

/// Where the memory card is: a card image in this process, or a PC/SC reader by name.
#[derive(clap::Args, Debug)]
pub(crate) struct MemcardReaderArgs {
    #[command(flatten)]
    pub reader: ReaderArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ChargeArgs {
    #[arg(long)]
    data: PathBuf,
    /// The amount taken in, in currency units with up to two decimals, e.g. 20.00.
    #[arg(long)]
    amount: String,
    /// Claim 4: write the value sealed under this machine's key instead of in the clear.
    #[arg(long)]
    sealed: bool,
    #[arg(long, default_value = "charge-machine-1")]
    machine: String,
    /// When the card's value does not verify, ask the center for its newest state and write
    /// it back if the card shows exactly that state.
    #[arg(long)]
    repair_from_center: bool,
    #[command(flatten)]
    center: CenterArgs,
    #[command(flatten)]
    reader: MemcardReaderArgs,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct PayArgs {
    #[arg(long)]
    data: PathBuf,
    /// The amount deducted, in currency units with up to two decimals, e.g. 3.20.
    #[arg(long)]
    amount: String,
    #[arg(long, default_value = "payment-machine-1")]
    machine: String,
    /// As for `terminal charge`.
    #[arg(long)]
    repair_from_center: bool,
    #[command(flatten)]
    center: CenterArgs,
    #[command(flatten)]
    reader: MemcardReaderArgs,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct MachineSyncArgs {
    #[arg(long)]
    data: PathBuf,
    /// A charge or payment machine.
    #[arg(long)]
    machine: String,
    /// A charge machine: also ask the center for this much float.
    #[arg(long, value_name = "AMOUNT")]
    float: Option<String>,
    #[command(flatten)]
    center: CenterArgs,
    #[arg(long)]
    json: bool,
}

/// Opens the memory card: a PC/SC reader by name, or a card image in this process.
fn open_memory_card(args: &MemcardReaderArgs) -> Result<Box<dyn CardReader>, String> {
    match &args.reader.card {
        Some(path) => open_memory_card_file(path),
        None => match &args.reader.reader {
            Some(name) => crate::pcsc::open(Some(name), args.reader.wait),
            None => Err(
                "name the reader that holds the memory card with --reader (or give a card image with --card)"
                    .to_owned(),
            ),
        },
    }
}

/// A memory-card image in this process (`valuecard memcard issue` makes one). The image
/// file is locked while it is open, so one card is never served twice.
fn open_memory_card_file(path: &Path) -> Result<Box<dyn CardReader>, String> {
    let card = FileMemoryCard::open_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Box::new(EmulatedReader::with_card(
        path.display().to_string(),
        card,
    )))
}

/// The center's memory-card link: its HTTP service at `--center`, or the center opened in
/// this process.
fn memcard_link(
    data: &Path,
    machine: &str,
    role: valuecard_core::cert::Role,
    at: &CenterArgs,
) -> Result<Box<dyn MemcardLink>, String> {
    Ok(match &at.center {
        Some(url) => Box::new(datadir::open_device_link(data, machine, role, url)?),
        None => Box::new(datadir::open_center_on(data, at.database.as_deref())?),
    })
}

/// Runs `work` with the center's memory-card link.
fn with_memcard_link<T>(
    data: &Path,
    machine: &str,
    role: valuecard_core::cert::Role,
    at: &CenterArgs,
    work: impl FnOnce(&mut dyn MemcardLink) -> Result<T, String>,
) -> Result<T, String> {
    let mut link = memcard_link(data, machine, role, at)?;
    work(&mut *link)
}

fn format_repairs(repairs: &[RepairOutcome]) -> Vec<serde_json::Value> {
    repairs
        .iter()
        .map(|repair| match repair {
            RepairOutcome::Finished { sequence } => json!({"finished": sequence}),
            RepairOutcome::Redone { sequence } => json!({"redone": sequence}),
            RepairOutcome::Voided { sequence } => json!({"voided": sequence}),
            RepairOutcome::Unresolved { sequence } => json!({"unresolved": sequence}),
            RepairOutcome::RestoredFromCenter { writer, counter } => {
                json!({"restored_from_center": {"writer": writer.to_string(), "counter": counter}})
            }
        })
        .collect()
}

fn print_receipt(receipt: &MachineReceipt, float: Option<u64>, json_output: bool) {
    if json_output {
        println!(
            "{}",
            json!({
                "card": receipt.card_id.to_string(),
                "kind": match receipt.kind { WriteKind::Charge => "charge", WriteKind::Payment => "payment" },
                "sequence": receipt.sequence,
                "amount": receipt.amount.minor(),
                "balance_before": receipt.balance_before.minor(),
                "balance_after": receipt.balance_after.minor(),
                "counter": receipt.counter_after,
                "repairs": format_repairs(&receipt.repairs),
                "float": float,
            })
        );
        return;
    }
    for repair in &receipt.repairs {
        println!("  earlier write on this card: {repair:?}");
    }
    let verb = match receipt.kind {
        WriteKind::Charge => "charged",
        WriteKind::Payment => "paid",
    };
    println!(
        "card {}: {verb} {}, balance {} -> {} (counter {}, write {})",
        receipt.card_id,
        receipt.amount,
        receipt.balance_before,
        receipt.balance_after,
        receipt.counter_after,
        receipt.sequence
    );
}

pub(crate) fn terminal_charge(args: &ChargeArgs) -> Result<ExitCode, String> {
    let amount = parse_amount(&args.amount)?;
    let mut machine = datadir::open_charge_machine(&args.data, &args.machine)?;
    let mut boxed = open_memory_card(&args.reader)?;
    let format = if args.sealed {
        ValueFormat::Sealed
    } else {
        ValueFormat::Plain
    };
    let mut link = match args.repair_from_center {
        true => Some(memcard_link(
            &args.data,
            &args.machine,
            valuecard_core::cert::Role::ChargeMachine,
            &args.center,
        )?),
        false => None,
    };
    let receipt = write_at_machine(
        &args.data,
        &args.machine,
        machine.machine_mut(),
        &mut *boxed,
        WriteKind::Charge,
        amount,
        Some(format),
        link.as_mut()
            .map(|link| &mut **link as &mut dyn MemcardLink),
    )?;
    print_receipt(&receipt, Some(machine.float().minor()), args.json);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn terminal_pay(args: &PayArgs) -> Result<ExitCode, String> {
    let amount = parse_amount(&args.amount)?;
    let mut machine = datadir::open_payment_machine(&args.data, &args.machine)?;
    let mut boxed = open_memory_card(&args.reader)?;
    let mut link = match args.repair_from_center {
        true => Some(memcard_link(
            &args.data,
            &args.machine,
            valuecard_core::cert::Role::PaymentMachine,
            &args.center,
        )?),
        false => None,
    };
    let receipt = write_at_machine(
        &args.data,
        &args.machine,
        machine.machine_mut(),
        &mut *boxed,
        WriteKind::Payment,
        amount,
        None,
        link.as_mut()
            .map(|link| &mut **link as &mut dyn MemcardLink),
    )?;
    print_receipt(&receipt, None, args.json);
    Ok(ExitCode::SUCCESS)
}

/// One write at a machine of the data directory: the card presented (earlier writes
/// repaired), the write signed and logged, the SAM image stored (its float and sequence
/// moved), then the card written. `format` `None` keeps the card's (a sealed value stays
/// sealed, claim 4).
#[allow(clippy::too_many_arguments)]
fn write_at_machine(
    data: &Path,
    name: &str,
    machine: &mut MemcardMachine<DeviceSam, SqliteStore>,
    mut reader: &mut dyn CardReader,
    kind: WriteKind,
    amount: Amount,
    format: Option<ValueFormat>,
    link: Option<&mut dyn MemcardLink>,
) -> Result<MachineReceipt, String> {
    let (verified, repairs) = machine
        .present(&mut reader, link)
        .map_err(|e| explain(&e))?;
    let format = format.unwrap_or(
        match verified
            .state()
            .signed_state()
            .map(|state| &state.value_area)
        {
            Some(ValueArea::Sealed { .. }) => ValueFormat::Sealed,
            _ => ValueFormat::Plain,
        },
    );
    let signed = machine
        .sign_write(verified, kind, amount, format)
        .map_err(|e| explain(&e))?;
    // The SAM's float and sequence are stored before the write is logged: a crash between
    // the two leaves a SAM that spent the float on a write nobody logged (lost to the
    // machine, never created), never a logged write paid from float the SAM still holds.
    datadir::save_machine_sam(data, name, machine.sam())?;
    let pending = machine.log_write(signed).map_err(|e| explain(&e))?;
    machine
        .write_value(&mut reader, pending)
        .and_then(|written| machine.write_signature(&mut reader, written))
        .and_then(|signed| machine.finish(signed, repairs))
        .map_err(|e| unfinished(&e))
}

/// A write that failed after it was logged: what the holder and the operator do next.
fn unfinished(error: &valuecard_terminal::TerminalError) -> String {
    format!(
        "{}; the write is kept in this machine's log and is finished (or, for a payment whose \
         value never reached the card, voided) the next time this card is presented here",
        explain(error)
    )
}

/// Fetch the list entries the machine lacks, upload its done writes, and (a charge machine,
/// with --float) take more float from the center.
pub(crate) fn terminal_machine_sync(args: &MachineSyncArgs) -> Result<ExitCode, String> {
    if datadir::is_device_of_role(
        &args.data,
        &args.machine,
        valuecard_core::cert::Role::ChargeMachine,
    ) {
        let mut machine = datadir::open_charge_machine(&args.data, &args.machine)?;
        let float = args.float.as_deref().map(parse_amount).transpose()?;
        let version = update_lists(
            args,
            valuecard_core::cert::Role::ChargeMachine,
            machine.machine_mut(),
        )?;
        let (receipt, float) = with_memcard_link(
            &args.data,
            &args.machine,
            valuecard_core::cert::Role::ChargeMachine,
            &args.center,
            |link| {
                let receipt = upload_and_report(machine.machine_mut(), link)?;
                let float = match float {
                    Some(amount) => Some(
                        machine
                            .refill_float(&mut &mut *link, amount)
                            .map_err(|e| explain(&e))?,
                    ),
                    None => None,
                };
                Ok((receipt, float))
            },
        )?;
        datadir::save_machine_sam(&args.data, &args.machine, machine.machine().sam())?;
        let log = machine.machine().store();
        print_sync(
            &args.machine,
            &receipt,
            float.or(Some(machine.float())),
            version,
            log,
            args.json,
        )
    } else {
        if args.float.is_some() {
            return Err("only a charge machine holds float".to_owned());
        }
        let mut machine = datadir::open_payment_machine(&args.data, &args.machine)?;
        let version = update_lists(
            args,
            valuecard_core::cert::Role::PaymentMachine,
            machine.machine_mut(),
        )?;
        let receipt = with_memcard_link(
            &args.data,
            &args.machine,
            valuecard_core::cert::Role::PaymentMachine,
            &args.center,
            |link| upload_and_report(machine.machine_mut(), link),
        )?;
        let log = machine.machine().store();
        print_sync(&args.machine, &receipt, None, version, log, args.json)
    }
}

/// Uploads the machine's done writes, then reports its pending ones (held by the center
/// as restore evidence, or settled by records it already has).
fn upload_and_report(
    machine: &mut MemcardMachine<DeviceSam, SqliteStore>,
    link: &mut dyn MemcardLink,
) -> Result<(WriteReceipt, PendingReport), String> {
    let receipt = machine
        .upload_writes(&mut &mut *link)
        .map_err(|e| explain(&e))?;
    let report = machine
        .report_pending(&mut &mut *link)
        .map_err(|e| explain(&e))?;
    Ok((receipt, report))
}

/// Fetches the list entries the machine lacks (cards and machines it must refuse), from the
/// center's HTTP service or the center opened in this process.
fn update_lists(
    args: &MachineSyncArgs,
    role: valuecard_core::cert::Role,
    machine: &mut MemcardMachine<DeviceSam, SqliteStore>,
) -> Result<u64, String> {
    match &args.center.center {
        Some(url) => {
            let mut link = datadir::open_device_link(&args.data, &args.machine, role, url)?;
            machine.update_lists(&mut link)
        }
        None => {
            let mut center = datadir::open_center_on(&args.data, args.center.database.as_deref())?;
            machine.update_lists(&mut center)
        }
    }
    .map_err(|e| explain(&e))
}

fn print_sync(
    name: &str,
    (receipt, reported): &(WriteReceipt, PendingReport),
    float: Option<valuecard_core::money::Amount>,
    list_version: u64,
    log: &impl MemcardLog,
    json_output: bool,
) -> Result<ExitCode, String> {
    // Counted by the log: a machine's log grows with every write it ever made.
    let count = |status| log.count_writes(status).map_err(|e| e.to_string());
    let (pending, voided) = (count(WriteStatus::Pending)?, count(WriteStatus::Voided)?);
    if json_output {
        println!(
            "{}",
            json!({
                "machine": name,
                "stored": receipt.stored,
                "duplicates": receipt.duplicates,
                "refused": receipt.refused.iter().map(|(sequence, reason)| json!({"sequence": sequence, "reason": reason})).collect::<Vec<_>>(),
                "float": float.map(|float| float.minor()),
                "pending_writes": pending,
                "voided_writes": voided,
                "pending_reported": {
                    "held": reported.held,
                    "landed": reported.landed,
                    "superseded": reported.superseded,
                    "charges_owed": reported.charges_owed.minor(),
                    "refused": reported.refused.iter().map(|(sequence, reason)| json!({"sequence": sequence, "reason": reason})).collect::<Vec<_>>(),
                },
                "list_version": list_version,
            })
        );
    } else {
        println!(
            "{name}: {} writes stored, {} already there, {} refused; {pending} pending, {voided} voided; lists at version {list_version}{}",
            receipt.stored,
            receipt.duplicates,
            receipt.refused.len(),
            float.map_or(String::new(), |float| format!("; float {float}"))
        );
        if *reported != PendingReport::default() {
            println!(
                "{name}: pending writes reported: {} held by the center as evidence, {} found landed (done), {} superseded (voided), {} refused",
                reported.held,
                reported.landed,
                reported.superseded,
                reported.refused.len()
            );
        }
        if reported.charges_owed > Amount::ZERO {
            println!(
                "{name}: {} of charges never reached their cards (each card took another write first): owed back to whoever paid them",
                reported.charges_owed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    //! The commands' write path against the memory-card double, on machines stored in a data
    //! directory as `terminal install` leaves them (installed here by the SAM crate's
    //! stand-in center: the center's enrolment of these roles is not in this build).

    use rand_chacha::rand_core::SeedableRng;
    use valuecard_core::cert::Role;
    use valuecard_core::ids::{CardId, DeviceId};
    use valuecard_sam::testing::TestCenter;
    use valuecard_sam::Sam;
    use valuecard_sam::SoftwareSam;
    use valuecard_terminal::memcard::testing::{Cut, MemoryCardDouble};

    use super::*;

    const TODAY: valuecard_core::time::Date = valuecard_core::time::Date(20_600);

    fn device(data: &Path, name: &str, role: &str, sam: &SoftwareSam) {
        let dir = datadir::device_dir(data, name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("role"), role).unwrap();
        std::fs::write(dir.join("sam.key"), sam.to_image()).unwrap();
    }

    fn stored_sam(data: &Path, name: &str) -> SoftwareSam {
        let image = std::fs::read(datadir::device_dir(data, name).join("sam.key")).unwrap();
        SoftwareSam::from_image(&image).unwrap()
    }

    #[test]
    fn a_charge_and_a_payment_keep_the_sam_image_and_the_log_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let mut center = TestCenter::new(&mut rng, DeviceId([0xCE; 8]), TODAY);
        let mut charger = center.install(Role::ChargeMachine, &mut rng);
        let grant = center.grant(charger.device_id(), 1, Amount::new(10_000).unwrap());
        charger.take_float_grant(&grant).unwrap();
        device(data, "charge-machine-1", "charge-machine", &charger);
        let payer = center.install(Role::PaymentMachine, &mut rng);
        device(data, "payment-machine-1", "payment-machine", &payer);
        let amount = |minor| Amount::new(minor).unwrap();

        let mut card = MemoryCardDouble::new(CardId([0x4D, 0, 0, 0, 0, 0, 0, 1]));
        // The card is pulled before the value area was written: the charge is logged and
        // the float spent on disk, and the next charge writes it first.
        card.cut_at_write(0, Cut::Before);
        let mut machine = datadir::open_charge_machine(data, "charge-machine-1").unwrap();
        let error = write_at_machine(
            data,
            "charge-machine-1",
            machine.machine_mut(),
            &mut card,
            WriteKind::Charge,
            amount(2_000),
            Some(ValueFormat::Sealed),
            None,
        )
        .unwrap_err();
        assert!(error.contains("kept in this machine's log"), "{error}");
        drop(machine);
        assert_eq!(stored_sam(data, "charge-machine-1").float(), amount(8_000));
        assert_eq!(stored_sam(data, "charge-machine-1").memcard_sequence(), 1);

        let mut machine = datadir::open_charge_machine(data, "charge-machine-1").unwrap();
        let receipt = write_at_machine(
            data,
            "charge-machine-1",
            machine.machine_mut(),
            &mut card,
            WriteKind::Charge,
            amount(1_000),
            Some(ValueFormat::Sealed),
            None,
        )
        .unwrap();
        assert_eq!(receipt.repairs, [RepairOutcome::Redone { sequence: 1 }]);
        assert_eq!(receipt.balance_after, amount(3_000));
        assert_eq!(stored_sam(data, "charge-machine-1").float(), amount(7_000));
        let log = machine.machine().store().writes().unwrap();
        assert!(log.iter().all(|w| w.status == WriteStatus::Done));
        assert_eq!(log.len(), 2);

        let mut machine = datadir::open_payment_machine(data, "payment-machine-1").unwrap();
        let receipt = write_at_machine(
            data,
            "payment-machine-1",
            machine.machine_mut(),
            &mut card,
            WriteKind::Payment,
            amount(500),
            None,
            None,
        )
        .unwrap();
        assert_eq!(receipt.balance_after, amount(2_500));
        let content = valuecard_terminal::memcard::PresentedCard::read(&mut card)
            .unwrap()
            .content()
            .unwrap();
        assert!(matches!(content.value_area, ValueArea::Sealed { .. }));
        // A role that is not the device's is refused when the machine is opened.
        assert!(datadir::open_charge_machine(data, "payment-machine-1").is_err());
    }
}
