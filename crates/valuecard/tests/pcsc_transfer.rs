//! Card-to-card transfer through two PC/SC readers at once (seed 000): `valuecard card
//! attach` serves one card image in each of vpcd's two reader slots, and `valuecard terminal
//! transfer --from-reader --to-reader` moves value between them; then either card leaves its
//! reader at each command of a transfer that can change it (`card attach --danger-*`), and
//! `terminal settle-transfer` settles, exactly once, what it had committed.
//!
//! Needs pcscd with vpcd (`scripts/start-pcscd.sh`) and the `pcsc` feature
//! (`cargo test -p valuecard --features pcsc --test pcsc_transfer`); says `SKIPPED: ...` on
//! stderr and passes without them. It takes the same readers lock as tests/pcsc.rs (a port
//! bound on 127.0.0.1), so the two files never use vpcd's readers at the same time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use valuecard_reader::vpcd::DEFAULT_PORT;

/// Part of the name pcsc-lite gives vpcd's readers ("Virtual PCD 00 00", "... 00 01").
const VPCD_READER: &str = "Virtual PCD";
/// How long pcscd may take to notice a card (it polls about every 400 ms).
const CARD_WAIT: Duration = Duration::from_secs(30);
const CARD_WAIT_SECONDS: &str = "30";
/// The readers lock of tests/pcsc.rs.
const READERS_LOCK_PORT: u16 = 35960;

/// Says that a test was skipped, on the process's stderr directly (the harness captures
/// `eprintln!` of passing tests, and CI must see every skip).
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn valuecard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_valuecard"))
}

/// Whether vpcd (inside pcscd) listens on its port, looked up in /proc/net/tcp so that the
/// check does not connect as a card.
fn vpcd_available() -> bool {
    let suffix = format!(":{DEFAULT_PORT:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&suffix) && fields[3] == "0A"
            })
        })
    })
}

/// Held while the test uses vpcd's readers; the kernel releases it however the test ends.
fn lock_readers() -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match TcpListener::bind(("127.0.0.1", READERS_LOCK_PORT)) {
            Ok(listener) => return listener,
            Err(error) if Instant::now() < deadline => {
                assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::AddrInUse,
                    "the readers lock: {error}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(error) => panic!("another process held the readers lock for 15 minutes: {error}"),
        }
    }
}

/// Whether pcscd reports a card in vpcd's reader slot `slot` (from `opensc-tool -l`), or
/// `None` when opensc-tool is not at hand.
fn slot_has_card(slot: usize) -> Option<bool> {
    let output = Command::new("opensc-tool")
        .arg("-l")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = listing
        .lines()
        .filter(|line| line.contains(VPCD_READER))
        .nth(slot)?;
    // "0    Yes             Virtual PCD 00 00"
    Some(line.split_whitespace().nth(1)? == "Yes")
}

/// Waits until pcscd reports a card in `slot` (`present`) or none.
fn slot_reaches(slot: usize, present: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match slot_has_card(slot) {
            Some(has_card) if has_card == present => return true,
            Some(_) if Instant::now() >= deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
            None => {
                // No way to look: pcscd polls every 400 ms.
                std::thread::sleep(Duration::from_secs(2));
                return true;
            }
        }
    }
}

/// A `valuecard card attach` child: killed and reaped however the test ends, its log
/// printed if the test failed.
struct Attached {
    child: Child,
    log: PathBuf,
}

