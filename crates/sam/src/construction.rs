//! What every SAM builds before it signs, whoever holds its keys: the checks on a purchase
//! or transfer order, the messages it signs, the sequence rule, the time-stamp chain and the
//! checks of an installation. The software SAM and the PKCS#11 SAM both build from here, so
//! their signatures are over the same bytes and a verifier cannot tell them apart.
//!
//! Nothing here holds or sees a private key: signing is left to the caller, which passes in
//! the bytes this module built.

use valuecard_core::cert::{Role, VerifiedCertificate};
use valuecard_core::crypto::{PublicKey, Signature, PUBLIC_KEY_LEN};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::Installation;
use valuecard_core::messages::purse::{
    Challenge, PurchaseCommit, TerminalStamp, TransactionKind, UsageRecord, STAMP_COUNT_MAX,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use zeroize::Zeroize;

use crate::{installation_mac_input, PurchaseOrder, SamError, TransferRecordOrder};

/// The purchase a SAM agrees to sign, or why not: the new balance.
pub fn check_purchase(order: &PurchaseOrder) -> Result<Amount, SamError> {
    if order.amount == Amount::ZERO {
        return Err(SamError::PurchaseRefused("the amount must be positive"));
    }
    if order.amount > order.amount_max {
        return Err(SamError::PurchaseRefused(
            "the amount exceeds what the card agreed to",
        ));
    }
    order
        .balance_before
        .checked_sub(order.amount)
        .map_err(|_| SamError::PurchaseRefused("the amount exceeds the card's balance"))
}

/// The sequence of the next signature: one above the last, or the store's floor if higher.
/// A SAM never signs two records under one sequence.
pub fn next_sequence(last_sequence: u32, sequence_floor: u32) -> Result<u32, SamError> {
    let next = last_sequence
        .checked_add(1)
        .ok_or(SamError::SequenceExhausted)?;
    Ok(next.max(sequence_floor))
}

/// Fig. 6: the commit a SAM signs for a checked purchase.
pub fn purchase_commit(
    order: &PurchaseOrder,
    terminal_id: DeviceId,
    balance_after: Amount,
    sequence: u32,
    stamp: TerminalStamp,
) -> PurchaseCommit {
    PurchaseCommit {
        card_id: order.card_id,
        terminal_id,
        challenge_terminal: order.challenge_terminal,
        challenge_card: order.challenge_card,
        counter: order.counter,
        amount: order.amount,
        balance_after,
        terminal_sequence: sequence,
        date: order.date,
        stamp,
    }
}

/// The checks of a transfer order before anything is signed: only a settlement terminal
/// signs one, for a positive amount, within the balance's bounds. Returns the new balance
/// and the card's new counter.
pub fn check_transfer(order: &TransferRecordOrder, role: Role) -> Result<(Amount, u32), SamError> {
    if role != Role::SettlementTerminal {
        return Err(SamError::TransferRefused(
            "only a settlement terminal signs transfer records",
        ));
    }
    if order.amount == Amount::ZERO {
        return Err(SamError::TransferRefused("the amount must be positive"));
    }
    let balance_after = match order.kind {
        TransactionKind::TransferOut => order.balance_before.checked_sub(order.amount),
        TransactionKind::TransferIn => order.balance_before.checked_add(order.amount),
        _ => return Err(SamError::TransferRefused("not a transfer")),
    }
    .map_err(|_| SamError::TransferRefused("the balance would leave its bounds"))?;
    let counter = order
        .counter
        .checked_add(1)
        .ok_or(SamError::TransferRefused("the card's counter is exhausted"))?;
    Ok((balance_after, counter))
}

/// Seed 000: one card's transfer record as the SAM signs it (the signature still zero; the
/// caller signs `record.signed_message(&order.card_id)`).
pub fn transfer_record(
    order: &TransferRecordOrder,
    writer: DeviceId,
    balance_after: Amount,
    counter: u32,
    sequence: u32,
    stamp: TerminalStamp,
) -> UsageRecord {
    UsageRecord {
        kind: order.kind,
        counter,
        challenge_writer: order.challenge_terminal,
        challenge_card: order.challenge_card,
        amount: order.amount,
        balance_after,
        writer,
        writer_sequence: sequence,
        date: order.date,
        signature: Signature([0; 64]),
        stamp: Some(stamp),
    }
}

/// The time-stamp chain as a SAM holds it (Figs. 10-12): only the current TS_t, never an
/// earlier one, and the SAM's own date at installation (count = days since then).
#[derive(Clone, Copy)]
pub struct StampChain {
    pub installed_on: Date,
    pub count: u32,
    pub current: [u8; 32],
}

impl core::fmt::Debug for StampChain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // TS_t is a secret of the SAM: a thief who learned it could sign later stamps.
        f.debug_struct("StampChain")
            .field("installed_on", &self.installed_on)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl StampChain {
    /// Brings the chain up to `today`: one step per day elapsed since installation. The
    /// count never goes down, whatever the clock says, and each step forgets TS_t. Returns
    /// whether the chain moved (its stamp must then be signed and stored again).
    pub fn advance_to(&mut self, today: Date) -> Result<bool, SamError> {
        let elapsed = today.0.saturating_sub(self.installed_on.0);
        if elapsed > STAMP_COUNT_MAX {
            return Err(SamError::StampExhausted);
        }
        if elapsed <= self.count {
            return Ok(false);
        }
        while self.count < elapsed {
            self.current = TerminalStamp::next(&self.current);
            self.count += 1;
        }
        Ok(true)
    }

    /// The bytes of ST(TS_t) for this device.
    pub fn signed_message(&self, device_id: &DeviceId) -> Vec<u8> {
        TerminalStamp::signed_message(device_id, self.count, &self.current)
    }

    /// Forgets TS_t (call before dropping a copy).
    pub fn erase(&mut self) {
        self.current.zeroize();
    }
}

/// Fig. 4A: checks an installation's certificate against its anchor (it must name this
/// device, this signing key and this sealing key, with `role`). The MAC and the sealed keys
/// are checked by the caller, whose keys they need.
pub fn check_installation_certificate(
    installation: &Installation,
    role: Role,
    today: Date,
    device_id: DeviceId,
    signing_key: &PublicKey,
    sealing_key: &[u8; PUBLIC_KEY_LEN],
) -> Result<VerifiedCertificate, SamError> {
    let verified = installation.anchor.verify(
        core::slice::from_ref(&installation.certificate),
        role,
        today,
    )?;
    if verified.subject() != device_id
        || verified.signing_key() != signing_key
        || verified.sealing_key() != Some(sealing_key)
    {
        return Err(SamError::ForeignCertificate);
    }
    Ok(verified)
}

/// The bytes the center MACs under this device's transport key for `installation`.
pub fn installation_mac_message(
    installation: &Installation,
    device_id: &DeviceId,
    challenge: &Challenge,
) -> Vec<u8> {
    installation_mac_input(
        device_id,
        challenge,
        &installation.certificate,
        &installation.anchor,
        &installation.sealed_keys,
    )
}

/// KT, KO and TS0 as the center seals them (Fig. 8, Fig. 10): 16 + 16 + 32 bytes.
pub const INSTALLATION_KEYS_LEN: usize = 64;

/// The three parts of opened installation keys, borrowed from the opened bytes.
#[derive(Clone, Copy)]
pub struct InstallationKeys<'a> {
    /// KT (Fig. 8).
    pub terminal_key: &'a [u8],
    /// KO (Fig. 8).
    pub common_key: &'a [u8],
    /// TS0 (Fig. 10).
    pub first_stamp: &'a [u8],
}

impl core::fmt::Debug for InstallationKeys<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("InstallationKeys(..)")
    }
}

/// Splits opened installation keys. The caller zeroizes `opened` after it stored the
/// parts; a wrong length is refused before anything is taken.
pub fn split_installation_keys(opened: &[u8]) -> Result<InstallationKeys<'_>, SamError> {
    if opened.len() != INSTALLATION_KEYS_LEN {
        return Err(SamError::BadSealedKeys);
    }
    Ok(InstallationKeys {
        terminal_key: &opened[..16],
        common_key: &opened[16..32],
        first_stamp: &opened[32..],
    })
}
