//! Transfer message decoders (`valuecard_core::messages::transfer`, seed 000) and the card's
//! persisted transfer state. The first byte selects the decoder, the rest is the input. A
//! decoded value must re-encode to exactly the input (every message has one encoding) and
//! decode again to itself.
#![no_main]

#[path = "common/round_trip.rs"]
mod common;

use common::round_trip;
use libfuzzer_sys::fuzz_target;
use valuecard_card::state::TransferState;
use valuecard_core::messages::transfer::{
    GetTransferKey, InitializeTransferIn, PublicKeyExport, SymmetricKeyExport, TransferComplete,
    TransferIn, TransferInOffer, TransferInfo, TransferKeySet, TransferOut, TransferOutOffer,
    TransferProof, TransferRelease, TransferReport, TransferStatusQuery, UpdatePermission,
    UpdatePermissionResponse,
};

const DECODERS: u8 = 19;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % DECODERS {
        0 => round_trip(body, TransferInfo::decode, TransferInfo::encode),
        1 => round_trip(body, UpdatePermission::decode, UpdatePermission::encode),
        2 => round_trip(body, UpdatePermissionResponse::decode, UpdatePermissionResponse::encode),
        3 => round_trip(body, GetTransferKey::decode, GetTransferKey::encode),
        4 => round_trip(body, SymmetricKeyExport::decode, SymmetricKeyExport::encode),
        5 => round_trip(body, PublicKeyExport::decode, PublicKeyExport::encode),
        6 => round_trip(body, InitializeTransferIn::decode, InitializeTransferIn::encode),
        7 => round_trip(body, TransferInOffer::decode, TransferInOffer::encode),
        8 => round_trip(body, TransferOut::decode, TransferOut::encode),
        9 => round_trip(body, TransferOutOffer::decode, TransferOutOffer::encode),
        10 => round_trip(body, TransferIn::decode, TransferIn::encode),
        11 => round_trip(body, TransferProof::decode, TransferProof::encode),
        12 => round_trip(body, TransferStatusQuery::decode, TransferStatusQuery::encode),
        13 => round_trip(body, TransferComplete::decode, TransferComplete::encode),
        14 => round_trip(body, TransferKeySet::from_bytes, |set: &TransferKeySet| {
            set.to_bytes().to_vec()
        }),
        15 => round_trip(body, TransferState::decode, TransferState::encode),
        16 => round_trip(body, TransferRelease::decode, TransferRelease::encode),
        17 => round_trip(body, TransferReport::decode, TransferReport::encode),
        _ => {
            // The held-key list and the pending transfer inside card information: whatever
            // decodes keeps the limits the card relies on.
            if let Ok(info) = TransferInfo::decode(body) {
                assert!(info.held_key_ids.len() <= valuecard_core::messages::transfer::HELD_TRANSFER_KEYS_MAX);
                assert!(info.held_key_ids.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
});
