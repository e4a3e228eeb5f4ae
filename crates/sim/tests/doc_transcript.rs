#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The worked example of `docs/card-commands.md`: a seeded world issues a card, loads 50.00,
//! buys for 12.50 and sends a few refused commands, and every APDU and response is rendered
//! as text. The rendering must equal the section of the document between the transcript
//! markers, so the document's bytes are exactly what the card does.
//!
//! After a deliberate change of the protocol, regenerate the section with
//! `VALUECARD_BLESS=1 cargo test -p valuecard-sim --test doc_transcript`.

use std::fmt::Write as _;
use std::path::PathBuf;

use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_core::apdu::{Command, Response};
use valuecard_core::messages::purse::{ins, CLA_ISO, CLA_PROPRIETARY, PURSE_AID};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, InProcessReader, ReaderError};
use valuecard_sim::{Storage, World, WorldRng};

const BEGIN: &str = "<!-- transcript:begin -->";
const END: &str = "<!-- transcript:end -->";
const SEED: [u8; 32] = [7u8; 32];

/// One command and the card's answer, with a label for the reader of the document.
struct Exchange {
    label: String,
    command: Vec<u8>,
    response: Vec<u8>,
}

/// A group of exchanges under one heading.
struct Step {
    title: String,
    exchanges: Vec<Exchange>,
}

/// A reader that passes everything to the card and records both directions.
struct RecordingReader<R: CardReader> {
    inner: R,
    steps: Vec<Step>,
    next_label: Option<String>,
}

impl<R: CardReader> RecordingReader<R> {
    fn new(inner: R) -> Self {
        RecordingReader {
            inner,
            steps: Vec::new(),
            next_label: None,
        }
    }

    /// Starts a new group: every exchange from now on is recorded under `title`.
    fn step(&mut self, title: &str) {
        self.steps.push(Step {
            title: title.to_owned(),
            exchanges: Vec::new(),
        });
    }

    /// Sends raw command bytes under an explicit label and returns the status word.
    fn send(&mut self, label: &str, apdu: &[u8]) -> (Vec<u8>, StatusWord) {
        self.next_label = Some(label.to_owned());
        let bytes = self.transmit_raw(apdu).unwrap();
        let response = Response::parse(&bytes).unwrap();
        (response.data, response.sw)
    }
}

impl<R: CardReader> CardReader for RecordingReader<R> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        let response = self.inner.transmit_raw(apdu)?;
        let label = self
            .next_label
            .take()
            .unwrap_or_else(|| command_name(apdu).to_owned());
        let step = self.steps.last_mut().expect("an exchange outside any step");
        step.exchanges.push(Exchange {
            label,
            command: apdu.to_vec(),
            response: response.clone(),
        });
        Ok(response)
    }

    fn name(&self) -> String {
        format!("recording {}", self.inner.name())
    }
}

/// The command's name from its class and instruction bytes.
fn command_name(apdu: &[u8]) -> &'static str {
    match apdu {
        [CLA_ISO, ins::SELECT, ..] => "SELECT",
        [CLA_ISO, ins::GET_CHALLENGE, ..] => "GET CHALLENGE",
        [CLA_PROPRIETARY, instruction, ..] => match *instruction {
            ins::GENERATE_KEY_PAIR => "GENERATE KEY PAIR",
            ins::PERSONALIZE => "PERSONALIZE",
            ins::READ_PURSE => "READ PURSE",
            ins::READ_LOG => "READ LOG",
            ins::INITIALIZE_PURCHASE => "INITIALIZE PURCHASE",
            ins::DEBIT => "DEBIT",
            ins::INITIALIZE_LOAD => "INITIALIZE LOAD",
            ins::CREDIT => "CREDIT",
            ins::GET_LAST_TRANSACTION => "GET LAST TRANSACTION",
            _ => "unknown instruction",
        },
        _ => "unknown command",
    }
}

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

