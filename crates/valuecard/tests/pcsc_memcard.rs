//! The memory card of seed 001 on the real PC/SC stack: `valuecard memcard attach` serves an
//! image in vpcd's reader, OpenSC's `opensc-tool` reads its storage-card ATR and drives it
//! with the PC/SC Part 3 commands of docs/memory-card.md, and what it wrote is in the image
//! afterwards; a connection dropped after a committed write leaves that write on the card.
//!
//! Says `SKIPPED: ...` on stderr and passes when pcscd with vpcd (`scripts/start-pcscd.sh`)
//! or opensc-tool is missing. Shares vpcd's readers through the lock of tests/common/pcsc.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use valuecard_card::memcard::ATR as MEMCARD_ATR;

use common::pcsc::{
    has_opensc_tool, opensc_reader_number, opensc_tool, python_with_pyscard, start,
    wait_for_atr_with_opensc_tool, Attached, CardKind, Needs, VPCD_READER,
};
use common::{run_json, skip_note, valuecard, Site};

/// One response as opensc-tool prints it: SW and data.
type Received = (String, Vec<u8>);

/// Sends `apdus` (hex) with `opensc-tool -r READER -s ...` in one connection; the responses,
/// or `None` when opensc-tool failed (the card left).
fn opensc_send(reader: &str, apdus: &[&str]) -> Option<Vec<Received>> {
    let mut args = vec!["-r", reader];
    for apdu in apdus {
        args.push("-s");
        args.push(apdu);
    }
    let output = opensc_tool(&args).expect("opensc-tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut received: Vec<Received> = Vec::new();
    let mut in_dump = false;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("Received (SW1=0x") {
            let sw2 = rest.split("SW2=0x").nth(1).map(|tail| &tail[..2]).unwrap();
            received.push((format!("{}{sw2}", &rest[..2]).to_uppercase(), Vec::new()));
            in_dump = true;
        } else if line.starts_with("Sending:") {
            in_dump = false;
        } else if in_dump {
            // "C1 00 ... 01 ........": up to 16 "XX " groups, then the bytes as text.
            let dump = received.last_mut().unwrap();
            for group in line.as_bytes().chunks(3).take(16) {
                let digits = std::str::from_utf8(&group[..2.min(group.len())]).unwrap_or("");
                match u8::from_str_radix(digits, 16) {
                    Ok(byte) if digits.len() == 2 && group.get(2).is_none_or(|&c| c == b' ') => {
                        dump.1.push(byte)
                    }
                    _ => break,
                }
            }
        }
    }
    (output.status.success() && received.len() == apdus.len()).then_some(received)
}

/// Sends `apdus` (hex) to vpcd's first reader with pyscard, which (unlike opensc-tool) sends
/// nothing of its own on connecting; the SWs, or `None` when the card left before all were
/// answered.
fn pyscard_send(python: &str, apdus: &[&str]) -> Option<Vec<String>> {
    const SCRIPT: &str = r#"
import sys
from smartcard.System import readers
reader = [r for r in readers() if sys.argv[1] in str(r)][0]
connection = reader.createConnection()
connection.connect()
for apdu in sys.argv[2:]:
    data, sw1, sw2 = connection.transmit(list(bytes.fromhex(apdu)))
    print("%02X%02X" % (sw1, sw2))
"#;
    let output = std::process::Command::new(python)
        .args(["-c", SCRIPT, VPCD_READER])
        .args(apdus)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let sws: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (output.status.success() && sws.len() == apdus.len()).then_some(sws)
}

fn issue(site: &Site, out: &Path) -> String {
    let issued = run_json(
        valuecard()
            .args(["memcard", "issue", "--json", "--data"])
            .arg(&site.data)
            .arg("--out")
            .arg(out),
    );
    issued["card"].as_str().unwrap().to_owned()
}

fn info(card: &Path) -> serde_json::Value {
    run_json(
        valuecard()
            .args(["memcard", "info", "--json", "--card"])
            .arg(card),
    )
}

/// A charge's value write: 25.00 on 2026-11-30, in the clear.
const VALUE_WRITE: &str = "FFD600100D0100005133000000000000 09C4";

