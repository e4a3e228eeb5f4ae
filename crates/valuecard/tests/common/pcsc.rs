//! Cards on the real PC/SC stack: pcscd with vsmartcard's vpcd driver, and `valuecard card
//! attach` serving card images in vpcd's two reader slots.
//!
//! The tests share vpcd's two readers, so they take a lock first ([`start`]): a mutex within
//! the process and a TCP port bound on 127.0.0.1 across processes (test binaries, and
//! `cargo test` runs elsewhere on the machine).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use valuecard_reader::vpcd::{ATR, DEFAULT_PORT};

use super::{number, repo_root, run_json, skip_note, valuecard, Site};

/// Part of the name pcsc-lite gives vpcd's readers ("Virtual PCD 00 00", "... 00 01").
pub const VPCD_READER: &str = "Virtual PCD";
/// How long pcscd may take to notice the card (it polls about every 400 ms).
pub const CARD_WAIT: Duration = Duration::from_secs(30);
/// The same, for the `--wait` of the terminal commands.
pub const CARD_WAIT_SECONDS: &str = "30";
/// A port on 127.0.0.1 that a test process binds while it uses vpcd's readers: the kernel
/// releases it when the process ends, however it ends.
const READERS_LOCK_PORT: u16 = 35960;

/// Whether vpcd (inside pcscd) listens on port 35963. On Linux the listening socket is looked
/// up in /proc/net/tcp, so the check itself does not connect as a card; elsewhere it connects.
pub fn vpcd_available() -> bool {
    let suffix = format!(":{DEFAULT_PORT:04X}");
    let mut looked = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        looked = true;
        let listening = text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, then remote address, then state (0A = LISTEN).
            fields.len() > 3 && fields[1].ends_with(&suffix) && fields[3] == "0A"
        });
        if listening {
            return true;
        }
    }
    if looked {
        return false;
    }
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// Held while a test uses vpcd's readers.
pub struct ReadersLock {
    _thread: MutexGuard<'static, ()>,
    _process: TcpListener,
}

fn lock_readers() -> ReadersLock {
    static READERS: Mutex<()> = Mutex::new(());
    // A test that failed while holding the lock has stopped its cards (`Attached` below).
    let thread = READERS.lock().unwrap_or_else(PoisonError::into_inner);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match TcpListener::bind(("127.0.0.1", READERS_LOCK_PORT)) {
            Ok(listener) => {
                return ReadersLock {
                    _thread: thread,
                    _process: listener,
                }
            }
            Err(error) if Instant::now() < deadline => {
                if error.kind() != std::io::ErrorKind::AddrInUse {
                    panic!("the readers lock (127.0.0.1:{READERS_LOCK_PORT}): {error}");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(error) => panic!(
                "another process held the readers lock (127.0.0.1:{READERS_LOCK_PORT}) for \
                 15 minutes: {error}"
            ),
        }
    }
}

/// What a test needs beyond pcscd with vpcd.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing more.
    Stack,
    /// The terminal commands over PC/SC (`--features pcsc`).
    PcscFeature,
}

/// The readers lock if the stack is there; otherwise prints `SKIPPED:` and returns `None`.
pub fn start(test: &str, needs: Needs) -> Option<ReadersLock> {
    if needs == Needs::PcscFeature && cfg!(not(feature = "pcsc")) {
        skip_note!(
            "SKIPPED: {test}: needs the pcsc feature (cargo test -p valuecard --features pcsc)"
        );
        return None;
    }
    if !vpcd_available() {
        skip_note!("SKIPPED: {test}: pcscd with vpcd not available (scripts/start-pcscd.sh)");
        return None;
    }
    Some(lock_readers())
}

