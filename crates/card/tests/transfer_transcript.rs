//! The worked transfer example of `docs/card-commands.md` § 10.3: three test cards and a
//! settlement terminal, all seeded, run a public-key key update, a transfer of 25.00, a
//! status query, a symmetric key update and a few refused commands. Every APDU and answer is
//! rendered as text and must equal the section of the document between the transfer
//! transcript markers, so the document's bytes are exactly what the card does.
//!
//! After a deliberate change of the protocol, regenerate the section with
//! `VALUECARD_BLESS=1 cargo test -p valuecard-card --test transfer_transcript`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_common;

use std::fmt::Write as _;
use std::path::PathBuf;

use transfer_common::*;
use valuecard_card::testing;
use valuecard_core::messages::transfer::{ins, ProofStatus, TransferStatusQuery};
use valuecard_core::StatusWord;

const BEGIN: &str = "<!-- transfer-transcript:begin -->";
const END: &str = "<!-- transfer-transcript:end -->";

/// A group of exchanges under one heading.
struct Step {
    title: &'static str,
    exchanges: Vec<(String, Vec<u8>, Vec<u8>)>,
}

fn name(instruction: u8) -> &'static str {
    match instruction {
        ins::GET_TRANSFER_INFO => "GET TRANSFER INFO",
        ins::UPDATE_PERMISSION => "UPDATE PERMISSION",
        ins::GET_TRANSFER_KEY => "GET TRANSFER KEY",
        ins::UPDATE_TRANSFER_KEY => "UPDATE TRANSFER KEY",
        ins::INITIALIZE_TRANSFER_IN => "INITIALIZE TRANSFER IN",
        ins::TRANSFER_OUT => "TRANSFER OUT",
        ins::TRANSFER_IN => "TRANSFER IN",
        ins::TRANSFER_COMPLETE => "TRANSFER COMPLETE",
        ins::TRANSFER_STATUS => "TRANSFER STATUS",
        _ => "unknown instruction",
    }
}

fn card_letter(number: u8) -> char {
    (b'A' + number - 1) as char
}

struct Recorder {
    transcript: Transcript,
    steps: Vec<Step>,
    labels: Vec<String>,
}

