//! The vpcd bridge and the card image against what other programs do to them: a second
//! opener of the same image, PC/SC clients that send 1-byte or oversized APDUs, a `card
//! attach` killed in the middle of a purchase and started again at once, and a terminal that
//! must find the reader with its card among readers holding other cards.
//!
//! The tests that need pcscd with vpcd print `SKIPPED: ...` and pass when it is absent
//! (`scripts/start-pcscd.sh` starts it; CI fails on any skip). They share vpcd's two readers
//! with `tests/pcsc.rs` through the same locks (a mutex in the process, TCP port 35960 on
//! 127.0.0.1 across processes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
#[cfg(feature = "pcsc")]
use std::io::Read;
use std::io::Write;
use std::net::TcpListener;
#[cfg(feature = "pcsc")]
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
#[cfg(feature = "pcsc")]
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "pcsc")]
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
#[cfg(feature = "pcsc")]
use valuecard_reader::vpcd::encode_frame;
use valuecard_reader::vpcd::{ATR, DEFAULT_PORT};

/// Says that a test was skipped, on the process's stderr directly (the harness captures
/// `eprintln!` of passing tests, and CI must see every skip).
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const READERS_LOCK_PORT: u16 = 35960;
const SELECT: &str = "00A4040008F05643505552534500";
#[cfg(feature = "pcsc")]
/// How long a card attached again may take to be usable through pcscd. pcscd polls about
/// every 450 ms and the bridge settles 1.2 s before it connects.
const BACK_WITHIN: Duration = Duration::from_secs(6);

fn valuecard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_valuecard"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vpcd_listening() -> bool {
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

struct ReadersLock {
    _thread: MutexGuard<'static, ()>,
    _process: TcpListener,
}

/// vpcd's readers for this test alone, or `None` (after `SKIPPED:`) without pcscd and vpcd.
fn start(test: &str) -> Option<ReadersLock> {
    if !vpcd_listening() {
        skip_note!("SKIPPED: {test}: pcscd with vpcd not available (scripts/start-pcscd.sh)");
        return None;
    }
    static READERS: Mutex<()> = Mutex::new(());
    let thread = READERS.lock().unwrap_or_else(PoisonError::into_inner);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match TcpListener::bind(("127.0.0.1", READERS_LOCK_PORT)) {
            Ok(listener) => {
                return Some(ReadersLock {
                    _thread: thread,
                    _process: listener,
                })
            }
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(250)),
            Err(error) => panic!("the readers lock stayed taken for 15 minutes: {error}"),
        }
    }
}

fn python_with_pyscard() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import smartcard.System"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_json(command: &mut Command) -> Value {
    let description = format!("{command:?}");
    let output = run(command);
    assert!(
        output.status.success(),
        "{description} failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{description}: not JSON ({error})"))
}

/// A data directory with a center, its dispenser and two terminals.
struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        run_json(
            valuecard()
                .args(["center", "init", "--json", "--terminals", "2", "--data"])
                .arg(&data),
        );
        Site {
            _dir: dir,
            root,
            data,
        }
    }

    /// Issues a card image; returns its path and card ID.
    fn issue(&self, name: &str, value: &str) -> (PathBuf, String) {
        let image = self.root.join(format!("{name}.img"));
        let issued = run_json(
            valuecard()
                .args(["card", "issue", "--json", "--value", value, "--data"])
                .arg(&self.data)
                .arg("--out")
                .arg(&image),
        );
        (image, issued["card"].as_str().unwrap().to_owned())
    }

    #[cfg(feature = "pcsc")]
    /// `valuecard terminal SUBCOMMAND --json --data DATA --wait WAIT ARGS` (no --reader
    /// unless `args` has one).
    fn terminal(&self, subcommand: &str, wait: &str, args: &[&str]) -> Command {
        let mut command = valuecard();
        command
            .args(["terminal", subcommand, "--json", "--data"])
            .arg(&self.data)
            .args(["--wait", wait])
            .args(args);
        command
    }
}

/// A `valuecard card attach` child: killed however the test ends, its log shown on failure.
struct Attached {
    child: Child,
    log: PathBuf,
}

impl Attached {
    /// Starts attach at once: no waiting for pcscd to see the slot empty first (that is the
    /// bridge's job now).
    fn spawn(image: &Path, log: PathBuf, options: &[&str]) -> Self {
        let child = valuecard()
            .args(["card", "attach", "--verbose", "--card"])
            .arg(image)
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Attached { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- attach ({}) ---\n{}", self.log.display(), self.log());
        }
    }
}

