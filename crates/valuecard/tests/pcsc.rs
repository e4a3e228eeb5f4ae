//! Cards on the real PC/SC stack: pcscd with vsmartcard's vpcd driver, `valuecard card
//! attach` serving card images in vpcd's two reader slots, and PC/SC clients talking to them:
//! the terminal commands (`valuecard terminal ... --reader`, which need the `pcsc` feature:
//! `cargo test -p valuecard --features pcsc --test pcsc`), the `PcscReader` of
//! valuecard-reader, OpenSC's `opensc-tool`, and `tests/pyscard_client.py`, a pyscard client
//! written from docs/card-commands.md alone.
//!
//! Every test says `SKIPPED: ...` on stderr and passes when what it needs is missing: pcscd
//! with vpcd (`scripts/start-pcscd.sh` starts it), the `pcsc` feature, opensc-tool, or
//! Python with pyscard (Debian: python3-pyscard). The tests share vpcd's two readers, so they
//! take a lock first: a mutex within this process and a TCP port bound on 127.0.0.1 across
//! processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Says that a test was skipped, on the process's stderr directly: the test harness captures
/// `eprintln!` of passing tests, and CI must see every skip.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use valuecard_reader::vpcd::{ATR, DEFAULT_PORT};

const OPENSC_SELECT: &str = "00:A4:04:00:08:F0:56:43:50:55:52:53:45:00";
const OPENSC_READ_PURSE: &str = "80:30:00:00:00";
/// How opensc-tool reports a 90 00 status word.
const OPENSC_9000: &str = "Received (SW1=0x90, SW2=0x00)";
/// Part of the name pcsc-lite gives vpcd's readers ("Virtual PCD 00 00", "... 00 01").
const VPCD_READER: &str = "Virtual PCD";
/// How long pcscd may take to notice the card (it polls about every 400 ms).
const CARD_WAIT: Duration = Duration::from_secs(30);
/// The same, for the `--wait` of the terminal commands.
const CARD_WAIT_SECONDS: &str = "30";
/// A port on 127.0.0.1 that a test process binds while it uses vpcd's readers: the kernel
/// releases it when the process ends, however it ends.
const READERS_LOCK_PORT: u16 = 35960;
/// The purse AID (docs/card-commands.md § 1).
const PURSE_AID: &str = "F056435055525345";

