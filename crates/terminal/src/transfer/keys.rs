//! Bringing two cards to one transfer-key generation (claims 10-16): the card with the
//! older key takes the newer one from the other card, under the update key when both
//! cards hold the same update-key generation (claims 11, 15; claim 9's selection when the
//! older card already holds the newer generation), and under the cards' certified key pairs
//! otherwise (claims 13, 16).

use valuecard_core::messages::transfer::{
    GetTransferKey, KeyUpdateMode, UpdatePermission, UpdatePermissionResponse,
};

use super::*;

/// Which form a key update took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUpdatePath {
    Symmetric,
    PublicKey,
    Selection,
}

impl KeyUpdatePath {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUpdatePath::Symmetric => "symmetric",
            KeyUpdatePath::PublicKey => "public-key",
            KeyUpdatePath::Selection => "selection",
        }
    }
}

/// A key update the terminal ran between two cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUpdate {
    pub card: CardId,
    pub from_key_id: u32,
    pub to_key_id: u32,
    pub path: KeyUpdatePath,
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> SettlementTerminal<S, T, R> {
    /// Claim 14: compares the two cards' transfer-key identifiers and, if they differ,
    /// updates the older card, by the path the update-key identifiers allow.
    pub(super) fn sync_keys(
        &mut self,
        a_reader: &mut impl CardReader,
        a: &mut TransferCard,
        b_reader: &mut impl CardReader,
        b: &mut TransferCard,
    ) -> Result<Option<KeyUpdate>, TerminalError> {
        let (ka, kb) = (a.transfer_key_id(), b.transfer_key_id());
        if ka == kb {
            if ka == 0 {
                return Err(TerminalError::NoTransferKey(a.card_id()));
            }
            return Ok(None);
        }
        let update = if ka < kb {
            self.update_older(a_reader, a, b_reader, b)?
        } else {
            self.update_older(b_reader, b, a_reader, a)?
        };
        Ok(Some(update))
    }

    fn update_older(
        &mut self,
        older_reader: &mut impl CardReader,
        older: &mut TransferCard,
        newer_reader: &mut impl CardReader,
        newer: &TransferCard,
    ) -> Result<KeyUpdate, TerminalError> {
        let target = newer.transfer_key_id();
        if target > older.summary.key_limit {
            return Err(TerminalError::TransferKeyAboveLimit {
                card: older.card_id(),
                key_id: target,
                limit: older.summary.key_limit,
            });
        }
        let same_update_key =
            older.update_key_id() != 0 && older.update_key_id() == newer.update_key_id();
        let path = if !same_update_key {
            KeyUpdatePath::PublicKey
        } else if self
            .transfer_info(older_reader)?
            .held_key_ids
            .contains(&target)
        {
            KeyUpdatePath::Selection
        } else {
            KeyUpdatePath::Symmetric
        };
        let (mode, permission, request_certificate) = match path {
            KeyUpdatePath::PublicKey => (
                KeyUpdateMode::PublicKey,
                UpdatePermission {
                    peer_certificate: Some(newer.certificate.clone()),
                },
                Some(older.certificate.clone()),
            ),
            KeyUpdatePath::Symmetric => (
                KeyUpdateMode::Symmetric,
                UpdatePermission {
                    peer_certificate: None,
                },
                None,
            ),
            KeyUpdatePath::Selection => (
                KeyUpdateMode::Selection,
                UpdatePermission {
                    peer_certificate: None,
                },
                None,
            ),
        };
        let data = self.exchange(
            older_reader,
            "UPDATE PERMISSION",
            ins::UPDATE_PERMISSION,
            mode as u8,
            permission.encode(),
        )?;
        let random = UpdatePermissionResponse::decode(&data)
            .map_err(|error| TerminalError::Malformed {
                message: "update permission",
                error,
            })?
            .random;
        let export = self.exchange(
            newer_reader,
            "GET TRANSFER KEY",
            ins::GET_TRANSFER_KEY,
            mode as u8,
            GetTransferKey {
                random,
                peer_certificate: request_certificate,
            }
            .encode(),
        )?;
        self.exchange(
            older_reader,
            "UPDATE TRANSFER KEY",
            ins::UPDATE_TRANSFER_KEY,
            mode as u8,
            export,
        )?;
        let from_key_id = older.transfer_key_id();
        older.summary.transfer_key_id = target;
        Ok(KeyUpdate {
            card: older.card_id(),
            from_key_id,
            to_key_id: target,
            path,
        })
    }
}
