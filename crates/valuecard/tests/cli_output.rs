//! What the program writes and where: a reader that goes away, an output that cannot be
//! written, and which commands print JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::valuecard;

/// A standard output whose reader is already gone: a socket whose other end is closed, so
/// that every write fails with a broken pipe, deterministically (no race with a reader).
#[cfg(unix)]
fn closed_reader() -> std::process::Stdio {
    let (reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(reader);
    std::process::Stdio::from(std::os::fd::OwnedFd::from(writer))
}

#[cfg(unix)]
#[test]
fn a_reader_that_goes_away_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let card = dir.path().join("card.img");
    let (data_arg, card_arg) = (data.to_str().unwrap(), card.to_str().unwrap());
    for args in [
        vec!["center", "init", "--data", data_arg],
        vec![
            "card", "issue", "--data", data_arg, "--out", card_arg, "--value", "20",
        ],
    ] {
        let output = valuecard().args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
    }
    let demo = dir.path().join("demo");
    for args in [
        vec!["terminal", "info", "--data", data_arg, "--card", card_arg],
        vec![
            "terminal", "info", "--data", data_arg, "--card", card_arg, "--json",
        ],
        vec![
            "terminal", "purchase", "--data", data_arg, "--card", card_arg, "--amount", "2",
        ],
        vec!["terminal", "history", "--data", data_arg],
        vec!["center", "status", "--data", data_arg],
        vec![
            "card",
            "apdu",
            "--card",
            card_arg,
            "00A4040008F05643505552534500",
        ],
        vec!["demo", "--data", demo.to_str().unwrap()],
    ] {
        let output = valuecard()
            .args(&args)
            .stdout(closed_reader())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}: nothing to say on stderr");
        assert_eq!(
            output.status.code(),
            Some(141),
            "{args:?}: the exit status of a program stopped by SIGPIPE"
        );
    }
    // What a command committed before its output found no reader stays committed.
    let output = valuecard()
        .args([
            "terminal", "info", "--json", "--data", data_arg, "--card", card_arg,
        ])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["balance"], 1800);
    // Any other failure to write the output is an error like any other, not a panic.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let output = valuecard()
            .args(["center", "status", "--data", data_arg])
            .stdout(full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with("valuecard: cannot write standard output"),
            "{stderr}"
        );
    }
    // Help goes through clap, which gives up quietly on its own.
    let output = valuecard()
        .arg("--help")
        .stdout(closed_reader())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}

/// docs/operations.md: every command that reports a result takes --json; the two that run
/// until stopped do not.
#[test]
fn every_command_that_reports_takes_json() {
    let reporting: &[&[&str]] = &[
        &["demo"],
        &["center", "init"],
        &["center", "status"],
        &["center", "report-card"],
        &["center", "report-terminal"],
        &["center", "float-limit"],
        &["center", "restore"],
        &["center", "statements"],
        &["center", "rotate-transfer-key"],
        &["center", "rotate-update-key"],
        &["card", "issue"],
        &["card", "apdu"],
        &["memcard", "issue"],
        &["memcard", "info"],
        &["terminal", "readers"],
        &["terminal", "install"],
        &["terminal", "info"],
        &["terminal", "purchase"],
        &["terminal", "load"],
        &["terminal", "settle"],
        &["terminal", "history"],
        &["terminal", "sync"],
        &["terminal", "credit-password"],
        &["terminal", "credit-service"],
        &["terminal", "credit-upload"],
        &["terminal", "advance-stamp"],
        &["terminal", "transfer"],
        &["terminal", "settle-transfer"],
        &["terminal", "release-transfer"],
        &["terminal", "charge"],
        &["terminal", "pay"],
        &["terminal", "machine-sync"],
        &["bench", "purchase"],
        &["bench", "transfer"],
        &["bench", "ingest"],
        &["bench", "http"],
        &["bench", "pcsc"],
        &["bench", "memcard"],
        &["bench", "sam"],
        &["bench", "online"],
        &["bench", "migrate"],
        &["online", "try"],
        &["simulate"],
        &["migrate"],
        &["migrate", "init"],
        &["migrate", "user"],
        &["migrate", "register"],
        &["provider", "issue"],
    ];
    let help = |command: &[&str]| {
        let output = valuecard().args(command).arg("--help").output().unwrap();
        assert!(output.status.success(), "{command:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    for command in reporting {
        assert!(help(command).contains("--json"), "{command:?} lacks --json");
    }
    let long_running: &[&[&str]] = &[
        &["card", "attach"],
        &["memcard", "attach"],
        &["center", "serve"],
        &["wallet"],
        &["migrate", "serve"],
        &["provider", "serve"],
    ];
    for command in long_running {
        assert!(!help(command).contains("--json"), "{command:?}");
    }
    // And no command is missing from the lists above.
    let groups = [
        "center", "card", "memcard", "terminal", "bench", "online", "migrate", "provider",
    ];
    let top = help(&[]);
    let top_names = top
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help" && !groups.contains(name));
    for name in top_names {
        assert!(
            reporting.iter().chain(long_running).any(|c| c == &[name]),
            "{name} is in neither list"
        );
    }
    for group in groups {
        let text = help(&[group]);
        let names = text
            .lines()
            .skip_while(|line| !line.starts_with("Commands:"))
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| *name != "help");
        for name in names {
            let known = reporting.iter().any(|c| c == &[group, name])
                || long_running.iter().any(|c| c == &[group, name]);
            assert!(known, "{group} {name} is in neither list");
        }
    }
}
