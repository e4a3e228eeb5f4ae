//! `valuecard memcard ...`: the memory cards of seed 001 from the command line: manufacture
//! one (`issue`), put one into a PC/SC reader (`attach`), and show what one holds (`info`).
//!
//! A memory card's ID is written into its ROM at manufacture. IDs are handed out where the
//! center was initialized, in sequence, from `DIR/center/memory-cards` (one line per card,
//! appended under a file lock), and begin with [`MEMORY_CARD_ID_PREFIX`], a byte no purse
//! card ID begins with (the center numbers purse cards `C0 ...`), so the two kinds never
//! collide. The center's database does not list memory cards in advance: it learns each
//! card from the machines' signed write records.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use valuecard_card::memcard::FileMemoryCard;
use valuecard_core::apdu::Command;
use valuecard_core::cert::{Certificate, Role};
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{decode_certificate_area, map, ValueArea, COUNTER_START};
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, EmulatedReader};

use crate::{attach, datadir};

/// The first byte of every memory card ID. Purse card IDs begin with `C0` (the center's
/// numbering), so no memory card ID is ever a purse card's.
pub const MEMORY_CARD_ID_PREFIX: u8 = 0xC1;

/// The registry of memory card IDs handed out, beside the center's keys.
fn registry_path(data: &Path) -> PathBuf {
    datadir::center_dir(data).join("memory-cards")
}

