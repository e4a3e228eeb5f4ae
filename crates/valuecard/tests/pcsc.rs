//! Cards on the real PC/SC stack: pcscd with vsmartcard's vpcd driver, `valuecard card
//! attach` serving card images in vpcd's two reader slots, and PC/SC clients talking to them:
//! the terminal commands (`valuecard terminal ... --reader`, which need the `pcsc` feature:
//! `cargo test -p valuecard --features pcsc --test pcsc`), the `PcscReader` of
//! valuecard-reader and OpenSC's `opensc-tool`. The document's APDUs through outside clients
//! are in tests/pcsc_clients.rs.
//!
//! Every test says `SKIPPED: ...` on stderr and passes when what it needs is missing: pcscd
//! with vpcd (`scripts/start-pcscd.sh` starts it), the `pcsc` feature, or opensc-tool. The
//! tests share vpcd's two readers through the lock of tests/common/pcsc.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

#[cfg(not(feature = "pcsc"))]
use common::pcsc::wait_with_opensc_tool;
use common::pcsc::{
    has_opensc_tool, opensc_reader_number, opensc_tool, reader_index, start, Attached, Needs,
};
use common::{number, run, run_json, skip_note, valuecard, Site};

const OPENSC_SELECT: &str = "00:A4:04:00:08:F0:56:43:50:55:52:53:45:00";
const OPENSC_READ_PURSE: &str = "80:30:00:00:00";
/// How opensc-tool reports a 90 00 status word.
const OPENSC_9000: &str = "Received (SW1=0x90, SW2=0x00)";

/// The part that needs valuecard-reader's `PcscReader`.
#[cfg(feature = "pcsc")]
mod with_pcsc_reader {
    use std::path::Path;

    use valuecard_core::messages::purse::PurseStatus;
    use valuecard_reader::pcsc_reader::PcscReader;
    use valuecard_reader::vpcd::ATR;
    use valuecard_reader::CardReader;

    use super::common::pcsc::{CARD_WAIT, VPCD_READER};
    use super::common::valuecard;

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
    let site = Site::with_terminals(2);
    let (image, card_id) = site.issue("card", "50.00");
    let mut attached = Attached::start(&image, site.log("attach"));
    let reader = reader_index(0);

    let info = run_json(&mut site.at_reader("info", &reader, &[]));
    assert_eq!(info["card"], card_id.as_str());
    assert_eq!(number(&info, "balance"), 5000);
    assert_eq!(info["state"], "Active");

    let sale = run_json(&mut site.at_reader("purchase", &reader, &["--amount", "12.50"]));
    assert_eq!(sale["card"], card_id.as_str());
    assert_eq!(number(&sale, "amount"), 1250);
    assert_eq!(number(&sale, "balance_before"), 5000);
    assert_eq!(number(&sale, "balance_after"), 3750);
    assert_eq!(sale["terminal"], site.device_id("terminal-1").as_str());

    let load = run_json(&mut site.at_reader("load", &reader, &["--amount", "20.00"]));
    assert_eq!(load["card"], card_id.as_str());
    assert_eq!(number(&load, "amount"), 2000);
    assert_eq!(number(&load, "balance_after"), 5750);

    let info = run_json(&mut site.at_reader("info", &reader, &[]));
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
    let site = Site::with_terminals(2);
    let (image, card_id) = site.issue("card", "50.00");
    let reader = reader_index(0);
    let terminal_id = site.device_id("terminal-1");

    // A load through PC/SC first, so that issued and loaded value both count.
    let mut attached = Attached::start(&image, site.log("attach-load"));
    let load = run_json(&mut site.at_reader("load", &reader, &["--amount", "10.00"]));
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
            let ran = run(&mut site.at_reader("purchase", &reader, &["--amount", &amount_text]));
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

            let settled = run_json(&mut site.at_reader("settle", &reader, &[]));
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

            let sale = run_json(&mut site.at_reader("purchase", &reader, &["--amount", "0.50"]));
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
            let info = run_json(&mut site.at_reader("info", &reader, &[]));
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
    let site = Site::with_terminals(2);
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
                site.at_reader("info", reader, &["--terminal", terminal])
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

    let sale = run_json(&mut site.at_reader("purchase", &reader1, &["--amount", "3.00"]));
    assert_eq!(sale["card"], second_id.as_str());
    assert_eq!(number(&sale, "balance_after"), 1700);
    let infos = info_both(&site);
    assert_eq!(
        number(&infos[0], "balance"),
        5000,
        "the first card untouched"
    );
    assert_eq!(number(&infos[1], "balance"), 1700);
    let sale = run_json(&mut site.at_reader("purchase", &reader0, &["--amount", "1.00"]));
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
