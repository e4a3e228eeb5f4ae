//! The settlement service's stored update steps (`valuecard_settle_http::settlement::steps`)
//! and the JSON bodies of the online services (`valuecard_settle_http::wire`): whatever a
//! corrupted database row or a hostile client sends is refused, never a panic; a stored step
//! that parses comes back the same after one more encode and parse, and its parts decode or
//! are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valuecard_settle_http::settlement::steps::{completed_parts, offered_parts, StoredStep};
use valuecard_settle_http::wire;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            let Ok(step) = StoredStep::from_json(text) else {
                return;
            };
            let again = StoredStep::from_json(&step.to_json()).expect("a stored step parses");
            assert_eq!(again, step);
            let _ = offered_parts([7; 16], &step);
            let _ = completed_parts(valuecard_core::ids::CardId([1; 8]), [7; 16], &step);
        }
        1 => {
            let _ = serde_json::from_slice::<wire::PaymentRequestBody>(body);
        }
        2 => {
            let _ = serde_json::from_slice::<wire::ChargeRequestBody>(body);
        }
        3 => {
            let _ = serde_json::from_slice::<wire::OutcomeBody>(body);
        }
        4 => {
            let _ = serde_json::from_slice::<wire::BillBody>(body);
        }
        _ => {
            let _ = serde_json::from_slice::<wire::OfferBody>(body);
        }
    }
});