#[cfg(feature = "pcsc")]
/// The index of vpcd's reader slot `slot` for `--reader`.
fn reader_index(slot: usize) -> String {
    let listing = run_json(valuecard().args(["terminal", "readers", "--json"]));
    listing["readers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|reader| {
            reader["name"]
                .as_str()
                .unwrap_or("")
                .contains("Virtual PCD")
        })
        .nth(slot)
        .map(|reader| reader["index"].as_u64().unwrap().to_string())
        .unwrap_or_else(|| panic!("no vpcd reader for slot {slot}: {listing}"))
}

#[cfg(feature = "pcsc")]
/// Waits until `terminal info` on `reader` reads card `card_id`; returns how long it took.
fn usable_within(site: &Site, reader: &str, card_id: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let output = run(&mut site.terminal("info", "1", &["--reader", reader]));
        if output.status.success() {
            let info: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(info["card"], card_id);
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the card attached again was not usable through pcscd within {limit:?}: {}",
            text(&output.stderr)
        );
    }
}

#[cfg(feature = "pcsc")]
/// A card that is no valuecard card, in vpcd's slot `slot`: it answers pcscd's ATR requests
/// and every command APDU with 6A82 (file or application not found).
struct OtherCard {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

#[cfg(feature = "pcsc")]
const OTHER_ATR: [u8; 4] = [0x3B, 0x02, 0x14, 0x50];

#[cfg(feature = "pcsc")]
impl OtherCard {
    fn insert(slot: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            // Like the bridge: let pcscd see the slot empty before the card arrives.
            thread::sleep(Duration::from_millis(1500));
            let mut stream = TcpStream::connect(("127.0.0.1", DEFAULT_PORT + slot)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut header = [0u8; 2];
            while !thread_stop.load(Ordering::SeqCst) {
                match stream.read_exact(&mut header) {
                    Ok(()) => {}
                    Err(_) => continue,
                }
                let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                if stream.read_exact(&mut payload).is_err() {
                    return;
                }
                stream
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let answer: &[u8] = match payload.as_slice() {
                    [4] => &OTHER_ATR,
                    [0..=2] => continue,
                    _ => &[0x6A, 0x82],
                };
                if stream.write_all(&encode_frame(answer).unwrap()).is_err() {
                    return;
                }
            }
        });
        OtherCard {
            stop,
            handle: Some(handle),
        }
    }
}