impl Recorder {
    /// Moves what the cards exchanged since the last call into a step titled `title`;
    /// `labels` name refused commands in order (others are named by their instruction).
    fn step(&mut self, title: &'static str) {
        let exchanges = self
            .transcript
            .borrow_mut()
            .drain(..)
            .map(|(card, command, response)| {
                let label = if self.labels.is_empty() {
                    format!("card {}: {}", card_letter(card), name(command[1]))
                } else {
                    format!("card {}: {}", card_letter(card), self.labels.remove(0))
                };
                (label, command, response)
            })
            .collect();
        self.steps.push(Step { title, exchanges });
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn scenario() -> String {
    // A (card 1): generation 1, update key 1. B (card 2): generation 2, update key 2. C (card
    // 3): generation 3, update key 1. Limits 5.
    let mut a = Device::new(1, 10_000, Some(&testing::key_set(1, 5, 1)));
    let mut b = Device::new(2, 2_000, Some(&testing::key_set(2, 5, 2)));
    let mut c = Device::new(3, 0, Some(&testing::key_set(3, 5, 1)));
    let transcript = Transcript::default();
    for device in [&mut a, &mut b, &mut c] {
        device.transcript = Some(transcript.clone());
    }
    let mut recorder = Recorder {
        transcript,
        steps: Vec::new(),
        labels: Vec::new(),
    };
    let mut terminal = Terminal::default();

    let info_a = a.info();
    let info_b = b.info();
    assert_eq!((info_a.transfer_key_id, info_b.transfer_key_id), (1, 2));
    recorder.step("1. Card information");

    // The update keys differ (1 and 2): only the public-key form can move B's key to A.
    key_update(&mut a, &mut b, 1).unwrap();
    assert_eq!(a.purse().transfer.selected, 2);
    recorder.step("2. Key update, public-key form (P1 = 01): A takes generation 2 from B");

    let flow = terminal.run(&mut a, &mut b, amount(2_500)).unwrap();
    assert_eq!((a.balance(), b.balance()), (7_500, 4_500));
    recorder.step("3. Transfer of 25.00 from A to B");

    let proof = terminal.status(&mut b, &flow.status_query()).unwrap();
    assert_eq!(proof.status, ProofStatus::Received);
    recorder.step("4. Recovery query: B proves that it received the transfer");

    key_update(&mut a, &mut c, 0).unwrap();
    assert_eq!(a.purse().transfer.selected, 3);
    recorder.step("5. Key update, symmetric form (P1 = 00): A takes generation 3 from C");

    let replay = flow.transfer_in.clone().unwrap();
    let refusals: [(&str, u8, u8, Vec<u8>, StatusWord); 5] = [
        (
            "TRANSFER IN replayed, no session",
            2,
            ins::TRANSFER_IN,
            replay.encode(),
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "UPDATE TRANSFER KEY without UPDATE PERMISSION",
            1,
            ins::UPDATE_TRANSFER_KEY,
            Vec::new(),
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "TRANSFER STATUS of an unknown transfer at a counter the card has not reached",
            2,
            ins::TRANSFER_STATUS,
            TransferStatusQuery {
                destination_counter: 9,
                challenge_source: [0x00; 16],
                ..flow.status_query()
            }
            .encode(),
            StatusWord::REFERENCED_DATA_NOT_FOUND,
        ),
        (
            "TRANSFER COMPLETE with nothing pending",
            1,
            ins::TRANSFER_COMPLETE,
            valuecard_core::messages::transfer::TransferComplete {
                proof: proof.clone(),
                record: None,
            }
            .encode(),
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "GET TRANSFER INFO with data",
            1,
            ins::GET_TRANSFER_INFO,
            vec![0x00],
            StatusWord::WRONG_LENGTH,
        ),
    ];
    for (label, card, instruction, data, expected) in refusals {
        recorder.labels.push(label.to_owned());
        let device = match card {
            1 => &mut a,
            _ => &mut b,
        };
        let response = device.transfer(instruction, 0, data);
        assert_eq!(response.sw, expected, "{label}");
        assert!(
            response.data.is_empty(),
            "{label}: a refusal carries no data"
        );
    }
    recorder
        .labels
        .push("UPDATE PERMISSION with P1 = 03".to_owned());
    let response = a.transfer(ins::UPDATE_PERMISSION, 3, Vec::new());
    assert_eq!(response.sw, StatusWord::INCORRECT_P1_P2);
    recorder.step("6. Refused commands");

    render(&recorder.steps)
}

/// The same text form as the purse transcript: a heading per step, then `=> command` and
/// `<= data SW` lines.
fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        writeln!(out, "#### {}", step.title).unwrap();
        writeln!(out).unwrap();
        writeln!(out, "```text").unwrap();
        for (label, command, response) in &step.exchanges {
            let (data, sw) = response.split_at(response.len() - 2);
            writeln!(out, "# {label}").unwrap();
            writeln!(out, "=> {}", hex(command)).unwrap();
            if data.is_empty() {
                writeln!(out, "<= {}", hex(sw)).unwrap();
            } else {
                writeln!(out, "<= {} {}", hex(data), hex(sw)).unwrap();
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

/// (up to and including the begin marker line, the section, from the end marker on).
fn split_doc(doc: &str) -> (&str, &str, &str) {
    let begin = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{} has no {BEGIN} marker", doc_path().display()));
    let start = begin + BEGIN.len();
    let start = start + usize::from(doc[start..].starts_with('\n'));
    let end = doc[start..]
        .find(END)
        .map(|offset| start + offset)
        .unwrap_or_else(|| panic!("{} has no {END} marker", doc_path().display()));
    (&doc[..start], &doc[start..end], &doc[end..])
}

#[test]
fn seeded_run_is_deterministic() {
    assert_eq!(scenario(), scenario());
}

#[test]
fn transfer_transcript_matches_the_document() {
    let transcript = scenario();
    let path = doc_path();
    let doc = std::fs::read_to_string(&path).unwrap();
    let (before, section, after) = split_doc(&doc);
    if section == transcript {
        return;
    }
    if std::env::var("VALUECARD_BLESS").is_ok_and(|value| value == "1") {
        std::fs::write(&path, format!("{before}{transcript}{after}")).unwrap();
        return;
    }
    let first_difference = section
        .lines()
        .zip(transcript.lines())
        .position(|(old, new)| old != new)
        .unwrap_or(section.lines().count().min(transcript.lines().count()));
    panic!(
        "the transfer transcript in {} is out of date from line {} of the section on.\n\
         Regenerate it with VALUECARD_BLESS=1 cargo test -p valuecard-card --test transfer_transcript",
        path.display(),
        first_difference + 1
    );
}
