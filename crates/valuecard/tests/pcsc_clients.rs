//! The APDUs of docs/card-commands.md through PC/SC clients that are not valuecard's:
//! OpenSC's `opensc-tool` sends the document's commands and the structure of each answer is
//! checked; `tests/pyscard_client.py`, a pyscard client written from the document alone,
//! reads the card around a valuecard terminal's purchase and sends malformed and unknown
//! APDUs, each answered with its documented status word.
//!
//! Every test says `SKIPPED: ...` on stderr and passes when what it needs is missing: pcscd
//! with vpcd (`scripts/start-pcscd.sh` starts it), the `pcsc` feature, opensc-tool, or
//! Python with pyscard (Debian: python3-pyscard). The tests share vpcd's two readers through
//! the lock of tests/common/pcsc.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use valuecard_reader::vpcd::ATR;

use common::pcsc::{
    has_opensc_tool, opensc_reader_number, opensc_tool, pyscard, pyscard_reader,
    python_with_pyscard, reader_index, start, wait_with_opensc_tool, Attached, Needs,
    CARD_WAIT_SECONDS,
};
use common::{number, repo_root, run_json, skip_note, Site};

/// The purse AID (docs/card-commands.md § 1).
const PURSE_AID: &str = "F056435055525345";

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
    let site = Site::with_terminals(2);
    let (image, card_id) = site.issue("card", "50.00");
    let center_id = site.init["center"].as_str().unwrap().to_owned();
    let dispenser = site.device_id("dispenser-1");
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
    let site = Site::with_terminals(2);
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
    let inside = run_json(&mut site.at_reader("info", &reader, &[]));
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
    let sale = run_json(&mut site.at_reader("purchase", &reader, &["--amount", "7.25"]));
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
    assert_eq!(record["party"], site.device_id("terminal-1").as_str());
    let inside = run_json(&mut site.at_reader("info", &reader, &[]));
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
    let site = Site::with_terminals(2);
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