fn valuecard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_valuecard"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether vpcd (inside pcscd) listens on port 35963. On Linux the listening socket is looked
/// up in /proc/net/tcp, so the check itself does not connect as a card; elsewhere it connects.
fn vpcd_available() -> bool {
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
struct ReadersLock {
    _thread: MutexGuard<'static, ()>,
    _process: TcpListener,
}

fn lock_readers() -> ReadersLock {
    static READERS: Mutex<()> = Mutex::new(());
    // A test that failed while holding the lock has stopped its cards (guards below).
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
enum Needs {
    /// Nothing more.
    Stack,
    /// The terminal commands over PC/SC (`--features pcsc`).
    PcscFeature,
}

/// The readers lock if the stack is there; otherwise prints `SKIPPED:` and returns `None`.
fn start(test: &str, needs: Needs) -> Option<ReadersLock> {
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

fn opensc_tool(args: &[&str]) -> Option<Output> {
    Command::new("opensc-tool")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

fn has_opensc_tool() -> bool {
    opensc_tool(&["--version"]).is_some()
}

/// A Python 3 that can import pyscard: Debian's python3-pyscard installs it for
/// /usr/bin/python3, which need not be the first python3 on PATH.
fn python_with_pyscard() -> Option<String> {
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

/// The `valuecard card attach` child process: killed and reaped however the test ends, with
/// its log printed if the test failed.
struct Attached {
    child: Child,
    log: PathBuf,
}

impl Attached {
    fn start(card: &Path, log: PathBuf) -> Self {
        Self::start_with(card, log, &[])
    }

    /// With more options: `--slot N`, `--danger-drop-after N`, ... Returns once pcscd has
    /// seen the card.
    fn start_with(card: &Path, log: PathBuf, options: &[&str]) -> Self {
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
        let child = valuecard()
            .args(["card", "attach", "--verbose", "--card"])
            .arg(card)
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let attached = Attached { child, log };
        attached.wait_for_log("connected to vpcd");
        assert!(
            slot_reaches(slot, true, Duration::from_secs(10)),
            "pcscd did not announce the card attached in slot {slot}"
        );
        attached
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`.
    fn wait_for_log(&self, needle: &str) {
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
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.wait_exit(Duration::from_secs(10), "SIGTERM");
        assert!(status.success(), "attach exited with {status}");
    }

    /// Waits for the process to end (by itself, or after a signal sent by the caller).
    fn wait_exit(&mut self, timeout: Duration, after: &str) -> ExitStatus {
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
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- valuecard card attach ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// A finished command: its exit status and its output as text.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command) -> Ran {
    let output = command.stdin(Stdio::null()).output().unwrap();
    Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a command that must succeed and print one JSON object.
fn run_json(command: &mut Command) -> Value {
    let description = format!("{command:?}");
    let ran = run(command);
    assert!(
        ran.status.success(),
        "{description} failed ({}):\n{}{}",
        ran.status,
        ran.stdout,
        ran.stderr
    );
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|error| panic!("{description}: not JSON ({error}):\n{}", ran.stdout))
}

fn number(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {value}"))
}

/// A data directory with a center, dispenser-1 and terminal-1.
struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    center: Value,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        // Two payment terminals: one per reader slot when two terminals work at once.
        let center = run_json(
            valuecard()
                .args(["center", "init", "--json", "--terminals", "2", "--data"])
                .arg(&data),
        );
        Site {
            _dir: dir,
            root,
            data,
            center,
        }
    }

    /// The device ID of an installed device, by name.
    fn device(&self, name: &str) -> String {
        self.center["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|device| device["name"] == name)
            .and_then(|device| device["device_id"].as_str())
            .unwrap_or_else(|| panic!("no device {name} in {}", self.center))
            .to_owned()
    }

    /// Issues a card image with `value` on it; returns its path and card ID.
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

    fn log(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.log"))
    }

    /// `valuecard terminal SUBCOMMAND --data DATA --reader READER --wait 30 --json ARGS`.
    fn terminal(&self, subcommand: &str, reader: &str, args: &[&str]) -> Command {
        let mut command = valuecard();
        command
            .args(["terminal", subcommand, "--json", "--data"])
            .arg(&self.data)
            .args(["--reader", reader, "--wait", CARD_WAIT_SECONDS])
            .args(args);
        command
    }

    fn history(&self) -> Value {
        run_json(
            valuecard()
                .args(["terminal", "history", "--json", "--data"])
                .arg(&self.data),
        )
    }

    fn center_status(&self) -> Value {
        run_json(
            valuecard()
                .args(["center", "status", "--json", "--data"])
                .arg(&self.data),
        )
    }
}

/// The `--reader` index of vpcd's reader slot `slot`, from `valuecard terminal readers`.
fn reader_index(slot: usize) -> String {
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

/// opensc-tool's number for vpcd's reader slot `slot`, from `opensc-tool -l`.
fn opensc_reader_number(slot: usize) -> String {
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
fn wait_with_opensc_tool(reader: &str) {
    let expected: Vec<String> = ATR.iter().map(|byte| format!("{byte:02x}")).collect();
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

/// One response as opensc-tool prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    sw: String,
    data: Vec<u8>,
}

/// Sends `apdus` (hex) with `opensc-tool -r READER -s ...` in one connection and returns the
/// responses it printed, one per APDU.
fn opensc_send(reader: &str, apdus: &[String]) -> Vec<Received> {
    let mut args = vec!["-r".to_owned(), reader.to_owned()];
    for apdu in apdus {
        args.push("-s".to_owned());
        args.push(apdu.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = opensc_tool(&args).expect("opensc-tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "opensc-tool {args:?}: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let received = parse_opensc_output(&stdout);
    assert_eq!(
        received.len(),
        apdus.len(),
        "one response per APDU from opensc-tool:\n{stdout}"
    );
    received
}

/// Parses opensc-tool's `Received (SW1=0x90, SW2=0x00):` lines and the hex dump that follows
/// each (16 bytes a line as `XX ` in the first 48 columns, then the same bytes as text).
fn parse_opensc_output(stdout: &str) -> Vec<Received> {
    let mut received: Vec<Received> = Vec::new();
    let mut in_dump = false;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("Received (SW1=0x") {
            let sw1 = &rest[..2];
            let sw2 = rest
                .split("SW2=0x")
                .nth(1)
                .map(|tail| &tail[..2])
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            received.push(Received {
                sw: format!("{sw1}{sw2}").to_uppercase(),
                data: Vec::new(),
            });
            in_dump = true;
        } else if line.starts_with("Sending:") {
            in_dump = false;
        } else if in_dump {
            let hex_part: String = line.chars().take(48).collect();
            let last = received.last_mut().unwrap();
            for token in hex_part.split_whitespace() {
                last.data
                    .push(u8::from_str_radix(token, 16).unwrap_or_else(|_| {
                        panic!("not a hex byte {token:?} in the dump line {line:?}")
                    }));
            }
        }
    }
    received
}

/// Runs tests/pyscard_client.py with `args`; returns its JSON.
fn pyscard(python: &str, args: &[&str]) -> Value {
    run_json(
        Command::new(python)
            .arg(repo_root().join("tests").join("pyscard_client.py"))
            .args(args),
    )
}

/// The name of vpcd's reader slot `slot` as pyscard lists it.
fn pyscard_reader(python: &str, slot: usize) -> String {
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

// --- BER-TLV, for checking the structure of responses (docs/card-commands.md § 3.3) ---

/// One data object: its tag (hex) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tlv {
    tag: String,
    value: Vec<u8>,
}

fn tlv(data: &[u8]) -> Vec<Tlv> {
    let mut objects = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let start = i;
        i += 1;
        if data[start] & 0x1F == 0x1F {
            while data[i] & 0x80 != 0 {
                i += 1;
            }
            i += 1;
        }
        let tag = hex::encode_upper(&data[start..i]);
        let (len, skip) = match data[i] {
            byte @ 0..=0x7F => (usize::from(byte), 1),
            0x81 => (usize::from(data[i + 1]), 2),
            0x82 => (usize::from(data[i + 1]) << 8 | usize::from(data[i + 2]), 3),
            other => panic!("length byte {other:02X} in {}", hex::encode_upper(data)),
        };
        i += skip;
        objects.push(Tlv {
            tag,
            value: data[i..i + len].to_vec(),
        });
        i += len;
    }
    assert_eq!(i, data.len(), "TLV overruns: {}", hex::encode_upper(data));
    objects
}

fn tags(objects: &[Tlv]) -> Vec<&str> {
    objects.iter().map(|object| object.tag.as_str()).collect()
}

fn value<'a>(objects: &'a [Tlv], tag: &str) -> &'a [u8] {
    &objects
        .iter()
        .find(|object| object.tag == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {objects:?}"))
        .value
}

fn hex_value(objects: &[Tlv], tag: &str) -> String {
    hex::encode_upper(value(objects, tag))
}

fn be(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |acc, byte| acc << 8 | u64::from(*byte))
}

// --- the worked transcript of docs/card-commands.md § 10.2 ---

/// One exchange of the document's transcript.
#[derive(Debug, Clone)]
struct DocExchange {
    comment: String,
    command: String,
    data: String,
    sw: String,
}

/// The exchanges of the transcript's section whose heading starts with `heading`
/// (`#### 5. Refused commands`, ...).
fn doc_exchanges(heading: &str) -> Vec<DocExchange> {
    let doc = std::fs::read_to_string(repo_root().join("docs").join("card-commands.md")).unwrap();
    let transcript = doc
        .split("<!-- transcript:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- transcript:end -->").next())
        .expect("the transcript markers in docs/card-commands.md");
    let section = transcript
        .split("\n#### ")
        .find(|section| section.starts_with(heading))
        .unwrap_or_else(|| panic!("no transcript section {heading:?}"));
    let mut exchanges: Vec<DocExchange> = Vec::new();
    let mut comment = String::new();
    for line in section.lines() {
        if let Some(text) = line.strip_prefix("# ") {
            comment = text.to_owned();
        } else if let Some(command) = line.strip_prefix("=> ") {
            exchanges.push(DocExchange {
                comment: comment.clone(),
                command: command.trim().to_owned(),
                data: String::new(),
                sw: String::new(),
            });
        } else if let Some(response) = line.strip_prefix("<= ") {
            let last = exchanges.last_mut().expect("a response after its command");
            let mut words: Vec<&str> = response.split_whitespace().collect();
            last.sw = words.pop().unwrap().to_owned();
            last.data = words.concat();
        }
    }
    assert!(
        !exchanges.is_empty(),
        "transcript section {heading:?} empty"
    );
    exchanges
}

/// Whether `apdu` (hex) is a well-formed short APDU (cases 1, 2S, 3S, 4S), which opensc-tool
/// agrees to send.
fn is_well_formed_short(apdu: &str) -> bool {
    let bytes = hex::decode(apdu).unwrap();
    match bytes.len() {
        0..=3 => false,
        4 | 5 => true,
        len => {
            let lc = usize::from(bytes[4]);
            lc != 0 && (len == 5 + lc || len == 6 + lc)
        }
    }
}

/// The card image's bytes.
fn image_bytes(image: &Path) -> Vec<u8> {
    std::fs::read(image).unwrap()
}

// --- the tests ---

/// The part that needs valuecard-reader's `PcscReader`.
#[cfg(feature = "pcsc")]
mod with_pcsc_reader {
    use std::path::Path;

    use valuecard_core::messages::purse::PurseStatus;
    use valuecard_reader::pcsc_reader::PcscReader;
    use valuecard_reader::vpcd::ATR;
    use valuecard_reader::CardReader;

    use super::{valuecard, CARD_WAIT, VPCD_READER};

    const SELECT: &str = "00A4040008F05643505552534500";
    const READ_PURSE: &str = "8030000000";

    /// SELECT and READ PURSE on the image in-process: what the card must answer through PC/SC.
    pub fn read_purse_in_process(card: &Path) -> Vec<u8> {
        let output = valuecard()
            .args(["card", "apdu", "--json", "--card"])
            .arg(card)
            .args([SELECT, READ_PURSE])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let exchanges = report["exchanges"].as_array().unwrap();
        assert_eq!(exchanges[0]["sw"], "9000", "{report}");
        assert_eq!(exchanges[1]["sw"], "9000", "{report}");
        hex::decode(exchanges[1]["data"].as_str().unwrap()).unwrap()
    }

    /// Through `PcscReader`: wait for the card, check its ATR, SELECT and READ PURSE. Returns
    /// the reader's name.
    pub fn exchange_through_pcsc_reader(expected_status: &[u8]) -> String {
        let mut reader = PcscReader::open(Some(VPCD_READER), CARD_WAIT)
            .unwrap_or_else(|error| panic!("no card in a {VPCD_READER} reader: {error}"));
        eprintln!(
            "PcscReader: card in {:?}, ATR {}",
            reader.reader_name(),
            hex::encode_upper(reader.atr())
        );
        assert_eq!(
            reader.atr(),
            ATR.as_slice(),
            "the card in the reader is ours"
        );

        let select = reader.transmit_raw(&hex::decode(SELECT).unwrap()).unwrap();
        assert_eq!(&select[select.len() - 2..], &[0x90, 0x00], "SELECT");
        let purse = reader
            .transmit_raw(&hex::decode(READ_PURSE).unwrap())
            .unwrap();
        let (data, sw) = purse.split_at(purse.len() - 2);
        assert_eq!(sw, &[0x90, 0x00], "READ PURSE");
        let status = PurseStatus::decode(data).unwrap();
        eprintln!(
            "PcscReader: SELECT 9000, READ PURSE 9000: card {} balance {} (minor units)",
            status.card_id,
            status.balance.minor()
        );
        assert_eq!(data, expected_status, "the same purse as read in-process");
        let name = reader.reader_name().to_owned();
        reader.disconnect().unwrap();
        name
    }
}

#[test]
fn attached_card_answers_pcsc_clients_through_pcscd_and_vpcd() {
    const TEST: &str = "attached_card_answers_pcsc_clients_through_pcscd_and_vpcd";
    let Some(_readers) = start(TEST, Needs::Stack) else {
        return;
    };
    let has_opensc = has_opensc_tool();
    if cfg!(not(feature = "pcsc")) && !has_opensc {
        skip_note!(
            "SKIPPED: {TEST}: opensc-tool not installed and PcscReader not built (needs the \
             pcsc feature)"
        );
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let demo = valuecard()
        .args(["demo", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let card = data.join("cards").join("card-1.img");
    #[cfg(feature = "pcsc")]
    let expected_status = with_pcsc_reader::read_purse_in_process(&card);

    let mut attached = Attached::start(&card, dir.path().join("attach.log"));

    #[cfg(feature = "pcsc")]
    let pcsc_name = with_pcsc_reader::exchange_through_pcsc_reader(&expected_status);
    #[cfg(not(feature = "pcsc"))]
    eprintln!("note: PcscReader part not built (run with --features pcsc)");

    if has_opensc {
        let number = opensc_reader_number(0);
        #[cfg(feature = "pcsc")]
        {
            let names = valuecard_reader::pcsc_reader::PcscReader::list().unwrap();
            let index: usize = number.parse().unwrap();
            assert_eq!(names.get(index), Some(&pcsc_name), "same reader: {names:?}");
        }
        #[cfg(not(feature = "pcsc"))]
        wait_with_opensc_tool(&number);
        // SELECT, then READ PURSE in the same connection.
        let output =
            opensc_tool(&["-r", &number, "-s", OPENSC_SELECT, "-s", OPENSC_READ_PURSE]).unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "opensc-tool: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let received: Vec<&str> = stdout
            .lines()
            .filter(|line| line.starts_with("Received"))
            .collect();
        assert_eq!(
            received,
            [OPENSC_9000.to_owned() + ":", OPENSC_9000.to_owned() + ":"],
            "opensc-tool did not see 90 00 twice:\n{stdout}"
        );
        eprintln!("opensc-tool -r {number}: SELECT and READ PURSE: {received:?}");
    } else {
        eprintln!("note: opensc-tool not installed; its part skipped");
    }

    attached.terminate();
    let log = attached.log();
    assert!(log.contains("connected to vpcd"), "{log}");
    assert!(log.contains("INS A4 -> SW 9000"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// A purchase and a load through pcscd, and `terminal info` agreeing with both.
#[test]
fn terminal_buys_and_loads_through_pcsc() {
    let Some(_readers) = start("terminal_buys_and_loads_through_pcsc", Needs::PcscFeature) else {
        return;
    };
    let site = Site::new();
    let (image, card_id) = site.issue("card", "50.00");
    let mut attached = Attached::start(&image, site.log("attach"));
    let reader = reader_index(0);

    let info = run_json(&mut site.terminal("info", &reader, &[]));
    assert_eq!(info["card"], card_id.as_str());
    assert_eq!(number(&info, "balance"), 5000);
    assert_eq!(info["state"], "Active");

    let sale = run_json(&mut site.terminal("purchase", &reader, &["--amount", "12.50"]));
    assert_eq!(sale["card"], card_id.as_str());
    assert_eq!(number(&sale, "amount"), 1250);
    assert_eq!(number(&sale, "balance_before"), 5000);
    assert_eq!(number(&sale, "balance_after"), 3750);
    assert_eq!(sale["terminal"], site.device("terminal-1").as_str());

    let load = run_json(&mut site.terminal("load", &reader, &["--amount", "20.00"]));
    assert_eq!(load["card"], card_id.as_str());
    assert_eq!(number(&load, "amount"), 2000);
    assert_eq!(number(&load, "balance_after"), 5750);

    let info = run_json(&mut site.terminal("info", &reader, &[]));
    assert_eq!(number(&info, "balance"), 5750, "{info}");
    assert_eq!(number(&info, "counter"), 3, "{info}");
    assert_eq!(number(&info, "abnormal_events"), 0, "{info}");
    let log: Vec<(String, u64, u64)> = info["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["kind"].as_str().unwrap().to_owned(),
                number(entry, "amount"),
                number(entry, "balance_after"),
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            ("Load".to_owned(), 2000, 5750),
            ("Purchase".to_owned(), 1250, 3750),
            ("Load".to_owned(), 5000, 5000),
        ],
        "the card's log, newest first"
    );
    let history = site.history();
    assert_eq!(number(&history, "committed_minor"), 1250, "{history}");
    assert_eq!(number(&history, "in_doubt"), 0, "{history}");
    let status = site.center_status();
    assert_eq!(
        number(&status, "issued") + number(&status, "loaded") - 1250,
        5750,
        "{status}"
    );

    attached.terminate();
    let log = attached.log();
    for ins in ["A4", "30", "32", "50", "52", "54", "56"] {
        assert!(
            log.contains(&format!("INS {ins} -> SW 9000")),
            "INS {ins}:\n{log}"
        );
    }
}

/// The document's command bytes through opensc-tool: SELECT and its FCI, READ PURSE, READ
/// LOG, and the refused commands of the transcript, each answered as the document says.
#[test]
fn documented_apdus_through_opensc_tool() {
    const TEST: &str = "documented_apdus_through_opensc_tool";
    let Some(_readers) = start(TEST, Needs::Stack) else {
        return;
    };
    if !has_opensc_tool() {
        skip_note!("SKIPPED: {TEST}: opensc-tool not installed (Debian: opensc)");
        return;
    }
    let site = Site::new();
    let (image, card_id) = site.issue("card", "50.00");
    let center_id = site.center["center"].as_str().unwrap().to_owned();
    let dispenser = site.device("dispenser-1");
    let mut attached = Attached::start(&image, site.log("attach"));
    let reader = opensc_reader_number(0);
    wait_with_opensc_tool(&reader);

    // The holder's reads of § 10.2 step 4 (SELECT, READ PURSE, READ LOG). opensc-tool sends
    // short APDUs only (vpcd's reader announces no extended lengths): READ PURSE and READ
    // LOG go with a short Le, which § 3.2 and § 6.5 allow when the answer fits in 256 bytes.
    let reads = doc_exchanges("4. What the holder may read");
    let select = reads
        .iter()
        .find(|exchange| exchange.comment == "SELECT")
        .unwrap();
    assert_eq!(select.command, format!("00A4040008{PURSE_AID}00"));
    let read_purse = reads
        .iter()
        .find(|exchange| exchange.comment.starts_with("READ PURSE"))
        .unwrap();
    assert_eq!(read_purse.command, "80300000000000", "§ 10.2's READ PURSE");
    let read_log = reads
        .iter()
        .find(|exchange| exchange.comment.starts_with("READ LOG"))
        .unwrap();
    assert_eq!(read_log.command, "80320000000000", "§ 10.2's READ LOG");

    // Then the refused commands of § 10.2 step 5, in the document's order, from the same
    // state (the purse selected). opensc-tool refuses to send a malformed APDU itself: those
    // go through pyscard in `malformed_and_unknown_apdus_get_their_status_words_and_change_nothing`.
    let refused: Vec<DocExchange> = doc_exchanges("5. Refused commands")
        .into_iter()
        .filter(|exchange| is_well_formed_short(&exchange.command))
        .collect();
    assert!(refused.len() >= 8, "{refused:?}");

    let mut apdus = vec![
        select.command.clone(),
        "8030000000".to_owned(),
        "8032000000".to_owned(),
    ];
    apdus.extend(refused.iter().map(|exchange| exchange.command.clone()));
    let received = opensc_send(&reader, &apdus);
    for (i, response) in received.iter().enumerate().take(3) {
        assert_eq!(response.sw, "9000", "{}: {response:?}", apdus[i]);
    }

    // SELECT: the FCI of an Active card, laid out as in § 6.1 and § 10.2 step 4.
    let fci = &received[0].data;
    let doc_fci = hex::decode(&select.data).unwrap();
    assert_eq!(
        fci.len(),
        doc_fci.len(),
        "an Active card's FCI is 233 bytes"
    );
    assert_eq!(fci.len(), 233);
    assert_eq!(
        fci[..19],
        doc_fci[..19],
        "6F 81 E6, 84 08 AID, A5 81 D9, 89 01 03, 86 08"
    );
    let outer = tlv(fci);
    assert_eq!(tags(&outer), ["6F"]);
    let template = tlv(&outer[0].value);
    assert_eq!(tags(&template), ["84", "A5"]);
    assert_eq!(hex_value(&template, "84"), PURSE_AID);
    let proprietary = tlv(value(&template, "A5"));
    // 9F2F: the card's transfer-key information for a settlement terminal (seed 000).
    assert_eq!(tags(&proprietary), ["89", "86", "7F21", "9F2F"]);
    assert_eq!(hex_value(&proprietary, "89"), "03", "Active");
    assert_eq!(hex_value(&proprietary, "86"), card_id);
    let certificate = tlv(value(&proprietary, "7F21"));
    assert_eq!(tags(&certificate), ["7F4E", "5F37"]);
    let body = tlv(value(&certificate, "7F4E"));
    assert_eq!(
        tags(&body),
        ["5F29", "42", "5F20", "5F4C", "5F25", "5F24", "7F49"],
        "§ 8"
    );
    assert_eq!(hex_value(&body, "42"), center_id, "issuer: the center");
    assert_eq!(hex_value(&body, "5F20"), card_id, "subject: the card");
    assert_eq!(hex_value(&body, "5F4C"), "04", "role: card");
    assert_eq!(value(&certificate, "5F37").len(), 64);
    // Transfer key, update key, the limit of generations the card accepts (4 bytes each),
    // and whether a transfer is pending: a new card holds the first generation of both keys.
    let summary = value(&proprietary, "9F2F");
    assert_eq!(summary.len(), 13);
    assert_eq!(hex::encode(&summary[..8]), "0000000100000001");
    assert!(
        summary[8..12] >= summary[..4],
        "the limit is at least the key held"
    );
    assert_eq!(summary[12], 0, "nothing pending");

    // READ PURSE (§ 6.5): the same objects as the document's, with this card's values.
    let purse = tlv(&received[1].data);
    let doc_purse = tlv(&hex::decode(&read_purse.data).unwrap());
    assert_eq!(tags(&purse), tags(&doc_purse));
    assert_eq!(tags(&purse), ["89", "86", "83", "84", "8E", "A2"]);
    assert_eq!(hex_value(&purse, "89"), "03");
    assert_eq!(hex_value(&purse, "86"), card_id);
    assert_eq!(be(value(&purse, "83")), 5000, "balance 50.00");
    assert_eq!(be(value(&purse, "84")), 1, "one load so far");
    assert_eq!(hex_value(&purse, "8E"), "00");
    let record = tlv(value(&purse, "A2"));
    let doc_record = tlv(value(&doc_purse, "A2"));
    assert_eq!(
        tags(&record)[..10],
        tags(&doc_record)[..10],
        "§ 6.12's usage record"
    );
    assert_eq!(hex_value(&record, "8A"), "02", "a load");
    assert_eq!(be(value(&record, "82")), 5000);
    assert_eq!(be(value(&record, "83")), 5000);
    assert_eq!(hex_value(&record, "87"), dispenser);
    assert_eq!(value(&record, "9E").len(), 64);

    // READ LOG (§ 6.6): one entry of 47 bytes, shaped like the document's.
    let log = tlv(&received[2].data);
    let doc_log = tlv(&hex::decode(&read_log.data).unwrap());
    assert_eq!(tags(&log), ["A3"]);
    assert_eq!(received[2].data.len(), 47);
    let entry = tlv(&log[0].value);
    assert_eq!(tags(&entry), tags(&tlv(&doc_log[0].value)));
    assert_eq!(tags(&entry), ["8A", "84", "82", "83", "87", "85"]);
    assert_eq!(hex_value(&entry, "8A"), "02");
    assert_eq!(be(value(&entry, "84")), 1);
    assert_eq!(be(value(&entry, "82")), 5000);
    assert_eq!(hex_value(&entry, "87"), dispenser);

    for (exchange, response) in refused.iter().zip(&received[3..]) {
        assert_eq!(
            response.sw, exchange.sw,
            "{} ({}): the document says {}",
            exchange.comment, exchange.command, exchange.sw
        );
        assert!(response.data.is_empty(), "{response:?}");
        eprintln!(
            "opensc-tool: {} -> {} ({})",
            exchange.command, response.sw, exchange.comment
        );
    }

    attached.terminate();
}

/// The document's own client: tests/pyscard_client.py reads the card as `terminal info`
/// does, then watches a purchase made by a valuecard terminal.
#[test]
fn pyscard_client_reads_the_purse_and_sees_a_purchase() {
    const TEST: &str = "pyscard_client_reads_the_purse_and_sees_a_purchase";
    let Some(_readers) = start(TEST, Needs::PcscFeature) else {
        return;
    };
    let Some(python) = python_with_pyscard() else {
        skip_note!("SKIPPED: {TEST}: no Python 3 with pyscard (Debian: python3-pyscard)");
        return;
    };
    let site = Site::new();
    let (image, card_id) = site.issue("card", "50.00");
    let mut attached = Attached::start(&image, site.log("attach"));
    let reader = reader_index(0);
    let py_reader = pyscard_reader(&python, 0);
    let py_info = || {
        pyscard(
            &python,
            &["--reader", &py_reader, "--wait", CARD_WAIT_SECONDS, "info"],
        )
    };

    let outside = py_info();
    let inside = run_json(&mut site.terminal("info", &reader, &[]));
    assert_eq!(outside["atr"], hex::encode_upper(ATR));
    assert_eq!(outside["card"], card_id.as_str());
    assert_eq!(outside["card"], inside["card"]);
    assert_eq!(outside["balance"], inside["balance"]);
    assert_eq!(outside["counter"], inside["counter"]);
    assert_eq!(outside["state"], inside["state"]);
    assert_eq!(outside["abnormal_events"], inside["abnormal_events"]);
    assert_eq!(outside["balance_text"], "50.00");
    assert_eq!(outside["last_record"]["kind"], "load");

    // A purchase together: the outside client reads, the valuecard terminal sells, the
    // outside client reads again.
    let before = number(&py_info(), "balance");
    let sale = run_json(&mut site.terminal("purchase", &reader, &["--amount", "7.25"]));
    assert_eq!(number(&sale, "balance_before"), before);
    let after = py_info();
    assert_eq!(
        number(&after, "balance"),
        before - 725,
        "the balance dropped by exactly 7.25: {after}"
    );
    assert_eq!(number(&after, "balance"), number(&sale, "balance_after"));
    assert_eq!(
        number(&after, "counter"),
        number(&outside, "counter") + 1,
        "{after}"
    );
    let record = &after["last_record"];
    assert_eq!(record["kind"], "purchase", "{after}");
    assert_eq!(number(record, "amount"), 725);
    assert_eq!(record["party"], site.device("terminal-1").as_str());
    let inside = run_json(&mut site.terminal("info", &reader, &[]));
    assert_eq!(inside["balance"], after["balance"]);
    eprintln!(
        "pyscard client: card {} balance {} -> {} around a 7.25 purchase",
        after["card"], before, after["balance"]
    );
    attached.terminate();
}

/// Malformed and unknown APDUs through pcscd, each answered with the status word the
/// document gives, and the card image not changed by a single byte.
#[test]
fn malformed_and_unknown_apdus_get_their_status_words_and_change_nothing() {
    const TEST: &str = "malformed_and_unknown_apdus_get_their_status_words_and_change_nothing";
    let Some(_readers) = start(TEST, Needs::Stack) else {
        return;
    };
    let Some(python) = python_with_pyscard() else {
        skip_note!("SKIPPED: {TEST}: no Python 3 with pyscard (Debian: python3-pyscard)");
        return;
    };
    let site = Site::new();
    let (image, _) = site.issue("card", "50.00");
    let before = image_bytes(&image);

    // (command, status word, where docs/card-commands.md says so), sent in this order within
    // one connection. Nothing here may write: no forged signatures (those are recorded).
    let select = format!("00A4040008{PURSE_AID}00");
    let mut cases: Vec<(String, String, String)> = [
        (select.as_str(), "9000", "§ 6.1 SELECT"),
        (
            "80FF0000",
            "6D00",
            "§ 3.1 unknown CLA 80 instruction, selected",
        ),
        ("00CA000000", "6D00", "§ 3.1 CLA 00, instruction not A4/84"),
        ("8084000010", "6D00", "§ 6.2 GET CHALLENGE with CLA 80"),
        ("A030000000", "6E00", "§ 3.1 class A0"),
        ("0430000000", "6E00", "§ 3.1 class 04 (secure messaging)"),
        ("0C30000000", "6E00", "§ 3.1 class 0C (secure messaging)"),
        ("8430000000", "6E00", "§ 3.1 class 84 (secure messaging)"),
        ("8130000000", "6E00", "§ 3.1 class 81 (logical channel 1)"),
        ("8030010000", "6A86", "§ 6.5 READ PURSE with P1 01"),
        ("8032000100", "6A86", "§ 6.6 READ LOG with P2 01"),
        (
            "00A4000C023F00",
            "6A86",
            "§ 6.1 SELECT with P1-P2 not 04 00",
        ),
        (
            "8030000000",
            "9000",
            "§ 3.4 a refused SELECT changes nothing",
        ),
        ("80300000050102", "6700", "§ 3.2 Lc 05, 2 data bytes"),
        ("8030000005010203", "6700", "§ 3.2 Lc 05, 3 data bytes"),
        ("803000", "6700", "§ 3.2 shorter than 4 bytes"),
        ("8030", "6700", "§ 3.2 shorter than 4 bytes"),
        ("80500000047F2181B800", "6A80", "§ 3.3 truncated 7F21"),
        (
            "805400000182",
            "6A80",
            "§ 3.3 INITIALIZE LOAD, a tag without a length",
        ),
        ("805C000002800000", "6A80", "§ 6.11 data not 80 10"),
        (
            "805200000382010000",
            "6985",
            "§ 6.8 DEBIT without INITIALIZE PURCHASE",
        ),
        (
            "805600000382010000",
            "6985",
            "§ 6.10 CREDIT without INITIALIZE LOAD",
        ),
        (
            "0084000010",
            "6985",
            "§ 6.2 GET CHALLENGE on an Active card",
        ),
    ]
    .iter()
    .map(|(command, sw, why)| ((*command).to_owned(), (*sw).to_owned(), (*why).to_owned()))
    .collect();
    // Then the transcript's refused commands (§ 10.2 step 5), from the same state.
    cases.extend(
        doc_exchanges("5. Refused commands")
            .into_iter()
            .map(|exchange| {
                (
                    exchange.command,
                    exchange.sw,
                    format!("§ 10.2: {}", exchange.comment),
                )
            }),
    );

    let mut attached = Attached::start(&image, site.log("attach"));
    let reader = pyscard_reader(&python, 0);
    let mut args = vec![
        "--reader",
        reader.as_str(),
        "--wait",
        CARD_WAIT_SECONDS,
        "send",
    ];
    args.extend(cases.iter().map(|(command, _, _)| command.as_str()));
    let sent = pyscard(&python, &args);
    assert_eq!(sent["atr"], hex::encode_upper(ATR));
    let exchanges = sent["exchanges"].as_array().unwrap();
    assert_eq!(exchanges.len(), cases.len());
    let mut by_sw: BTreeMap<String, usize> = BTreeMap::new();
    for ((command, sw, why), exchange) in cases.iter().zip(exchanges) {
        assert_eq!(exchange["command"], command.as_str());
        assert_eq!(
            exchange["sw"].as_str(),
            Some(sw.as_str()),
            "{command} ({why}): {exchange}"
        );
        if sw != "9000" {
            assert_eq!(exchange["data"], "", "{command}: a refusal carries no data");
        }
        *by_sw.entry(sw.clone()).or_default() += 1;
    }
    eprintln!(
        "pyscard: {} APDUs answered as documented: {by_sw:?}",
        cases.len()
    );
    for sw in ["6D00", "6E00", "6A86", "6700", "6A80", "6985", "6A82"] {
        assert!(by_sw.contains_key(sw), "no case for {sw}");
    }

    attached.terminate();
    assert_eq!(
        image_bytes(&image),
        before,
        "the card image changed under refused commands"
    );
}

/// The power cuts a terminal meets: the card leaves the reader at each command of a purchase
/// (SELECT, INITIALIZE PURCHASE, DEBIT), before the card processed it or after it committed
/// and instead of its answer. Every time the cashier gets a clear error, the card comes back
/// (the same image attached again, a power-up), `terminal settle` decides what was in
/// doubt, a new purchase works, and value is conserved.
#[test]
fn card_pulled_during_a_purchase_conserves_value() {
    let Some(_readers) = start(
        "card_pulled_during_a_purchase_conserves_value",
        Needs::PcscFeature,
    ) else {
        return;
    };
    let site = Site::new();
    let (image, card_id) = site.issue("card", "50.00");
    let reader = reader_index(0);
    let terminal_id = site.device("terminal-1");

    // A load through PC/SC first, so that issued and loaded value both count.
    let mut attached = Attached::start(&image, site.log("attach-load"));
    let load = run_json(&mut site.terminal("load", &reader, &["--amount", "10.00"]));
    assert_eq!(number(&load, "balance_after"), 6000);
    attached.terminate();

    let mut balance = 6000u64;
    let mut sales = 0u64;
    // SELECT is command APDU 1 of a purchase, INITIALIZE PURCHASE 2, DEBIT 3.
    let points = [(1, "SELECT"), (2, "INITIALIZE PURCHASE"), (3, "DEBIT")];
    for (apdu, command) in points {
        for committed in [false, true] {
            let option = if committed {
                "--danger-drop-after-commit"
            } else {
                "--danger-drop-after"
            };
            let case = format!("{option} {apdu} ({command})");
            let amount = 100 + apdu * 10 + u64::from(committed);
            let amount_text = format!("{}.{:02}", amount / 100, amount % 100);
            let apdu_text = apdu.to_string();

            let mut dropping = Attached::start_with(
                &image,
                site.log(&format!("attach-drop-{apdu}-{committed}")),
                &[option, &apdu_text],
            );
            let ran = run(&mut site.terminal("purchase", &reader, &["--amount", &amount_text]));
            assert!(
                !ran.status.success(),
                "{case}: the purchase must fail: {}{}",
                ran.stdout,
                ran.stderr
            );
            assert_eq!(ran.status.code(), Some(2), "{case}: {}", ran.stderr);
            assert!(ran.stdout.trim().is_empty(), "{case}: {}", ran.stdout);
            let message = ran.stderr.trim();
            assert!(message.starts_with("valuecard: "), "{case}: {message}");
            if apdu == 3 {
                assert!(
                    message.contains("in doubt") && message.contains("settle"),
                    "{case}: a lost DEBIT answer is a purchase in doubt: {message}"
                );
            } else {
                // vpcd answers pcscd with an empty response when the card's connection is
                // gone in the middle of a command, so the terminal may see that instead of a
                // PC/SC error.
                assert!(
                    message.contains("PC/SC")
                        || message.contains("removed")
                        || message.contains("shorter than its 2-byte status word"),
                    "{case}: the reader's error: {message}"
                );
            }
            eprintln!("{case}: {message}");

            // The bridge left by itself; attaching the image again is the next power-up.
            let status = dropping.wait_exit(Duration::from_secs(15), "its injected drop");
            assert!(status.success(), "{case}: attach exited with {status}");
            let log = dropping.log();
            assert!(
                log.contains(&format!(
                    "dropping the connection on purpose {}",
                    if committed {
                        format!("after the card processed command APDU {apdu}")
                    } else {
                        format!("at command APDU {apdu}")
                    }
                )),
                "{case}:\n{log}"
            );
            drop(dropping);
            let mut attached = Attached::start(
                &image,
                site.log(&format!("attach-after-{apdu}-{committed}")),
            );

            let settled = run_json(&mut site.terminal("settle", &reader, &[]));
            assert_eq!(settled["card"], card_id.as_str());
            let statuses: Vec<&str> = settled["purchases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|purchase| purchase["status"].as_str().unwrap())
                .collect();
            let expected: &[&str] = match (apdu, committed) {
                (3, false) => &["cancelled"],
                (3, true) => &["committed"],
                _ => &[],
            };
            assert_eq!(statuses, expected, "{case}: settled {settled}");
            if apdu == 3 && committed {
                balance -= amount;
                sales += amount;
            }

            let sale = run_json(&mut site.terminal("purchase", &reader, &["--amount", "0.50"]));
            assert_eq!(
                number(&sale, "balance_before"),
                balance,
                "{case}: the card's balance after the cut"
            );
            assert_eq!(sale["terminal"], terminal_id.as_str());
            balance -= 50;
            sales += 50;

            // Conservation: issued + loaded - committed purchases = the card's balance, and
            // nothing stays in doubt.
            let history = site.history();
            let status = site.center_status();
            let info = run_json(&mut site.terminal("info", &reader, &[]));
            assert_eq!(number(&history, "in_doubt"), 0, "{case}: {history}");
            assert!(
                history["purchases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|purchase| purchase["status"] != "in_doubt"),
                "{case}: {history}"
            );
            let committed_minor = number(&history, "committed_minor");
            assert_eq!(committed_minor, sales, "{case}: {history}");
            assert_eq!(
                number(&status, "issued") + number(&status, "loaded") - committed_minor,
                number(&info, "balance"),
                "{case}: value not conserved: center {status}, terminal {history}, card {info}"
            );
            assert_eq!(number(&info, "balance"), balance, "{case}: {info}");
            assert_eq!(number(&info, "abnormal_events"), 0, "{case}: {info}");
            attached.terminate();
        }
    }
    eprintln!(
        "six cuts inside a purchase: {} committed in sales, balance {balance}, nothing in doubt",
        sales
    );
}

/// Two cards at once, one in each of vpcd's reader slots, each answering with its own
/// balance.
#[test]
fn two_cards_in_two_slots_answer_at_once() {
    let Some(_readers) = start("two_cards_in_two_slots_answer_at_once", Needs::PcscFeature) else {
        return;
    };
    let site = Site::new();
    let (first, first_id) = site.issue("first", "50.00");
    let (second, second_id) = site.issue("second", "20.00");
    assert_ne!(first_id, second_id);
    let mut slot0 = Attached::start_with(&first, site.log("attach-slot-0"), &["--slot", "0"]);
    let mut slot1 = Attached::start_with(&second, site.log("attach-slot-1"), &["--slot", "1"]);
    let reader0 = reader_index(0);
    let reader1 = reader_index(1);
    assert_ne!(reader0, reader1);

    // Both readers at the same time: two terminals, one per slot.
    let info_both = |site: &Site| {
        let mut children: Vec<Child> = [(&reader0, "terminal-1"), (&reader1, "terminal-2")]
            .iter()
            .map(|(reader, terminal)| {
                site.terminal("info", reader, &["--terminal", terminal])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<Output> = children
            .drain(..)
            .map(|child| child.wait_with_output().unwrap())
            .collect();
        outputs
            .iter()
            .map(|output| {
                assert!(
                    output.status.success(),
                    "{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                serde_json::from_slice::<Value>(&output.stdout).unwrap()
            })
            .collect::<Vec<Value>>()
    };
    let infos = info_both(&site);
    assert_eq!(infos[0]["card"], first_id.as_str());
    assert_eq!(number(&infos[0], "balance"), 5000);
    assert_eq!(infos[1]["card"], second_id.as_str());
    assert_eq!(number(&infos[1], "balance"), 2000);

    let sale = run_json(&mut site.terminal("purchase", &reader1, &["--amount", "3.00"]));
    assert_eq!(sale["card"], second_id.as_str());
    assert_eq!(number(&sale, "balance_after"), 1700);
    let infos = info_both(&site);
    assert_eq!(
        number(&infos[0], "balance"),
        5000,
        "the first card untouched"
    );
    assert_eq!(number(&infos[1], "balance"), 1700);
    let sale = run_json(&mut site.terminal("purchase", &reader0, &["--amount", "1.00"]));
    assert_eq!(sale["card"], first_id.as_str());
    assert_eq!(number(&sale, "balance_after"), 4900);

    slot0.terminate();
    slot1.terminate();
    for (attached, port) in [(&slot0, "35963"), (&slot1, "35964")] {
        let log = attached.log();
        assert!(log.contains(&format!(":{port}")), "{log}");
        assert!(log.contains("INS 52 -> SW 9000"), "{log}");
    }
}
