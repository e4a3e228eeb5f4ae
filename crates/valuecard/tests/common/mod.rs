//! What the valuecard program's tests share: running the binary, a data directory with a
//! center and the cards it issued, and (in [`pcsc`]) cards served in vpcd's reader slots.
//!
//! Every test file includes it with `mod common;` and uses a part of it, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

pub mod moves;
pub mod pcsc;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use serde_json::Value;

/// Says that a test was skipped, on the process's stderr directly: the test harness captures
/// `eprintln!` of passing tests, and CI must see every skip.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use skip_note;

/// The valuecard binary this package built.
pub fn valuecard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_valuecard"))
}

/// `valuecard ARGS`, run to the end, for tests that write every argument as text.
pub fn valuecard_args(args: &[&str]) -> Output {
    valuecard().args(args).output().unwrap()
}

/// `valuecard ARGS --json`, which must succeed; its JSON.
pub fn json_args(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = valuecard_args(&args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The workspace root, where `docs/` and `tests/` are.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A finished command: its exit status and its output as text.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to its end, with nothing on its standard input.
pub fn run(command: &mut Command) -> Ran {
    let output = command.stdin(Stdio::null()).output().unwrap();
    Ran {
        status: output.status,
        stdout: text(&output.stdout),
        stderr: text(&output.stderr),
    }
}

/// Runs a command that must succeed and print one JSON object.
pub fn run_json(command: &mut Command) -> Value {
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

pub fn number(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {value}"))
}

/// A data directory made by `center init` in a temporary directory, removed with it.
pub struct Site {
    _dir: tempfile::TempDir,
    /// The temporary directory: card images and logs go here.
    pub root: PathBuf,
    /// The data directory (`--data`).
    pub data: PathBuf,
    /// What `center init --json` printed.
    pub init: Value,
}

impl Site {
    /// A center with its dispenser, one payment terminal and one settlement terminal.
    pub fn new() -> Self {
        Self::init(&[])
    }

    /// The same with `count` payment terminals (one per reader slot when two work at once).
    pub fn with_terminals(count: u32) -> Self {
        Self::init(&["--terminals", &count.to_string()])
    }

    fn init(options: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let init = run_json(
            valuecard()
                .args(["center", "init", "--json"])
                .args(options)
                .arg("--data")
                .arg(&data),
        );
        Site {
            _dir: dir,
            root,
            data,
            init,
        }
    }

    /// An installed device, by name, as `center init` listed it.
    pub fn device(&self, name: &str) -> Value {
        self.init["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|device| device["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no device {name} in {}", self.init))
    }

    /// The device ID of an installed device, by name.
    pub fn device_id(&self, name: &str) -> String {
        let device = self.device(name);
        device["device_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no device ID in {device}"))
            .to_owned()
    }

    /// Issues a card image holding `value`; returns its path and card ID.
    pub fn issue(&self, name: &str, value: &str) -> (PathBuf, String) {
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

    /// A log file's path in the temporary directory.
    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.log"))
    }

    /// `valuecard terminal SUBCOMMAND --json --data DATA ARGS`.
    pub fn terminal(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut command = valuecard();
        command
            .args(["terminal", subcommand, "--json", "--data"])
            .arg(&self.data)
            .args(args);
        command
    }

    /// `terminal SUBCOMMAND` with `--card CARD` (an image no attach holds) and `ARGS`, which
    /// must succeed.
    pub fn on_card(&self, subcommand: &str, card: &Path, args: &[&str]) -> Value {
        run_json(self.terminal(subcommand, args).arg("--card").arg(card))
    }

    /// A card's balance through `terminal info --card`.
    pub fn balance(&self, card: &Path) -> u64 {
        self.on_card("info", card, &[])["balance"].as_u64().unwrap()
    }

    /// `terminal history` of the default payment terminal.
    pub fn history(&self) -> Value {
        run_json(&mut self.terminal("history", &[]))
    }

    /// `terminal history` of the terminal named `terminal`.
    pub fn history_of(&self, terminal: &str) -> Value {
        run_json(&mut self.terminal("history", &["--terminal", terminal]))
    }

    /// `terminal sync` of the terminal named `terminal`.
    pub fn sync(&self, terminal: &str) -> Value {
        run_json(&mut self.terminal("sync", &["--terminal", terminal]))
    }

    /// `valuecard center COMMAND --json --data DATA`, which must succeed.
    pub fn center(&self, command: &str) -> Value {
        run_json(
            valuecard()
                .args(["center", command, "--json", "--data"])
                .arg(&self.data),
        )
    }

    pub fn center_status(&self) -> Value {
        self.center("status")
    }
}
