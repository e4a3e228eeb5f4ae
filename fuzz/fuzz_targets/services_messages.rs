//! The services application's message decoders (`valuecard_core::messages::services`, seed
//! 002): its FCI, the administrative SAM's signed commands, the session's commands and the
//! plaintexts sealed in it, area contents and operations, and the card's persisted service
//! areas. The first byte selects the decoder, the rest is the input. A decoded value must
//! re-encode to exactly the input (every message has one encoding) and decode again to
//! itself.
#![no_main]

#[path = "common/round_trip.rs"]
mod common;

use common::round_trip;
use libfuzzer_sys::fuzz_target;
use valuecard_card::state::ServicesApp;
use valuecard_core::messages::services::{
    AreaContent, AreaFormat, AreaReadout, ExportRequest, ExportedArea, FormatArea, ImportReceipt,
    ImportRequest, OpenService, OpenServiceResponse, ServiceAuthenticate, ServiceOperation,
    ServicesFci, SwitchKeys, UpdateArea,
};

const DECODERS: u8 = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % DECODERS {
        0 => round_trip(body, ServicesFci::decode, ServicesFci::encode),
        1 => round_trip(body, FormatArea::decode, FormatArea::encode),
        2 => round_trip(body, SwitchKeys::decode, SwitchKeys::encode),
        3 => round_trip(body, OpenService::decode, OpenService::encode),
        4 => round_trip(body, OpenServiceResponse::decode, OpenServiceResponse::encode),
        5 => round_trip(body, ServiceAuthenticate::decode, ServiceAuthenticate::encode),
        6 => round_trip(body, ExportRequest::decode, ExportRequest::encode),
        7 => round_trip(body, ExportedArea::decode, ExportedArea::encode),
        8 => round_trip(body, ImportRequest::decode, ImportRequest::encode),
        9 => round_trip(body, ImportReceipt::decode, ImportReceipt::encode),
        10 => round_trip(body, UpdateArea::decode, UpdateArea::encode),
        11 => round_trip(body, AreaReadout::decode, AreaReadout::encode),
        12 => round_trip(body, AreaContent::decode, AreaContent::encode),
        13 => round_trip(body, ServiceOperation::decode, ServiceOperation::encode),
        14 => round_trip(body, AreaFormat::decode, AreaFormat::encode),
        _ => round_trip(body, ServicesApp::decode, ServicesApp::encode),
    }
});
