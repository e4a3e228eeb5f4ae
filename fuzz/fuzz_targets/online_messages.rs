//! The common-key application's message decoders (`valuecard_core::messages::online`, seed
//! 004), the signed documents of online settlement, and the card's persisted online state.
//! The first byte selects the decoder, the rest is the input. A decoded value must re-encode
//! to exactly the input (every message has one encoding) and decode again to itself.
#![no_main]

#[path = "common/round_trip.rs"]
mod common;

use common::round_trip;
use libfuzzer_sys::fuzz_target;
use valuecard_card::state::OnlineApp;
use valuecard_core::messages::online::{
    BalanceInfo, BalanceReadout, BalanceUpdate, Bill, Completion, CompletionQuery, CompletionStatus,
    ExternalAuthenticate, InitializeUpdate, InitializeUpdateResponse, KeyInstallation, OnlineFci,
    Receipt, SettlementCompletion, SettlementPreview,
};

const DECODERS: u8 = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % DECODERS {
        0 => round_trip(body, OnlineFci::decode, OnlineFci::encode),
        1 => round_trip(body, KeyInstallation::decode, KeyInstallation::encode),
        2 => round_trip(body, InitializeUpdate::decode, InitializeUpdate::encode),
        3 => round_trip(body, InitializeUpdateResponse::decode, InitializeUpdateResponse::encode),
        4 => round_trip(body, ExternalAuthenticate::decode, ExternalAuthenticate::encode),
        5 => round_trip(body, BalanceReadout::decode, BalanceReadout::encode),
        6 => round_trip(body, BalanceInfo::decode, BalanceInfo::encode),
        7 => round_trip(body, BalanceUpdate::decode, BalanceUpdate::encode),
        8 => round_trip(body, Completion::decode, Completion::encode),
        9 => round_trip(body, CompletionQuery::decode, CompletionQuery::encode),
        10 => round_trip(body, CompletionStatus::decode, CompletionStatus::encode),
        11 => round_trip(body, SettlementPreview::decode, SettlementPreview::encode),
        12 => round_trip(body, OnlineApp::decode, OnlineApp::encode),
        13 => round_trip(body, Bill::decode, Bill::encode),
        14 => round_trip(body, SettlementCompletion::decode, SettlementCompletion::encode),
        _ => round_trip(body, Receipt::decode, Receipt::encode),
    }
});