#[cfg(feature = "pcsc")]
impl Drop for OtherCard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[test]
fn a_second_opener_of_a_card_image_is_refused_with_a_clear_error() {
    let site = Site::new();
    let (image, _) = site.issue("card", "10.00");
    let before = std::fs::read(&image).unwrap();
    // The first holder: attach to a port where nothing listens (no pcscd needed); it holds
    // the image while it retries.
    let first = Attached::spawn(
        &image,
        site.root.join("first.log"),
        &["--vpcd", "127.0.0.1:9"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first.log().contains("serving it to vpcd") {
        assert!(
            Instant::now() < deadline,
            "attach did not start:\n{}",
            first.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let openers: [(&str, Vec<String>); 3] = [
        (
            "card attach",
            vec![
                "card".into(),
                "attach".into(),
                "--vpcd".into(),
                "127.0.0.1:9".into(),
                "--card".into(),
            ],
        ),
        (
            "card apdu",
            vec!["card".into(), "apdu".into(), "--card".into()],
        ),
        (
            "terminal info --card",
            vec![
                "terminal".into(),
                "info".into(),
                "--data".into(),
                site.data.display().to_string(),
                "--card".into(),
            ],
        ),
    ];
    for (what, args) in openers {
        let mut command = valuecard();
        command.args(&args).arg(&image);
        if what == "card apdu" {
            command.arg(SELECT);
        }
        let started = Instant::now();
        let output = run(&mut command);
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{what}: {message}");
        assert!(
            message.contains("is in use") && message.contains(&image.display().to_string()),
            "{what}: {message}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{what} waited");
    }
    drop(first);
    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "nothing was written"
    );
    // Once the holder is gone the image opens again.
    let output = run(valuecard()
        .args(["card", "apdu", "--card"])
        .arg(&image)
        .arg(SELECT));
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn one_byte_and_oversized_apdus_get_status_words_and_the_card_keeps_answering() {
    const TEST: &str = "one_byte_and_oversized_apdus_get_status_words_and_the_card_keeps_answering";
    let Some(_readers) = start(TEST) else {
        return;
    };
    let Some(python) = python_with_pyscard() else {
        skip_note!("SKIPPED: {TEST}: no Python 3 with pyscard (Debian: python3-pyscard)");
        return;
    };
    let site = Site::new();
    let (image, _) = site.issue("card", "10.00");
    let _attached = Attached::spawn(&image, site.root.join("attach.log"), &[]);
    // Wait for this card: a card of the test before may still show in the slot for a poll.
    let client = repo_root().join("tests").join("pyscard_client.py");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = run(Command::new(python).arg(&client).args([
            "--reader",
            "Virtual PCD 00 00",
            "--wait",
            "30",
            "info",
        ]));
        if output.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the card never answered: {}",
            text(&output.stderr)
        );
        thread::sleep(Duration::from_millis(200));
    }
    let oversized = format!("80300000{}", "AB".repeat(4996));
    let apdus = ["80", "00", "01", "02", "04", oversized.as_str(), SELECT];
    // Twice over, in two connections: the second proves the first left nothing behind.
    for round in 0..2 {
        let started = Instant::now();
        let mut command = Command::new(python);
        command
            .arg(repo_root().join("tests").join("pyscard_client.py"))
            .args(["--reader", "Virtual PCD 00 00", "--wait", "30", "send"])
            .args(apdus);
        let sent = run_json(&mut command);
        let exchanges = sent["exchanges"].as_array().unwrap();
        let sws: Vec<&str> = exchanges
            .iter()
            .map(|exchange| exchange["sw"].as_str().unwrap_or("none"))
            .collect();
        assert_eq!(
            sws,
            ["6700", "6700", "6700", "6700", "6700", "6700", "9000"],
            "round {round}: {sent}"
        );
        // `04` is pcscd's ATR request on the wire: the client gets the ATR, whose last two
        // bytes read as 6700.
        assert_eq!(
            exchanges[4]["data"].as_str().unwrap(),
            hex::encode_upper(&ATR[..ATR.len() - 2])
        );
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "round {round} took {:?}",
            started.elapsed()
        );
    }
    // A client reads the purse normally after all that.
    let info = run_json(
        Command::new(python)
            .arg(repo_root().join("tests").join("pyscard_client.py"))
            .args(["--reader", "Virtual PCD 00 00", "--wait", "30", "info"]),
    );
    assert_eq!(info["balance"].as_u64(), Some(1000), "{info}");
}

#[cfg(not(feature = "pcsc"))]
#[test]
fn a_card_attach_killed_mid_purchase_and_started_again_is_back_in_pcscd_within_seconds() {
    skip_note!(
        "SKIPPED: a_card_attach_killed_mid_purchase_and_started_again_is_back_in_pcscd_within_\
         seconds: needs the pcsc feature (cargo test -p valuecard --features pcsc)"
    );
}

#[cfg(feature = "pcsc")]
#[test]
fn a_card_attach_killed_mid_purchase_and_started_again_is_back_in_pcscd_within_seconds() {
    use valuecard_reader::pcsc_reader::Holding;
    const TEST: &str =
        "a_card_attach_killed_mid_purchase_and_started_again_is_back_in_pcscd_within_seconds";
    let Some(_readers) = start(TEST) else {
        return;
    };
    let site = Site::new();
    let (image, card_id) = site.issue("card", "50.00");
    let reader = reader_index(0);
    let slot_empty = |slots: &[Holding]| matches!(slots, [Holding::NoCard, ..]);

    // Each round: a purchase whose card leaves at a command (the bridge exits there, as a
    // killed attach does), then the image attached again at once.
    let drops = ["1", "2", "3", "2", "3", "1"];
    let mut slowest = Duration::ZERO;
    for (round, apdu) in drops.iter().enumerate() {
        let option = if round % 2 == 0 {
            "--danger-drop-after-commit"
        } else {
            "--danger-drop-after"
        };
        // The purchase must meet the card that will leave, not the one before it.
        wait_for_slots(slot_empty);
        let mut dropping = Attached::spawn(
            &image,
            site.root.join(format!("attach-drop-{round}.log")),
            &[option, apdu],
        );
        let sale =
            run(&mut site.terminal("purchase", "30", &["--reader", &reader, "--amount", "0.10"]));
        assert!(
            !sale.status.success(),
            "round {round}: the card left mid-purchase"
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while dropping.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "round {round}: attach did not exit"
            );
            thread::sleep(Duration::from_millis(20));
        }
        drop(dropping);

        let again = Attached::spawn(&image, site.root.join(format!("attach-{round}.log")), &[]);
        let took = usable_within(&site, &reader, &card_id, BACK_WITHIN);
        slowest = slowest.max(took);
        // The holder settles what was left in doubt.
        let settled = run_json(&mut site.terminal("settle", "10", &["--reader", &reader]));
        assert_eq!(settled["card"], card_id.as_str(), "round {round}");
        drop(again);
    }

    // And a plain SIGKILL while a client is between commands, restarted at once.
    for round in 0..3 {
        wait_for_slots(slot_empty);
        let mut attached = Attached::spawn(
            &image,
            site.root.join(format!("attach-kill-{round}.log")),
            &[],
        );
        usable_within(&site, &reader, &card_id, Duration::from_secs(30));
        attached.kill();
        let _again = Attached::spawn(
            &image,
            site.root.join(format!("attach-back-{round}.log")),
            &[],
        );
        let took = usable_within(&site, &reader, &card_id, BACK_WITHIN);
        slowest = slowest.max(took);
    }
    eprintln!("re-attached cards were usable through pcscd within {slowest:?}");
}

