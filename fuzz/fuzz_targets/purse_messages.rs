//! Purse message decoders. The first byte selects the decoder (modulo the number of
//! decoders; the numbering matches `Kind::ALL` in `crates/core/tests/messages.rs`, which
//! writes the seeds), the rest is the message. A decoded message must re-encode to exactly
//! the input: every message has one encoding.
#![no_main]

#[path = "common/round_trip.rs"]
mod common;

use common::round_trip;
use libfuzzer_sys::fuzz_target;
use valuecard_core::messages::purse::{
    CreditCommand, DebitCommand, GenerateKeyPairCommand, GenerateKeyPairResponse,
    GetLastTransaction, InitializeLoad, InitializePurchase, LastTransaction, LoadOffer, LogEntry,
    PersonalizeCommand, PurchaseOffer, PurseStatus, SelectResponse, UpdateConfirmation,
    UsageRecord,
};

const DECODERS: u8 = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % DECODERS {
        0 => round_trip(body, SelectResponse::decode, SelectResponse::encode),
        1 => round_trip(
            body,
            GenerateKeyPairCommand::decode,
            GenerateKeyPairCommand::encode,
        ),
        2 => round_trip(
            body,
            GenerateKeyPairResponse::decode,
            GenerateKeyPairResponse::encode,
        ),
        3 => round_trip(body, PersonalizeCommand::decode, PersonalizeCommand::encode),
        4 => round_trip(body, UsageRecord::decode, UsageRecord::encode),
        5 => round_trip(body, PurseStatus::decode, PurseStatus::encode),
        6 => round_trip(body, LogEntry::decode_list, |entries: &Vec<LogEntry>| {
            assert!(entries.len() <= valuecard_core::limits::CARD_LOG_ENTRIES_MAX);
            LogEntry::encode_list(entries)
        }),
        7 => round_trip(body, InitializePurchase::decode, InitializePurchase::encode),
        8 => round_trip(body, PurchaseOffer::decode, PurchaseOffer::encode),
        9 => round_trip(body, DebitCommand::decode, DebitCommand::encode),
        10 => round_trip(body, UpdateConfirmation::decode, UpdateConfirmation::encode),
        11 => round_trip(body, InitializeLoad::decode, InitializeLoad::encode),
        12 => round_trip(body, LoadOffer::decode, LoadOffer::encode),
        13 => round_trip(body, CreditCommand::decode, CreditCommand::encode),
        14 => round_trip(body, GetLastTransaction::decode, GetLastTransaction::encode),
        _ => round_trip(body, LastTransaction::decode, LastTransaction::encode),
    }
});
