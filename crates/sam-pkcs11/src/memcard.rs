//! Seed 001 in the token: the memory-card operations of a charge or payment machine whose
//! SAM is a PKCS#11 token.
//!
//! What to sign is decided by `valuecard_sam::memcard` (the same code as the software SAM's);
//! this module adds only what the token does: the Ed25519 signature (CKM_EDDSA), the
//! writer's value key of claim 4 derived from KO in the token (one CKM_AES_CMAC, see
//! `TokenSession::cmac_derived_key`), and the float, last grant and last write sequence kept
//! in the token's state object (`crate::state`).
//!
//! **Invariant:** the state a write changes (the float of a charge, the sequence) is written
//! to the token before the signed record leaves the SAM. A crash after the signature and
//! before that write loses the signature with the process; one after it leaves the float
//! already lowered, so a signed write is never paid from float the token still holds.

use cryptoki::object::ObjectClass;
use rand_core::OsRng;
use valuecard_core::crypto::{random_array, AesKey};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::memcard::{
    writer_value_key_input, CardContent, FloatGrant, PlainValue, ValueArea, WriteRecord,
};
use valuecard_core::money::Amount;
use valuecard_sam::memcard::{self, MachineState, MemcardCheckError, ValueFormat};
use valuecard_sam::{MemcardWriteOrder, Sam, SamError};

use crate::token::Part;
use crate::Pkcs11Sam;

impl Pkcs11Sam {
    /// `writer`'s value key (claim 4), derived from KO inside the token. The key is in host
    /// memory from here until the caller drops it (zeroized) after one seal or open.
    fn writer_value_key(&self, writer: &DeviceId) -> Result<AesKey, SamError> {
        self.installed()?;
        let common_key = self
            .token
            .require(ObjectClass::SECRET_KEY, Part::CommonKey)?;
        Ok(self
            .token
            .cmac_derived_key(common_key, &writer_value_key_input(writer))?)
    }

    pub(crate) fn open_sealed_value(
        &self,
        content: &CardContent,
        writer: DeviceId,
    ) -> Result<PlainValue, SamError> {
        let broken = || SamError::MemcardState(MemcardCheckError::SealBroken);
        let value_key = self.writer_value_key(&writer)?;
        let opened =
            content
                .value_area
                .open(Some(&value_key), &content.card_id, content.counter, &writer);
        drop(value_key);
        opened.map_err(|_| broken())?.ok_or_else(broken)
    }

    pub(crate) fn sign_write(
        &mut self,
        order: &MemcardWriteOrder,
    ) -> Result<WriteRecord, SamError> {
        let role = self.certificate()?.body.role;
        // Another SAM object of this device (its link to the center opens one) may have
        // taken a grant or signed a write since this one last read the token.
        self.refresh()?;
        let prepared = memcard::prepare_write(
            order,
            MachineState {
                role,
                float: self.state.memcard.float,
                last_sequence: self.state.memcard.last_sequence,
            },
        )?;
        let device_id = self.state.device_id;
        let area = match prepared.format {
            ValueFormat::Plain => prepared.plain_area(),
            ValueFormat::Sealed => {
                let value_key = self.writer_value_key(&device_id)?;
                // A fresh random nonce for every seal: a write retried at the same counter
                // never reuses one under the same key.
                let sealed = ValueArea::seal(
                    &value_key,
                    random_array(&mut OsRng),
                    &prepared.card_id,
                    prepared.counter_after,
                    &device_id,
                    &prepared.new_value,
                );
                drop(value_key);
                sealed
            }
        };
        let signature = self.sign(&prepared.signing_input(&area))?;
        let before = self.state.memcard;
        self.state.memcard.float = prepared.state_after.float;
        self.state.memcard.last_sequence = prepared.state_after.last_sequence;
        // Stored before the record leaves the SAM (see the module's invariant).
        if let Err(error) = self.store_state() {
            self.state.memcard = before;
            return Err(error);
        }
        Ok(prepared.finish(device_id, area, signature))
    }

    pub(crate) fn take_grant(&mut self, grant: &FloatGrant) -> Result<Amount, SamError> {
        let role = self.certificate()?.body.role;
        self.refresh()?;
        let float = memcard::check_float_grant(
            self.anchor()?,
            self.state.device_id,
            role,
            self.state.memcard.float,
            self.state.memcard.last_grant,
            grant,
        )?;
        let before = self.state.memcard;
        self.state.memcard.float = float;
        self.state.memcard.last_grant = grant.grant_number;
        if let Err(error) = self.store_state() {
            self.state.memcard = before;
            return Err(error);
        }
        Ok(float)
    }
}