/// Runs the documented scenario in a world seeded with `SEED` and returns its transcript.
fn scenario() -> String {
    let today = Date::from_ymd(2026, 1, 1).unwrap();
    let mut world =
        World::create_seeded(Storage::Memory, 1, today, WorldRng::from_seed(SEED)).unwrap();
    let card = world
        .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
        .unwrap();
    let mut reader = RecordingReader::new(InProcessReader::with_card("card", card));

    reader.step("1. Issue the card (dispenser, relaying the center)");
    let card_id = world
        .dispenser
        .issue_card(&mut reader, &mut world.center)
        .unwrap();

    reader.step("2. Load 50.00 (dispenser, online to the center)");
    world.load(&mut reader, amount(5_000)).unwrap();

    reader.step("3. Purchase of 12.50 at terminal 0");
    let receipt = world.terminals[0]
        .purchase(&mut reader, amount(1_250))
        .unwrap();
    assert_eq!(receipt.card_id, card_id);
    assert_eq!(receipt.balance_after, amount(3_750));

    reader.step("4. What the holder may read");
    let select = Command::new(0x00, ins::SELECT, 0x04, 0x00)
        .with_data(PURSE_AID.to_vec())
        .with_le(256)
        .encode();
    let (_, sw) = reader.send("SELECT", &select);
    assert_eq!(sw, StatusWord::SUCCESS);
    let (_, sw) = reader.send("READ PURSE (extended Le)", &[0x80, 0x30, 0, 0, 0, 0, 0]);
    assert_eq!(sw, StatusWord::SUCCESS);
    let (_, sw) = reader.send("READ LOG (extended Le)", &[0x80, 0x32, 0, 0, 0, 0, 0]);
    assert_eq!(sw, StatusWord::SUCCESS);
    let mut get_last = vec![0x80, 0x5C, 0, 0, 0x12, 0x80, 0x10];
    get_last.extend(0u8..16);
    get_last.push(0x00);
    let (_, sw) = reader.send("GET LAST TRANSACTION (challenge 00..0F)", &get_last);
    assert_eq!(sw, StatusWord::SUCCESS);

    reader.step("5. Refused commands");
    let refusals: [(&str, Vec<u8>, StatusWord); 10] = [
        (
            "unknown instruction FF",
            vec![0x80, 0xFF, 0x00, 0x00],
            StatusWord::INS_NOT_SUPPORTED,
        ),
        (
            "READ PURSE with class A0",
            vec![0xA0, 0x30, 0x00, 0x00, 0x00],
            StatusWord::CLA_NOT_SUPPORTED,
        ),
        (
            "READ PURSE with P1 = 01",
            vec![0x80, 0x30, 0x01, 0x00, 0x00],
            StatusWord::INCORRECT_P1_P2,
        ),
        (
            "READ PURSE with Lc = 05 but 2 data bytes",
            vec![0x80, 0x30, 0x00, 0x00, 0x05, 0x01, 0x02],
            StatusWord::WRONG_LENGTH,
        ),
        (
            "INITIALIZE PURCHASE with a truncated TLV (7F21 of 184 bytes, none present)",
            vec![0x80, 0x50, 0x00, 0x00, 0x04, 0x7F, 0x21, 0x81, 0xB8, 0x00],
            StatusWord::WRONG_DATA,
        ),
        (
            "DEBIT without INITIALIZE PURCHASE",
            vec![0x80, 0x52, 0x00, 0x00, 0x03, 0x82, 0x01, 0x00, 0x00],
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "GET CHALLENGE on an active card",
            vec![0x00, 0x84, 0x00, 0x00, 0x10],
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "SELECT of an unknown AID (last byte 58)",
            vec![
                0x00, 0xA4, 0x04, 0x00, 0x08, 0xF0, 0x56, 0x43, 0x50, 0x55, 0x52, 0x53, 0x58, 0x00,
            ],
            StatusWord::FILE_NOT_FOUND,
        ),
        (
            "READ PURSE after the failed SELECT (nothing selected)",
            vec![0x80, 0x30, 0x00, 0x00, 0x00],
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "unknown instruction FF, nothing selected",
            vec![0x80, 0xFF, 0x00, 0x00],
            StatusWord::INS_NOT_SUPPORTED,
        ),
    ];
    for (label, apdu, expected) in refusals {
        let (data, sw) = reader.send(label, &apdu);
        assert_eq!(sw, expected, "{label}");
        assert!(data.is_empty(), "{label}: a refusal carries no data");
    }

    render(&reader.steps)
}

/// The fixed text form: a heading per step, then `=> command` and `<= data SW` lines.
fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        writeln!(out, "#### {}", step.title).unwrap();
        writeln!(out).unwrap();
        writeln!(out, "```text").unwrap();
        for exchange in &step.exchanges {
            let split = exchange.response.len() - 2;
            let (data, sw) = exchange.response.split_at(split);
            writeln!(out, "# {}", exchange.label).unwrap();
            writeln!(out, "=> {}", hex::encode_upper(&exchange.command)).unwrap();
            if data.is_empty() {
                writeln!(out, "<= {}", hex::encode_upper(sw)).unwrap();
            } else {
                writeln!(
                    out,
                    "<= {} {}",
                    hex::encode_upper(data),
                    hex::encode_upper(sw)
                )
                .unwrap();
            }
        }
        writeln!(out, "```").unwrap();
        writeln!(out).unwrap();
    }
    out
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/card-commands.md")
}

/// Splits the document into (before and including the begin marker line, the section, the
/// end marker line and after).
fn split_doc(doc: &str) -> (&str, &str, &str) {
    let begin = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{} has no {BEGIN} marker", doc_path().display()));
    let section_start = begin + BEGIN.len();
    let section_start = section_start + usize::from(doc[section_start..].starts_with('\n'));
    let end = doc[section_start..]
        .find(END)
        .map(|offset| section_start + offset)
        .unwrap_or_else(|| panic!("{} has no {END} marker", doc_path().display()));
    (&doc[..section_start], &doc[section_start..end], &doc[end..])
}

/// A short line diff: every line that differs, with its number in the section.
fn diff(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    let mut shown = 0;
    for index in 0..expected.len().max(actual.len()) {
        let (old, new) = (expected.get(index), actual.get(index));
        if old == new {
            continue;
        }
        shown += 1;
        if shown > 20 {
            writeln!(out, "... (more differences)").unwrap();
            break;
        }
        if let Some(old) = old {
            writeln!(out, "line {:>3} - {old}", index + 1).unwrap();
        }
        if let Some(new) = new {
            writeln!(out, "line {:>3} + {new}", index + 1).unwrap();
        }
    }
    out
}

#[test]
fn seeded_run_is_deterministic() {
    assert_eq!(
        scenario(),
        scenario(),
        "two runs from the same seed gave different bytes: some party draws from another random source"
    );
}

#[test]
fn transcript_matches_the_document() {
    let transcript = scenario();
    let path = doc_path();
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let (before, section, after) = split_doc(&doc);
    if section == transcript {
        return;
    }
    if std::env::var("VALUECARD_BLESS").is_ok_and(|value| value == "1") {
        let updated = format!("{before}{transcript}{after}");
        std::fs::write(&path, updated)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        return;
    }
    panic!(
        "the transcript in {} is out of date (- document, + card):\n{}\n\
         Regenerate it with VALUECARD_BLESS=1 cargo test -p valuecard-sim --test doc_transcript",
        path.display(),
        diff(section, &transcript)
    );
}
