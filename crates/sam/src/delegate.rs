//! One list of the [`Sam`](crate::Sam) methods for the types that hand every call to
//! another SAM: a box, or the command line's choice of a software or a PKCS#11 SAM. A method
//! added to the trait is added here once, and every such type forwards it.

/// The types the forwarded methods name, for the macro's expansion in other crates.
#[doc(hidden)]
pub mod types {
    pub use valuecard_core::cert::{Certificate, Role, TrustAnchor, VerifiedCertificate};
    pub use valuecard_core::crypto::{PublicKey, Signature, PUBLIC_KEY_LEN};
    pub use valuecard_core::ids::{CardId, DeviceId};
    pub use valuecard_core::messages::center::Installation;
    pub use valuecard_core::messages::credit::Password;
    pub use valuecard_core::messages::memcard::{CardContent, FloatGrant, PlainValue, WriteRecord};
    pub use valuecard_core::messages::purse::{Challenge, TerminalStamp, UsageRecord};
    pub use valuecard_core::money::Amount;
    pub use valuecard_core::time::Date;

    pub use crate::{
        MemcardWriteOrder, PurchaseOrder, SamError, SignedPurchase, TransferRecordOrder,
        VerifiedMemcardState,
    };
}

/// Implements [`Sam`](crate::Sam) for `$type` by calling the same method on the SAM that
/// `$shared(&self)` and `$exclusive(&mut self)` return:
///
/// ```ignore
/// delegate_sam!(impl[] for DeviceSam, DeviceSam::inner, DeviceSam::inner_mut);
/// ```
#[macro_export]
macro_rules! delegate_sam {
    (impl [$($generics:tt)*] for $type:ty, $shared:path, $exclusive:path) => {
        impl<$($generics)*> $crate::Sam for $type {
            fn device_id(&self) -> $crate::delegate::types::DeviceId {
                $shared(self).device_id()
            }
            fn signing_key(&self) -> $crate::delegate::types::PublicKey {
                $shared(self).signing_key()
            }
            fn sealing_key(&self) -> [u8; $crate::delegate::types::PUBLIC_KEY_LEN] {
                $shared(self).sealing_key()
            }
            fn certificate(
                &self,
            ) -> Result<&$crate::delegate::types::Certificate, $crate::delegate::types::SamError>
            {
                $shared(self).certificate()
            }
            fn anchor(
                &self,
            ) -> Result<&$crate::delegate::types::TrustAnchor, $crate::delegate::types::SamError>
            {
                $shared(self).anchor()
            }
            fn stamp(
                &mut self,
            ) -> Result<$crate::delegate::types::TerminalStamp, $crate::delegate::types::SamError>
            {
                $exclusive(self).stamp()
            }
            fn sign_purchase(
                &mut self,
                order: &$crate::delegate::types::PurchaseOrder,
            ) -> Result<$crate::delegate::types::SignedPurchase, $crate::delegate::types::SamError>
            {
                $exclusive(self).sign_purchase(order)
            }
            fn sign_transfer_record(
                &mut self,
                order: &$crate::delegate::types::TransferRecordOrder,
            ) -> Result<$crate::delegate::types::UsageRecord, $crate::delegate::types::SamError>
            {
                $exclusive(self).sign_transfer_record(order)
            }
            fn sign_set_password(
                &mut self,
                card_id: &$crate::delegate::types::CardId,
                challenge_terminal: &$crate::delegate::types::Challenge,
                challenge_card: &$crate::delegate::types::Challenge,
                password: &$crate::delegate::types::Password,
            ) -> Result<$crate::delegate::types::Signature, $crate::delegate::types::SamError> {
                $exclusive(self).sign_set_password(
                    card_id,
                    challenge_terminal,
                    challenge_card,
                    password,
                )
            }
            fn sign_device_request(
                &mut self,
                method: &str,
                path: &str,
                sequence: u64,
                body: &[u8],
            ) -> Result<$crate::delegate::types::Signature, $crate::delegate::types::SamError> {
                $exclusive(self).sign_device_request(method, path, sequence, body)
            }
            fn install(
                &mut self,
                installation: &$crate::delegate::types::Installation,
                challenge: &$crate::delegate::types::Challenge,
                role: $crate::delegate::types::Role,
                today: $crate::delegate::types::Date,
            ) -> Result<
                $crate::delegate::types::VerifiedCertificate,
                $crate::delegate::types::SamError,
            > {
                $exclusive(self).install(installation, challenge, role, today)
            }
            fn check_memcard_content(
                &self,
                content: &$crate::delegate::types::CardContent,
                today: $crate::delegate::types::Date,
            ) -> Result<
                $crate::delegate::types::VerifiedMemcardState,
                $crate::delegate::types::SamError,
            > {
                $shared(self).check_memcard_content(content, today)
            }
            fn open_memcard_value(
                &self,
                content: &$crate::delegate::types::CardContent,
                writer: $crate::delegate::types::DeviceId,
            ) -> Result<$crate::delegate::types::PlainValue, $crate::delegate::types::SamError>
            {
                $shared(self).open_memcard_value(content, writer)
            }
            fn sign_memcard_write(
                &mut self,
                order: &$crate::delegate::types::MemcardWriteOrder,
            ) -> Result<$crate::delegate::types::WriteRecord, $crate::delegate::types::SamError>
            {
                $exclusive(self).sign_memcard_write(order)
            }
            fn take_float_grant(
                &mut self,
                grant: &$crate::delegate::types::FloatGrant,
            ) -> Result<$crate::delegate::types::Amount, $crate::delegate::types::SamError> {
                $exclusive(self).take_float_grant(grant)
            }
            fn float(&self) -> $crate::delegate::types::Amount {
                $shared(self).float()
            }
            fn memcard_sequence(&self) -> u32 {
                $shared(self).memcard_sequence()
            }
        }
    };
}