#[cfg(not(feature = "pcsc"))]
#[test]
fn a_terminal_without_reader_finds_the_one_reader_with_a_valuecard_card() {
    skip_note!(
        "SKIPPED: a_terminal_without_reader_finds_the_one_reader_with_a_valuecard_card: needs \
         the pcsc feature (cargo test -p valuecard --features pcsc)"
    );
}

/// Waits until pcscd shows in vpcd's two slots what `ready` accepts.
#[cfg(feature = "pcsc")]
fn wait_for_slots(ready: impl Fn(&[valuecard_reader::pcsc_reader::Holding]) -> bool) {
    use valuecard_reader::pcsc_reader::PcscReader;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holdings: Vec<_> = PcscReader::survey_all()
            .unwrap()
            .into_iter()
            .filter(|(name, _)| name.contains("Virtual PCD"))
            .map(|(_, holding)| holding)
            .collect();
        if ready(&holdings) {
            return;
        }
        assert!(Instant::now() < deadline, "slots hold {holdings:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(feature = "pcsc")]
#[test]
fn a_terminal_without_reader_finds_the_one_reader_with_a_valuecard_card() {
    use valuecard_reader::pcsc_reader::Holding;
    const TEST: &str = "a_terminal_without_reader_finds_the_one_reader_with_a_valuecard_card";
    let Some(_readers) = start(TEST) else {
        return;
    };
    let site = Site::new();
    let (image, card_id) = site.issue("card", "20.00");

    // Reader 0 holds some other card, reader 1 the valuecard card: the terminal must take
    // reader 1 (it used to take reader 0, the first with a card).
    let other = OtherCard::insert(0);
    let attached = Attached::spawn(&image, site.root.join("attach.log"), &["--slot", "1"]);
    wait_for_slots(|slots| {
        matches!(
            slots,
            [Holding::OtherCard { .. }, Holding::Purse { .. }, ..]
        )
    });
    let info = run_json(&mut site.terminal("info", "30", &[]));
    assert_eq!(info["card"], card_id.as_str());

    // Two valuecard cards (the second from another center): no guess, every reader named.
    let elsewhere = Site::new();
    let (foreign_image, foreign_id) = elsewhere.issue("foreign", "5.00");
    drop(other);
    let foreign = Attached::spawn(
        &foreign_image,
        site.root.join("foreign.log"),
        &["--slot", "0"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let output = run(&mut site.terminal("info", "2", &[]));
        let message = text(&output.stderr);
        if message.contains("several PC/SC readers") {
            assert_eq!(output.status.code(), Some(2), "{message}");
            break message;
        }
        assert!(Instant::now() < deadline, "never refused: {message}");
        thread::sleep(Duration::from_millis(200));
    };
    assert!(message.contains("--reader"), "{message}");
    assert!(
        message.contains(&card_id) && message.contains(&foreign_id),
        "{message}"
    );
    assert!(message.contains("Virtual PCD 00 00") && message.contains("Virtual PCD 00 01"));

    // No valuecard card at all: the error says what each reader holds.
    drop(foreign);
    drop(attached);
    let _other = OtherCard::insert(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let output = run(&mut site.terminal("info", "2", &[]));
        let message = text(&output.stderr);
        assert!(
            !output.status.success(),
            "no valuecard card, yet: {message}"
        );
        if message.contains("no PC/SC reader holds a valuecard card")
            && message.contains("without the valuecard purse")
            && message.contains("holds no card")
        {
            break message;
        }
        assert!(Instant::now() < deadline, "{message}");
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        message.contains("3B021450"),
        "the other card's ATR: {message}"
    );
}