pub fn opensc_tool(args: &[&str]) -> Option<Output> {
    Command::new("opensc-tool")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

pub fn has_opensc_tool() -> bool {
    opensc_tool(&["--version"]).is_some()
}

/// opensc-tool's number for vpcd's reader slot `slot`, from `opensc-tool -l`.
pub fn opensc_reader_number(slot: usize) -> String {
    let output = opensc_tool(&["-l"]).expect("opensc-tool runs");
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    listing
        .lines()
        .filter(|line| line.contains(VPCD_READER))
        .nth(slot)
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {VPCD_READER} reader for slot {slot} in:\n{listing}"))
        .to_owned()
}

/// Waits until opensc-tool reads the valuecard ATR in the reader.
pub fn wait_with_opensc_tool(reader: &str) {
    wait_for_atr_with_opensc_tool(reader, &ATR);
}

/// Waits until opensc-tool reads `atr` in the reader.
pub fn wait_for_atr_with_opensc_tool(reader: &str, atr: &[u8]) {
    let expected: Vec<String> = atr.iter().map(|byte| format!("{byte:02x}")).collect();
    let expected = expected.join(":");
    let deadline = Instant::now() + CARD_WAIT;
    loop {
        let output = opensc_tool(&["-r", reader, "-a"]).expect("opensc-tool runs");
        if String::from_utf8_lossy(&output.stdout).contains(&expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no card with ATR {expected} in reader {reader}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A Python 3 that can import pyscard: Debian's python3-pyscard installs it for
/// /usr/bin/python3, which need not be the first python3 on PATH.
pub fn python_with_pyscard() -> Option<String> {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", "import smartcard.System"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .map(str::to_owned)
}

/// `PYTHON tests/pyscard_client.py ARGS`, a pyscard client written from
/// docs/card-commands.md alone.
pub fn pyscard_command(python: &str, args: &[&str]) -> Command {
    let mut command = Command::new(python);
    command
        .arg(repo_root().join("tests").join("pyscard_client.py"))
        .args(args);
    command
}

/// Runs tests/pyscard_client.py with `args`; returns its JSON.
pub fn pyscard(python: &str, args: &[&str]) -> Value {
    run_json(&mut pyscard_command(python, args))
}

/// The name of vpcd's reader slot `slot` as pyscard lists it.
pub fn pyscard_reader(python: &str, slot: usize) -> String {
    let listing = pyscard(python, &["readers"]);
    listing["readers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|name| name.contains(VPCD_READER))
        .nth(slot)
        .unwrap_or_else(|| panic!("no {VPCD_READER} reader for slot {slot}: {listing}"))
        .to_owned()
}

/// Whether pcscd reports a card in vpcd's reader slot `slot`: from `opensc-tool -l`'s "Card"
/// column, or else from `PcscReader`; `None` if neither is at hand.
fn slot_has_card(slot: usize) -> Option<bool> {
    if let Some(output) = opensc_tool(&["-l"]) {
        let listing = String::from_utf8_lossy(&output.stdout);
        let line = listing
            .lines()
            .filter(|line| line.contains(VPCD_READER))
            .nth(slot)?;
        // "0    Yes             Virtual PCD 00 00"
        return Some(line.split_whitespace().nth(1)? == "Yes");
    }
    #[cfg(feature = "pcsc")]
    {
        use valuecard_reader::pcsc_reader::PcscReader;
        use valuecard_reader::ReaderError;
        let names = PcscReader::list().ok()?;
        let name = names
            .iter()
            .filter(|name| name.contains(VPCD_READER))
            .nth(slot)?;
        match PcscReader::open(Some(name), Duration::ZERO) {
            Ok(_) => Some(true),
            Err(ReaderError::NoCard) => Some(false),
            Err(_) => None,
        }
    }
    #[cfg(not(feature = "pcsc"))]
    None
}

/// Waits up to `timeout` until pcscd reports a card in `slot` (`present`) or none; whether
/// it did (true, after a pause, when there is no way to look).
fn slot_reaches(slot: usize, present: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match slot_has_card(slot) {
            Some(has_card) if has_card == present => return true,
            Some(_) if Instant::now() >= deadline => return false,
            Some(_) => {}
            None => {
                // No way to look: pcscd polls every 400 ms.
                std::thread::sleep(Duration::from_secs(2));
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `valuecard card attach` (or `memcard attach`) child process: killed and reaped
/// however the test ends, with its log printed if the test failed.
pub struct Attached {
    child: Child,
    log: PathBuf,
}

/// Which kind of card image an [`Attached`] serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CardKind {
    /// A purse card: `valuecard card attach`.
    Purse,
    /// A memory card (seed 001): `valuecard memcard attach`.
    Memory,
}

impl Attached {
    /// Starts attach at once, without waiting for pcscd to see the slot empty first (the
    /// bridge itself stays away long enough for that) or to see the card.
    pub fn spawn(card: &Path, log: PathBuf, options: &[&str]) -> Self {
        Self::spawn_kind(CardKind::Purse, card, log, options)
    }

    /// [`spawn`](Self::spawn) for either kind of card.
    pub fn spawn_kind(kind: CardKind, card: &Path, log: PathBuf, options: &[&str]) -> Self {
        let group = match kind {
            CardKind::Purse => "card",
            CardKind::Memory => "memcard",
        };
        let child = valuecard()
            .args([group, "attach", "--verbose", "--card"])
            .arg(card)
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Attached { child, log }
    }

    /// Serves `card` in vpcd's slot 0; returns once pcscd has seen it.
    pub fn start(card: &Path, log: PathBuf) -> Self {
        Self::start_with(card, log, &[])
    }

    /// Serves `card` in vpcd's slot `slot`, with more options (a fault to inject, ...);
    /// returns once pcscd has seen it.
    pub fn start_in_slot(card: &Path, slot: usize, log: PathBuf, options: &[&str]) -> Self {
        let slot = slot.to_string();
        let mut all = vec!["--slot", slot.as_str()];
        all.extend_from_slice(options);
        Self::start_with(card, log, &all)
    }

    /// With more options: `--slot N`, `--danger-drop-after N`, ... Returns once pcscd has
    /// seen the card.
    pub fn start_with(card: &Path, log: PathBuf, options: &[&str]) -> Self {
        Self::start_kind(CardKind::Purse, card, log, options)
    }

    /// [`start_with`](Self::start_with) for either kind of card.
    pub fn start_kind(kind: CardKind, card: &Path, log: PathBuf, options: &[&str]) -> Self {
        let slot = options
            .windows(2)
            .find(|pair| pair[0] == "--slot")
            .map_or(0, |pair| pair[1].parse().unwrap());
        // The card before must have left, so that the next client meets this one. No pause
        // and no second attempt after that: the bridge itself stays away long enough for
        // pcscd to see the slot empty before it connects.
        assert!(
            slot_reaches(slot, false, CARD_WAIT),
            "vpcd's reader slot {slot} still holds a card after {} s (does something else \
             serve a card there?)",
            CARD_WAIT.as_secs()
        );
        let attached = Self::spawn_kind(kind, card, log, options);
        attached.wait_for_log("connected to vpcd");
        assert!(
            slot_reaches(slot, true, Duration::from_secs(10)),
            "pcscd did not announce the card attached in slot {slot}"
        );
        attached
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + CARD_WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from attach within {} s:\n{}",
                CARD_WAIT.as_secs(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.wait_exit(Duration::from_secs(10), "SIGTERM");
        assert!(status.success(), "attach exited with {status}");
    }

    /// Waits for the process to end (by itself, or after a signal sent by the caller).
    pub fn wait_exit(&mut self, timeout: Duration, after: &str) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "attach still runs {} s after {after}:\n{}",
                timeout.as_secs(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash or a pulled plug ends it, and reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- valuecard attach ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// The `--reader` index of vpcd's reader slot `slot`, from `valuecard terminal readers`.
pub fn reader_index(slot: usize) -> String {
    let listing = run_json(valuecard().args(["terminal", "readers", "--json"]));
    listing["readers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|reader| reader["name"].as_str().unwrap_or("").contains(VPCD_READER))
        .nth(slot)
        .map(|reader| number(reader, "index").to_string())
        .unwrap_or_else(|| panic!("no {VPCD_READER} reader for slot {slot}: {listing}"))
}

impl Site {
    /// `valuecard terminal SUBCOMMAND --json --data DATA --wait WAIT ARGS`: the terminal
    /// finds the reader itself unless `args` names one.
    pub fn waiting(&self, subcommand: &str, wait: &str, args: &[&str]) -> Command {
        let mut command = self.terminal(subcommand, &["--wait", wait]);
        command.args(args);
        command
    }

    /// `valuecard terminal SUBCOMMAND --json --data DATA --reader READER --wait 30 ARGS`.
    pub fn at_reader(&self, subcommand: &str, reader: &str, args: &[&str]) -> Command {
        let mut command = self.waiting(subcommand, CARD_WAIT_SECONDS, &["--reader", reader]);
        command.args(args);
        command
    }

    /// `valuecard terminal SUBCOMMAND --json --data DATA --from-reader FROM --to-reader TO
    /// --wait 30 ARGS`.
    pub fn two_readers(&self, subcommand: &str, from: &str, to: &str, args: &[&str]) -> Command {
        let mut command = self.waiting(
            subcommand,
            CARD_WAIT_SECONDS,
            &["--from-reader", from, "--to-reader", to],
        );
        command.args(args);
        command
    }
}
