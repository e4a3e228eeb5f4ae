//! The value move's JSON bodies (`valuecard_migrate_http::wire`, seed 002): a provider's
//! (format, key packages, upload and download steps, the end of a copy) and the move
//! server's (users, chips, sessions, the next step, a move's outcome), and the problem
//! documents both answer with. The first byte selects the body, the rest is JSON. Whatever
//! parses must decode or be refused with a field name, never panic; a body that decodes
//! must come back to the same message after one more encode and decode.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use valuecard_migrate_http::problem::{move_error, Problem};
use valuecard_migrate_http::wire::{
    Body, ChipRegisteredBody, ChipRequestBody, ChipServiceBody, CopyEndedBody, DownloadRequestBody,
    ExchangeBody, FormatBody, KeyPackagesBody, KeyPackagesRequestBody, NextBody, NextRequestBody,
    OutcomeBody, SessionRequestBody, StartedBody, UploadRequestBody, UserCreatedBody,
    UserRequestBody,
};

const BODIES: u8 = 18;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % BODIES {
        0 => round_trip::<FormatBody>(body),
        1 => round_trip::<KeyPackagesRequestBody>(body),
        2 => round_trip::<KeyPackagesBody>(body),
        3 => round_trip::<UploadRequestBody>(body),
        4 => round_trip::<DownloadRequestBody>(body),
        5 => round_trip::<ExchangeBody>(body),
        6 => round_trip::<CopyEndedBody>(body),
        7 => round_trip::<UserRequestBody>(body),
        8 => round_trip::<UserCreatedBody>(body),
        9 => round_trip::<ChipRequestBody>(body),
        10 => round_trip::<ChipRegisteredBody>(body),
        11 => round_trip::<SessionRequestBody>(body),
        12 => round_trip::<StartedBody>(body),
        13 => round_trip::<NextRequestBody>(body),
        14 => round_trip::<NextBody>(body),
        15 => round_trip::<OutcomeBody>(body),
        16 => round_trip::<ChipServiceBody>(body),
        _ => {
            // A problem document from either service: the client rebuilds an error from
            // anything that parses, and the error's words are the problem's.
            if let Ok(problem) = serde_json::from_slice::<Problem>(body) {
                let _ = move_error(problem).to_string();
            }
        }
    }
});

fn round_trip<B>(bytes: &[u8])
where
    B: Body,
    B::Message: PartialEq + Debug,
{
    let Ok(message) = B::from_json(bytes) else {
        return;
    };
    let encoded = B::to_json(&message);
    let again = B::from_json(&encoded).expect("an encoded message decodes");
    assert_eq!(again, message);
    assert_eq!(B::to_json(&again), encoded, "one encoding per message");
}