impl Attached {
    /// Serves `card` in vpcd's slot `slot` (with more options, e.g. a fault to inject), once
    /// pcscd has seen the slot empty; returns when pcscd sees the card.
    fn start(card: &Path, slot: usize, log: PathBuf, options: &[&str]) -> Self {
        assert!(
            slot_reaches(slot, false, CARD_WAIT),
            "vpcd's slot {slot} still holds a card"
        );
        let child = valuecard()
            .args(["card", "attach", "--verbose", "--slot", &slot.to_string()])
            .arg("--card")
            .arg(card)
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let attached = Attached { child, log };
        let deadline = Instant::now() + CARD_WAIT;
        while !attached.log().contains("connected to vpcd") {
            assert!(Instant::now() < deadline, "attach: {}", attached.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            slot_reaches(slot, true, Duration::from_secs(10)),
            "pcscd did not announce the card in slot {slot}"
        );
        attached
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end by itself (after an injected drop).
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "attach still runs: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then a clean exit.
    fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "attach exited with {status}");
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- card attach ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// Runs a command; its exit status, stdout and stderr.
fn run(command: &mut Command) -> (ExitStatus, String, String) {
    let output = command.stdin(Stdio::null()).output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a command that must succeed and print one JSON object.
fn run_json(command: &mut Command) -> Value {
    let description = format!("{command:?}");
    let (status, stdout, stderr) = run(command);
    assert!(
        status.success(),
        "{description} failed ({status}):\n{stdout}{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{description}: {e}:\n{stdout}"))
}

/// The `--reader` index of vpcd's slot `slot`, from `valuecard terminal readers`.
fn reader_index(slot: usize) -> String {
    let listing = run_json(valuecard().args(["terminal", "readers", "--json"]));
    listing["readers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|reader| reader["name"].as_str().unwrap_or("").contains(VPCD_READER))
        .nth(slot)
        .and_then(|reader| reader["index"].as_u64())
        .map(|index| index.to_string())
        .unwrap_or_else(|| panic!("no {VPCD_READER} reader for slot {slot}: {listing}"))
}

/// `valuecard terminal SUBCOMMAND --json --data DATA --from-reader R0 --to-reader R1 ARGS`.
fn two_readers(data: &Path, subcommand: &str, from: &str, to: &str, args: &[&str]) -> Command {
    let mut command = valuecard();
    command
        .args(["terminal", subcommand, "--json", "--data"])
        .arg(data)
        .args(["--from-reader", from, "--to-reader", to])
        .args(["--wait", CARD_WAIT_SECONDS])
        .args(args);
    command
}

/// A card's balance through `terminal info --card` (its image, while no attach holds it).
fn balance(data: &Path, image: &Path) -> u64 {
    let info = run_json(
        valuecard()
            .args(["terminal", "info", "--json", "--data"])
            .arg(data)
            .arg("--card")
            .arg(image),
    );
    info["balance"].as_u64().unwrap()
}

#[test]
fn transfer_between_two_pcsc_readers_and_lost_answers_settled() {
    const TEST: &str = "transfer_between_two_pcsc_readers_and_lost_answers_settled";
    if cfg!(not(feature = "pcsc")) {
        skip_note!(
            "SKIPPED: {TEST}: needs the pcsc feature (cargo test -p valuecard --features pcsc)"
        );
        return;
    }
    if !vpcd_available() {
        skip_note!("SKIPPED: {TEST}: pcscd with vpcd not available (scripts/start-pcscd.sh)");
        return;
    }
    let _readers = lock_readers();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("data");
    run_json(
        valuecard()
            .args(["center", "init", "--json", "--data"])
            .arg(&data),
    );
    let issue = |name: &str, value: &str| {
        let image = root.join(format!("{name}.img"));
        let issued = run_json(
            valuecard()
                .args(["card", "issue", "--json", "--value", value, "--data"])
                .arg(&data)
                .arg("--out")
                .arg(&image),
        );
        (image, issued["card"].as_str().unwrap().to_owned())
    };
    let (a, a_id) = issue("a", "50.00");
    let (b, b_id) = issue("b", "5.00");

    // Both cards in readers at once: A in slot 0, B in slot 1.
    let slot0 = Attached::start(&a, 0, root.join("attach-a.log"), &[]);
    let slot1 = Attached::start(&b, 1, root.join("attach-b.log"), &[]);
    let (reader0, reader1) = (reader_index(0), reader_index(1));
    assert_ne!(reader0, reader1);
    let receipt = run_json(&mut two_readers(
        &data,
        "transfer",
        &reader0,
        &reader1,
        &["--amount", "12.50"],
    ));
    assert_eq!(receipt["source"], a_id.as_str());
    assert_eq!(receipt["destination"], b_id.as_str());
    assert_eq!(receipt["source_balance_after"], 3750);
    assert_eq!(receipt["destination_balance_after"], 1750);
    assert_eq!(receipt["command_pairs"], 4, "{receipt}");

    // The same reader twice is refused before any card is touched.
    let (status, _, stderr) = run(&mut two_readers(
        &data,
        "transfer",
        &reader0,
        &reader0,
        &["--amount", "1.00"],
    ));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("each card needs a reader of its own"),
        "{stderr}"
    );

    // Lost answers, one card leaving its reader at a chosen command APDU (counted from its
    // SELECT): each time the operator gets a clear error, the card comes back, and
    // settle-transfer settles exactly once what either card committed.
    let mut slots = [slot0, slot1];
    let mut balances = [5000 - 1250, 500 + 1250];
    let mut expected_history = vec!["completed"];
    for case in LOST_ANSWERS {
        let name = format!("{} {} {}", case.slot, case.option, case.apdu);
        let image = if case.slot == 0 { &a } else { &b };
        slots[case.slot].terminate();
        let mut dropping = Attached::start(
            image,
            case.slot,
            root.join(format!("attach-drop-{}-{}.log", case.slot, case.apdu)),
            &[case.option, &case.apdu.to_string()],
        );
        let amount = format!("{}.{:02}", case.amount / 100, case.amount % 100);
        let (status, stdout, stderr) = run(&mut two_readers(
            &data,
            "transfer",
            &reader0,
            &reader1,
            &["--amount", &amount],
        ));
        let failure: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{name}: one JSON object ({e}): {stdout}{stderr}"));
        if case.in_doubt {
            assert_eq!(status.code(), Some(3), "{name}: {stdout}{stderr}");
            let sequence = failure["in_doubt"].as_u64().expect("the transfer's number");
            assert!(
                stderr.contains(&format!(
                    "transfer {sequence} is in doubt: present both cards again"
                )),
                "{name}: {stderr}"
            );
        } else {
            assert_eq!(status.code(), Some(2), "{name}: {stdout}{stderr}");
            assert_eq!(failure["in_doubt"], Value::Null, "{name}");
            assert!(
                stderr.contains("present both cards again"),
                "{name}: {stderr}"
            );
        }
        dropping.wait_exit(Duration::from_secs(10));
        drop(dropping);

        // The card comes back; settle-transfer decides, once.
        slots[case.slot] = Attached::start(
            image,
            case.slot,
            root.join(format!("attach-back-{}-{}.log", case.slot, case.apdu)),
            &[],
        );
        let settled = run_json(&mut two_readers(
            &data,
            "settle-transfer",
            &reader0,
            &reader1,
            &[],
        ));
        match case.settles_as {
            Some(outcome) => {
                assert_eq!(settled["settled"]["status"], outcome, "{name}: {settled}");
                assert_eq!(settled["settled"]["amount"], case.amount, "{name}");
                expected_history.push(outcome);
            }
            None => assert_eq!(settled["settled"], Value::Null, "{name}: {settled}"),
        }
        let again = run_json(&mut two_readers(
            &data,
            "settle-transfer",
            &reader0,
            &reader1,
            &[],
        ));
        assert_eq!(
            again["settled"],
            Value::Null,
            "{name}: settled twice: {again}"
        );
        if case.settles_as == Some("completed") {
            balances[0] -= case.amount;
            balances[1] += case.amount;
        }
    }
    for slot in &mut slots {
        slot.terminate();
    }

    // What moved is exactly what the settlements say.
    assert_eq!(balance(&data, &a), balances[0]);
    assert_eq!(balance(&data, &b), balances[1]);
    let history = run_json(
        valuecard()
            .args([
                "terminal",
                "history",
                "--json",
                "--terminal",
                "settlement-1",
                "--data",
            ])
            .arg(&data),
    );
    let statuses: Vec<&str> = history["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, expected_history, "{history}");
    assert_eq!(history["in_doubt"], 0, "{history}");

    // The center takes every report, and value is conserved with the transfers in it.
    let synced = run_json(
        valuecard()
            .args([
                "terminal",
                "sync",
                "--json",
                "--terminal",
                "settlement-1",
                "--data",
            ])
            .arg(&data),
    );
    assert_eq!(synced["refused"], serde_json::json!([]), "{synced}");
    assert_eq!(synced["transfers_not_uploaded"], 0, "{synced}");
    let status = run_json(
        valuecard()
            .args(["center", "status", "--json", "--data"])
            .arg(&data),
    );
    let count = |outcome: &str| statuses.iter().filter(|s| **s == outcome).count();
    assert_eq!(
        status["transfers"]["completed_count"].as_u64(),
        Some(count("completed") as u64),
        "{status}"
    );
    assert_eq!(
        status["transfers"]["undone_count"].as_u64(),
        Some(count("undone") as u64),
        "{status}"
    );
    assert_eq!(status["reconciliation"], "reconciled", "{status}");
}

/// Where a card leaves its reader during a transfer, and what follows.
struct LostAnswer {
    /// The reader slot of the card that leaves: 0 the source, 1 the destination.
    slot: usize,
    option: &'static str,
    /// The card's command APDU, counted from its SELECT.
    apdu: u32,
    amount: u64,
    /// Whether the transfer is reported in doubt (exit 3) rather than failed (exit 2).
    in_doubt: bool,
    /// How settle-transfer ends it: completed, undone, or nothing to settle.
    settles_as: Option<&'static str>,
}

const LOST_ANSWERS: [LostAnswer; 4] = [
    // The destination applied TRANSFER IN (its SELECT, INITIALIZE TRANSFER IN, TRANSFER IN)
    // but its answer was lost: the source debits against the destination's proof.
    LostAnswer {
        slot: 1,
        option: "--danger-drop-after-commit",
        apdu: 3,
        amount: 200,
        in_doubt: true,
        settles_as: Some("completed"),
    },
    // The source debited at TRANSFER COMPLETE (its SELECT, TRANSFER OUT, TRANSFER
    // COMPLETE) but its answer was lost: the terminal finds the debit as the source's last
    // record.
    LostAnswer {
        slot: 0,
        option: "--danger-drop-after-commit",
        apdu: 3,
        amount: 300,
        in_doubt: true,
        settles_as: Some("completed"),
    },
    // The source reserved the amount at TRANSFER OUT but its answer was lost: nothing
    // reached the destination, whose proof of that releases the reservation.
    LostAnswer {
        slot: 0,
        option: "--danger-drop-after-commit",
        apdu: 2,
        amount: 400,
        in_doubt: false,
        settles_as: Some("undone"),
    },
    // The source left before it saw TRANSFER OUT: nothing to settle.
    LostAnswer {
        slot: 0,
        option: "--danger-drop-after",
        apdu: 2,
        amount: 500,
        in_doubt: false,
        settles_as: None,
    },
];
