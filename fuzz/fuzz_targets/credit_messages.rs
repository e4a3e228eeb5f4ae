//! Credit-mode message decoders (`valuecard_core::messages::credit`). The first byte selects
//! the decoder, the rest is the message. A decoded message must re-encode to exactly the
//! input: every message has one encoding.
#![no_main]

#[path = "common/round_trip.rs"]
mod common;

use common::round_trip;
use libfuzzer_sys::fuzz_target;
use valuecard_core::messages::credit::{
    CreditSessionOffer, CreditSessionRequest, CreditStatus, EnableCredit, RecordService,
    ServiceLogEntry, ServiceRecorded, SetPassword, VerifyPassword, VerifySettingNumber,
};

const DECODERS: u8 = 10;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % DECODERS {
        0 => round_trip(body, EnableCredit::decode, EnableCredit::encode),
        1 => round_trip(body, CreditStatus::decode, CreditStatus::encode),
        2 => round_trip(body, VerifySettingNumber::decode, VerifySettingNumber::encode),
        3 => round_trip(body, VerifyPassword::decode, VerifyPassword::encode),
        4 => round_trip(body, CreditSessionRequest::decode, CreditSessionRequest::encode),
        5 => round_trip(body, CreditSessionOffer::decode, CreditSessionOffer::encode),
        6 => round_trip(body, SetPassword::decode, SetPassword::encode),
        7 => round_trip(body, RecordService::decode, RecordService::encode),
        8 => round_trip(body, ServiceRecorded::decode, ServiceRecorded::encode),
        _ => round_trip(
            body,
            ServiceLogEntry::decode_list,
            |entries: &Vec<ServiceLogEntry>| {
                assert!(entries.len() <= valuecard_core::limits::CARD_SERVICE_LOG_ENTRIES_MAX);
                ServiceLogEntry::encode_list(entries)
            },
        ),
    }
});
