//! The center service's JSON request and answer bodies (`valuecard_center_http::wire`,
//! `terminal_wire`, `transfer_wire`, `memcard_wire`, `online_wire` and `move_wire`). The first byte selects the body, the rest is
//! JSON. Whatever parses must
//! decode or be refused with a field name, never panic; a body that decodes must come back
//! to the same message after one more encode and decode (one meaning per message).
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use valuecard_center_http::memcard_wire::{
    FloatGrantBody, FloatRequestBody, LatestStateBody, PendingReceiptBody, WriteReceiptBody,
    WriteUploadBody,
};
use valuecard_center_http::move_wire::PurseMovesBody;
use valuecard_center_http::online_wire::OnlineRecordsBody;
use valuecard_center_http::terminal_wire::{
    ListDeltaBody, StampBody, UploadReceiptBody, UsageUploadBody,
};
use valuecard_center_http::transfer_wire::TransferUploadBody;
use valuecard_center_http::wire::{
    ApprovalBody, AuthorizeBody, CertifyBody, PersonalizationBody, SettleBody,
    SettlementChallengeBody, WireError,
};

const BODIES: u8 = 19;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % BODIES {
        0 => round_trip::<SettleBody, _>(body, |b| b.decode(), SettleBody::new),
        1 => round_trip::<SettlementChallengeBody, _>(
            body,
            |b| b.decode(),
            SettlementChallengeBody::new,
        ),
        2 => round_trip::<AuthorizeBody, _>(body, |b| b.decode(), AuthorizeBody::new),
        3 => round_trip::<ApprovalBody, _>(body, |b| b.decode(), ApprovalBody::new),
        4 => round_trip::<CertifyBody, _>(body, |b| b.decode(), CertifyBody::new),
        5 => round_trip::<PersonalizationBody, _>(body, |b| b.decode(), PersonalizationBody::new),
        6 => round_trip::<UsageUploadBody, _>(body, |b| b.decode(), UsageUploadBody::new),
        7 => round_trip::<UploadReceiptBody, _>(body, |b| b.decode(), UploadReceiptBody::new),
        8 => round_trip::<ListDeltaBody, _>(body, |b| b.decode(), ListDeltaBody::new),
        10 => round_trip::<TransferUploadBody, _>(body, |b| b.decode(), TransferUploadBody::new),
        11 => round_trip::<WriteUploadBody, _>(body, |b| b.decode(), WriteUploadBody::new),
        12 => round_trip::<WriteReceiptBody, _>(body, |b| Ok(b.decode()), WriteReceiptBody::new),
        13 => round_trip::<FloatRequestBody, _>(
            body,
            |b| b.decode(),
            |(machine, amount)| FloatRequestBody::new(*machine, *amount),
        ),
        14 => round_trip::<FloatGrantBody, _>(body, |b| b.decode(), FloatGrantBody::new),
        15 => round_trip::<LatestStateBody, _>(
            body,
            |b| b.decode(),
            |(card, evidence)| LatestStateBody::new(card, evidence.as_ref()),
        ),
        16 => round_trip::<PendingReceiptBody, _>(body, |b| b.decode(), PendingReceiptBody::new),
        17 => round_trip::<OnlineRecordsBody, _>(
            body,
            |b| b.decode(),
            |(server, items)| OnlineRecordsBody::new(*server, items),
        ),
        18 => round_trip::<PurseMovesBody, _>(
            body,
            |b| b.decode(),
            |(sam, moves)| PurseMovesBody::new(*sam, moves),
        ),
        _ => {
            if let Ok(parsed) = serde_json::from_slice::<StampBody>(body) {
                if let Ok((device, stamp)) = parsed.decode() {
                    let again = StampBody::new(device, &stamp).decode();
                    assert_eq!(again.ok(), Some((device, stamp)));
                }
            }
        }
    }
});

fn round_trip<B, M>(
    bytes: &[u8],
    decode: impl Fn(&B) -> Result<M, WireError>,
    encode: impl Fn(&M) -> B,
) where
    B: DeserializeOwned,
    M: PartialEq + Debug,
{
    let Ok(parsed) = serde_json::from_slice::<B>(bytes) else {
        return;
    };
    let Ok(message) = decode(&parsed) else {
        return;
    };
    let again = decode(&encode(&message)).expect("an encoded message decodes");
    assert_eq!(again, message);
}