#[derive(Subcommand, Debug)]
pub(crate) enum MemcardCommands {
    /// Manufacture a memory card image: a fresh card ID in ROM, the counter at its start,
    /// every area blank (a charge machine gives it value).
    Issue {
        #[arg(long)]
        data: PathBuf,
        /// Where to write the new card image (never overwritten).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Put a memory card image into a PC/SC reader: serve it to pcscd through vsmartcard's
    /// vpcd driver until interrupted, with its storage-card ATR. While attached, the image
    /// belongs to this process.
    Attach {
        /// The memory card image file.
        #[arg(long)]
        card: PathBuf,
        /// Where vpcd listens for reader slot 0, as HOST:PORT.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// The vpcd reader slot: slot N is the port of slot 0 plus N.
        #[arg(long, default_value_t = 0)]
        slot: u16,
        /// Also log every command APDU and its status word.
        #[arg(long, short)]
        verbose: bool,
        #[command(flatten)]
        danger: attach::DangerArgs,
    },
    /// Show what a memory card holds: card ID, counter, value area (in the clear, or
    /// "sealed"), whether a signature is present, and the writer's certificate.
    Info {
        /// The memory card image file.
        #[arg(long)]
        card: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn memcard(command: MemcardCommands) -> Result<ExitCode, String> {
    match command {
        MemcardCommands::Issue { data, out, json } => issue(&data, &out, json),
        MemcardCommands::Attach {
            card,
            vpcd,
            slot,
            verbose,
            danger,
        } => {
            let path = card.clone();
            let target = attach::Target {
                card_path: &card,
                vpcd: &vpcd,
                slot,
                verbose,
                danger: &danger,
            };
            attach::serve(
                &target,
                move || FileMemoryCard::open_file(&path),
                |card: &FileMemoryCard| {
                    format!(
                        "memory card {} (counter {})",
                        card.card_id(),
                        card.counter()
                    )
                },
            )
        }
        MemcardCommands::Info { card, json } => info(&card, json),
    }
}

fn print(json_output: bool, value: serde_json::Value, text: impl FnOnce()) {
    if json_output {
        println!("{value}");
    } else {
        text();
    }
}

fn issue(data: &Path, out: &Path, json_output: bool) -> Result<ExitCode, String> {
    if !valuecard_center::key_path(&datadir::center_dir(data)).exists() {
        return Err(format!(
            "{} holds no center keys: memory cards are manufactured where the center was \
             initialized",
            data.display()
        ));
    }
    if out.exists() {
        return Err(format!(
            "{} already exists; a card image is never overwritten",
            out.display()
        ));
    }
    let card_id = next_card_id(data, out)?;
    let card = FileMemoryCard::manufacture_file(out, card_id)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let report = json!({
        "card": card_id.to_string(),
        "image": out.display().to_string(),
        "counter": card.counter(),
    });
    print(json_output, report, || {
        println!(
            "memory card {card_id} manufactured into {} (counter {}, no value yet)",
            out.display(),
            card.counter()
        );
    });
    Ok(ExitCode::SUCCESS)
}

/// The next memory card ID: [`MEMORY_CARD_ID_PREFIX`] and the card's number in the
/// registry, appended there (with the image it went into) under an exclusive lock, so two
/// `memcard issue` at once never take the same number.
fn next_card_id(data: &Path, out: &Path) -> Result<CardId, String> {
    let path = registry_path(data);
    let mut registry = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    registry
        .lock()
        .map_err(|e| format!("locking {}: {e}", path.display()))?;
    let mut text = String::new();
    registry
        .seek(SeekFrom::Start(0))
        .and_then(|_| registry.read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let number = text.lines().filter(|line| !line.trim().is_empty()).count() as u64 + 1;
    let card_id = memory_card_id(number)?;
    writeln!(registry, "{card_id} {}", out.display())
        .and_then(|()| registry.sync_data())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(card_id)
}

/// The ID of memory card number `number`: the prefix, then the number in 7 bytes.
fn memory_card_id(number: u64) -> Result<CardId, String> {
    let mut id = number.to_be_bytes();
    if id[0] != 0 {
        return Err("every memory card ID of this center is taken".into());
    }
    id[0] = MEMORY_CARD_ID_PREFIX;
    Ok(CardId(id))
}

/// The whole memory, read as a machine reads it: READ BINARY in chunks of 256 bytes.
fn read_memory(reader: &mut impl CardReader) -> Result<Vec<u8>, String> {
    let mut memory = Vec::with_capacity(map::MEMORY_LEN);
    while memory.len() < map::MEMORY_LEN {
        let [p1, p2] = (memory.len() as u16).to_be_bytes();
        let response = reader
            .exchange(&Command::new(0xFF, 0xB0, p1, p2).with_le(256))
            .map_err(|e| e.to_string())?;
        if response.sw != StatusWord::SUCCESS || response.data.is_empty() {
            return Err(format!("READ BINARY answered {}", response.sw));
        }
        memory.extend_from_slice(&response.data);
    }
    Ok(memory)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::CenterRoot => "center-root",
        Role::PaymentTerminal => "payment-terminal",
        Role::Dispenser => "dispenser",
        Role::Card => "card",
        Role::CenterLoad => "center-load",
        Role::SettlementTerminal => "settlement-terminal",
        Role::ChargeMachine => "charge-machine",
        Role::PaymentMachine => "payment-machine",
        Role::OnlineSettlement => "online-settlement",
        Role::ServiceProvider => "service-provider",
        Role::ServiceTransfer => "service-transfer",
        Role::MoveAdministrator => "move-administrator",
    }
}

fn info(card_path: &Path, json_output: bool) -> Result<ExitCode, String> {
    let card = FileMemoryCard::open_file(card_path)
        .map_err(|e| format!("{}: {e}", card_path.display()))?;
    let mut reader = EmulatedReader::with_card("memcard info", card);
    let memory = read_memory(&mut reader)?;
    let report = describe(&memory);
    print(json_output, report.clone(), || print_text(&report));
    Ok(ExitCode::SUCCESS)
}

/// What a memory dump holds, as JSON. Each area is decoded on its own, so a malformed one
/// (a card anyone may write) is named without hiding the others.
fn describe(memory: &[u8]) -> serde_json::Value {
    let area = |address: u16, len: usize| &memory[usize::from(address)..][..len];
    let card_id = CardId::from_slice(area(map::CARD_ID, map::CARD_ID_LEN))
        .map(|id| id.to_string())
        .unwrap_or_default();
    let counter_bytes = area(map::COUNTER, map::COUNTER_LEN);
    let counter = u32::from_be_bytes([
        counter_bytes[0],
        counter_bytes[1],
        counter_bytes[2],
        counter_bytes[3],
    ]);
    let value = match ValueArea::decode(area(map::VALUE_AREA, map::VALUE_AREA_LEN)) {
        Ok(ValueArea::Blank) => json!({"format": "blank"}),
        Ok(ValueArea::Plain(value)) => json!({
            "format": "plain",
            "date": value.date.to_string(),
            "amount": value.amount.minor(),
            "amount_text": value.amount.to_string(),
        }),
        Ok(ValueArea::Sealed { .. }) => json!({"format": "sealed"}),
        Err(error) => json!({"format": "malformed", "error": error.to_string()}),
    };
    let signature_present = area(map::SIGNATURE_AREA, map::SIGNATURE_AREA_LEN)
        .iter()
        .any(|&byte| byte != 0);
    let certificate =
        match decode_certificate_area(area(map::CERTIFICATE_AREA, map::CERTIFICATE_AREA_LEN)) {
            Ok(None) => serde_json::Value::Null,
            Ok(Some(certificate)) => certificate_json(&certificate),
            Err(error) => json!({"malformed": error.to_string()}),
        };
    json!({
        "card": card_id,
        "counter": counter,
        "value_writes": COUNTER_START.saturating_sub(counter),
        "value": value,
        "signature_present": signature_present,
        "writer_certificate": certificate,
    })
}

fn certificate_json(certificate: &Certificate) -> serde_json::Value {
    let body = &certificate.body;
    json!({
        "subject": body.subject.to_string(),
        "role": role_name(body.role),
        "issuer": body.issuer.to_string(),
        "effective": body.effective.to_string(),
        "expiry": body.expiry.to_string(),
    })
}

fn print_text(report: &serde_json::Value) {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    println!("memory card {}", text(&report["card"]));
    println!(
        "  counter      {} ({} value writes so far)",
        report["counter"], report["value_writes"]
    );
    let value = &report["value"];
    match value["format"].as_str().unwrap_or_default() {
        "plain" => println!(
            "  value        {} on {}",
            text(&value["amount_text"]),
            text(&value["date"])
        ),
        "sealed" => println!("  value        sealed (claim 4: only a SAM opens it)"),
        "blank" => println!("  value        blank (never charged)"),
        _ => println!("  value        malformed: {}", text(&value["error"])),
    }
    let signature = if report["signature_present"] == true {
        "present"
    } else {
        "absent"
    };
    println!("  signature    {signature}");
    let certificate = &report["writer_certificate"];
    if certificate.is_null() {
        println!("  writer       none (no certificate written)");
    } else if certificate.get("malformed").is_some() {
        println!(
            "  writer       malformed: {}",
            text(&certificate["malformed"])
        );
    } else {
        println!(
            "  writer       {} ({}), certified by {} from {} to {}",
            text(&certificate["subject"]),
            text(&certificate["role"]),
            text(&certificate["issuer"]),
            text(&certificate["effective"]),
            text(&certificate["expiry"])
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use valuecard_card::image::EEPROM_SIZE;
    use valuecard_card::memcard::MemoryCard;
    use valuecard_core::cert::{CertificateBody, Role};
    use valuecard_core::crypto::SigningKeyPair;
    use valuecard_core::ids::DeviceId;
    use valuecard_core::messages::memcard::{encode_certificate_area, PlainValue};
    use valuecard_core::money::Amount;
    use valuecard_core::time::Date;

    use super::*;

    fn ram_card(card_id: CardId) -> MemoryCard<valuecard_card::eeprom::MemoryEeprom> {
        MemoryCard::manufacture(
            valuecard_card::eeprom::MemoryEeprom::new(EEPROM_SIZE),
            card_id,
        )
        .unwrap()
    }

    fn write(reader: &mut impl CardReader, address: u16, data: &[u8]) {
        let [p1, p2] = address.to_be_bytes();
        let response = reader
            .exchange(&Command::new(0xFF, 0xD6, p1, p2).with_data(data.to_vec()))
            .unwrap();
        assert_eq!(response.sw, StatusWord::SUCCESS);
    }

    #[test]
    fn memory_card_ids_carry_their_prefix_and_number() {
        assert_eq!(
            memory_card_id(1).unwrap(),
            CardId([0xC1, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            memory_card_id(0x0102_0304_0506).unwrap().to_string(),
            "C100010203040506"
        );
        assert!(memory_card_id(1 << 56).is_err());
    }

    #[test]
    fn info_describes_a_blank_and_a_written_card() {
        let id = memory_card_id(5).unwrap();
        let mut reader = EmulatedReader::with_card("test", ram_card(id));
        let blank = describe(&read_memory(&mut reader).unwrap());
        assert_eq!(blank["card"], id.to_string());
        assert_eq!(blank["counter"], COUNTER_START);
        assert_eq!(blank["value"]["format"], "blank");
        assert_eq!(blank["signature_present"], false);
        assert!(blank["writer_certificate"].is_null());

        let key = SigningKeyPair::from_seed(&[7; 32]);
        let certificate = CertificateBody {
            issuer: DeviceId(*b"CENTER01"),
            subject: DeviceId(*b"CHARGE01"),
            role: Role::ChargeMachine,
            effective: Date(20_000),
            expiry: Date(20_365),
            signing_key: key.public_key(),
            sealing_key: None,
        }
        .sign(&key);
        let value = ValueArea::Plain(PlainValue {
            date: Date(20_100),
            amount: Amount::new(2_500).unwrap(),
        });
        write(&mut reader, map::VALUE_AREA, &value.encode());
        write(&mut reader, map::SIGNATURE_AREA, &[0x42; 64]);
        let area = encode_certificate_area(&certificate);
        for (index, chunk) in area.chunks(255).enumerate() {
            write(
                &mut reader,
                map::CERTIFICATE_AREA + 255 * index as u16,
                chunk,
            );
        }
        let written = describe(&read_memory(&mut reader).unwrap());
        assert_eq!(written["counter"], COUNTER_START - 1);
        assert_eq!(written["value_writes"], 1);
        assert_eq!(written["value"]["format"], "plain");
        assert_eq!(written["value"]["amount"], 2_500);
        assert_eq!(written["signature_present"], true);
        assert_eq!(written["writer_certificate"]["subject"], "4348415247453031");
        assert_eq!(written["writer_certificate"]["role"], "charge-machine");

        // Anyone may write a memory card: a malformed area is named, the rest still shown.
        write(&mut reader, map::VALUE_AREA, &[0x7F]);
        let malformed = describe(&read_memory(&mut reader).unwrap());
        assert_eq!(malformed["value"]["format"], "malformed");
        assert_eq!(malformed["writer_certificate"]["role"], "charge-machine");
    }
}