#[test]
fn opensc_tool_reads_and_writes_a_memory_card_through_pcscd() {
    let Some(_readers) = start("memory card over PC/SC", Needs::Stack) else {
        return;
    };
    if !has_opensc_tool() {
        skip_note!("SKIPPED: memory card over PC/SC: opensc-tool not installed (Debian: opensc)");
        return;
    }
    let site = Site::new();
    let card = site.root.join("memcard.img");
    let card_id = issue(&site, &card);
    let mut attached =
        Attached::start_kind(CardKind::Memory, &card, site.root.join("attach.log"), &[]);
    let reader = opensc_reader_number(0);
    wait_for_atr_with_opensc_tool(&reader, &MEMCARD_ATR);

    let value_write = VALUE_WRITE.replace(' ', "");
    let answers = opensc_send(
        &reader,
        &[
            "FFCA000000",
            "FFB0000000",
            "FFB0010000",
            "FFB0020000",
            &value_write,
            "FFB0000804",
            "FFD6000001EE",
            "FFB0029001",
        ],
    )
    .expect("opensc-tool talks to the memory card");
    let sws: Vec<&str> = answers.iter().map(|(sw, _)| sw.as_str()).collect();
    assert_eq!(
        sws,
        ["9000", "9000", "9000", "9000", "9000", "9000", "6981", "6B00"]
    );
    assert_eq!(
        hex::encode_upper(&answers[0].1),
        card_id,
        "GET DATA: the UID"
    );
    let lengths: Vec<usize> = answers[1..4].iter().map(|(_, data)| data.len()).collect();
    assert_eq!(
        lengths,
        [256, 256, 144],
        "the 656-byte memory in three reads"
    );
    assert_eq!(hex::encode_upper(&answers[1].1[..8]), card_id);
    assert_eq!(
        answers[1].1[8..12],
        [0x00, 0x01, 0x00, 0x00],
        "counter 65536"
    );
    assert_eq!(
        answers[5].1,
        [0x00, 0x00, 0xFF, 0xFF],
        "the counter after the write"
    );
    attached.terminate();

    let after = info(&card);
    assert_eq!(after["card"], card_id);
    assert_eq!(after["counter"], 65_535);
    assert_eq!(after["value"]["format"], "plain");
    assert_eq!(after["value"]["amount"], 2_500);
    assert_eq!(after["value"]["date"], "2026-11-30");
}

#[test]
fn a_connection_dropped_after_a_committed_write_leaves_the_write_on_the_card() {
    let Some(_readers) = start("memory card dropped after commit", Needs::Stack) else {
        return;
    };
    let (Some(python), true) = (python_with_pyscard(), has_opensc_tool()) else {
        skip_note!(
            "SKIPPED: memory card dropped after commit: needs opensc-tool and Python with \
             pyscard (Debian: opensc, python3-pyscard)"
        );
        return;
    };
    let site = Site::new();
    let card = site.root.join("memcard.img");
    issue(&site, &card);
    let mut attached = Attached::start_kind(
        CardKind::Memory,
        &card,
        site.root.join("attach.log"),
        &["--danger-drop-after-commit", "2"],
    );
    let reader = opensc_reader_number(0);
    wait_for_atr_with_opensc_tool(&reader, &MEMCARD_ATR);
    let value_write = VALUE_WRITE.replace(' ', "");
    assert_eq!(
        pyscard_send(&python, &["FFB0000804"]),
        Some(vec!["9000".to_owned()])
    );
    assert!(
        pyscard_send(&python, &[&value_write]).is_none(),
        "the card left before it answered"
    );
    let status = attached.wait_exit(Duration::from_secs(30), "the injected drop");
    assert!(status.success(), "attach exited with {status}");
    assert!(attached
        .log()
        .contains("dropping the connection on purpose"));
    // The card committed before the drop: the machine that wrote must read it back, not
    // guess, and finds the counter moved and the value written.
    let after = info(&card);
    assert_eq!(after["counter"], 65_535);
    assert_eq!(after["value"]["amount"], 2_500);
}
