//! A card on the real PC/SC stack: pcscd with vsmartcard's vpcd driver, `valuecard card
//! attach` serving a card image the demo left, and PC/SC clients talking to it: the
//! `PcscReader` of valuecard-reader (with the `pcsc` feature: `cargo test -p valuecard
//! --features pcsc --test pcsc`) and OpenSC's `opensc-tool`.
//!
//! Skipped, with `SKIPPED: ...` on stderr, when pcscd with vpcd is not running;
//! `scripts/start-pcscd.sh` starts it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use valuecard_reader::vpcd::DEFAULT_PORT;

const OPENSC_SELECT: &str = "00:A4:04:00:08:F0:56:43:50:55:52:53:45:00";
const OPENSC_READ_PURSE: &str = "80:30:00:00:00";
/// How opensc-tool reports a 90 00 status word.
const OPENSC_9000: &str = "Received (SW1=0x90, SW2=0x00)";
/// Part of the name pcsc-lite gives vpcd's readers ("Virtual PCD 00 00", "... 00 01").
const VPCD_READER: &str = "Virtual PCD";
/// How long pcscd may take to notice the card (it polls about every 400 ms).
const CARD_WAIT: Duration = Duration::from_secs(30);

fn valuecard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_valuecard"))
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

fn opensc_tool(args: &[&str]) -> Option<Output> {
    Command::new("opensc-tool")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

/// The `valuecard card attach` child process: killed and reaped however the test ends, with
/// its log printed if the test failed.
struct Attached {
    child: Child,
    log: PathBuf,
}

impl Attached {
    fn start(card: &Path, log: PathBuf) -> Self {
        let child = valuecard()
            .args(["card", "attach", "--verbose", "--card"])
            .arg(card)
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

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "attach exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "attach ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- valuecard card attach ---\n{}", self.log());
        }
    }
}

/// opensc-tool's number for the first vpcd reader, from `opensc-tool -l`.
fn opensc_reader_number() -> String {
    let output = opensc_tool(&["-l"]).expect("opensc-tool runs");
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    listing
        .lines()
        .find(|line| line.contains(VPCD_READER))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {VPCD_READER} reader in:\n{listing}"))
        .to_owned()
}

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

/// Without the `pcsc` feature: wait until opensc-tool reads our ATR in the reader.
#[cfg(not(feature = "pcsc"))]
fn wait_with_opensc_tool(reader: &str) {
    let expected: Vec<String> = valuecard_reader::vpcd::ATR
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
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

#[test]
fn attached_card_answers_pcsc_clients_through_pcscd_and_vpcd() {
    if !vpcd_available() {
        eprintln!("SKIPPED: pcscd with vpcd not available");
        return;
    }
    let has_opensc = opensc_tool(&["--version"]).is_some();
    if cfg!(not(feature = "pcsc")) && !has_opensc {
        eprintln!("SKIPPED: opensc-tool not installed and PcscReader not built (feature pcsc off)");
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
        let number = opensc_reader_number();
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
