//! Seed 002's SAMs in a throw-away token, certified by the test scheme's root, and the test
//! chips they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::sync::Arc;

use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rand_core::OsRng;
use valuecard_card::state::PersistentState;
use valuecard_card::testing;
use valuecard_core::cert::{Certificate, CertificateBody, Role};
use valuecard_core::crypto::{random_array, PublicKey, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::services::{
    area_key, ChannelBinding, KeyState, MoveId, ServiceChannel, ServiceCode, ServiceKind, Ticket,
};
use valuecard_migrate::provider::Provider;
use valuecard_migrate::sam::{ProviderSam, SoftwareAdminSam, SoftwareProviderSam};
use valuecard_sam_pkcs11::softhsm::{self, THROWAWAY_USER_PIN};
use valuecard_sam_pkcs11::{context, NewMaster, Pkcs11AdminSam, Pkcs11ProviderSam, TokenAddress};

use crate::common::address_in;

use valuecard_migrate::testing::provider_with;
// Each test file uses some of these.
#[allow(unused_imports)]
pub use valuecard_migrate::testing::{card, software_normal, Reader};

/// One fresh token per test, its SAMs under different object names.
pub struct Token {
    pub module: std::path::PathBuf,
    pub label: String,
}

impl Token {
    pub fn fresh(module: &Path) -> Token {
        Token {
            module: module.to_owned(),
            label: softhsm::fresh_token(module, "move").unwrap(),
        }
    }

    pub fn address(&self, object: &str) -> TokenAddress {
        address_in(&self.module, &self.label, object, THROWAWAY_USER_PIN)
    }

    /// The administrative SAM `object`, generated and certified by the test root.
    pub fn admin(&self, object: &str) -> Pkcs11AdminSam {
        let address = self.address(object);
        let public = Pkcs11AdminSam::provision(&address).unwrap();
        Pkcs11AdminSam::open(
            &address,
            certificate(public, admin_subject(), Role::MoveAdministrator),
        )
        .unwrap()
    }

    /// Provider `number`'s normal SAM `object` with `master`.
    pub fn normal(&self, object: &str, number: u8, master: NewMaster) -> Pkcs11ProviderSam {
        let address = self.address(object);
        let public = Pkcs11ProviderSam::provision_normal(&address, master).unwrap();
        Pkcs11ProviderSam::open(
            &address,
            certificate(public, normal_subject(number), Role::ServiceProvider),
            testing::anchor(),
        )
        .unwrap()
    }

    /// Provider `number`'s transfer SAM `object` with `master` and `storage`.
    pub fn transfer(
        &self,
        object: &str,
        number: u8,
        master: NewMaster,
        storage: NewMaster,
    ) -> Pkcs11ProviderSam {
        let address = self.address(object);
        let public = Pkcs11ProviderSam::provision_transfer(&address, master, storage).unwrap();
        Pkcs11ProviderSam::open(
            &address,
            certificate(public, transfer_subject(number), Role::ServiceTransfer),
            testing::anchor(),
        )
        .unwrap()
    }
}

pub fn admin_subject() -> DeviceId {
    testing::move_administrator().1.subject()
}

pub fn normal_subject(number: u8) -> DeviceId {
    testing::service_provider(number).1.subject()
}

pub fn transfer_subject(number: u8) -> DeviceId {
    testing::service_transfer(number).1.subject()
}

/// The test root's one-year certificate for `key`.
pub fn certificate(key: PublicKey, subject: DeviceId, role: Role) -> Certificate {
    certificate_under(&testing::root_key(), key, subject, role)
}

/// The same, issued by `root` (another scheme's root when it is not the test root).
pub fn certificate_under(
    root: &SigningKeyPair,
    key: PublicKey,
    subject: DeviceId,
    role: Role,
) -> Certificate {
    CertificateBody {
        issuer: testing::anchor().center,
        subject,
        role,
        effective: testing::today(),
        expiry: testing::today().add_days(365),
        signing_key: key,
        sealing_key: None,
    }
    .sign(root)
}

/// Provider `number`'s transfer SAM in software with `storage` as its copies' key.
pub fn software_transfer(number: u8, storage: [u8; 16]) -> SoftwareProviderSam {
    valuecard_migrate::testing::software_transfer(
        number,
        valuecard_core::crypto::AesKey::from_slice(&storage).unwrap(),
    )
}

/// A test master key carried into a token.
pub fn imported_master(number: u8, state: KeyState) -> NewMaster {
    NewMaster::Import(testing::area_master(number, state))
}

pub fn imported(bytes: [u8; 16]) -> NewMaster {
    NewMaster::Import(valuecard_core::crypto::AesKey::from_slice(&bytes).unwrap())
}

pub fn reader(number: u8, balance: u64) -> Reader {
    Reader::with_card(format!("card {number}"), card(number, balance))
}

/// The area of `service` on the chip in `reader`, if any.
pub fn area(reader: &Reader, service: ServiceCode) -> Option<valuecard_card::state::ServiceArea> {
    let PersistentState::Personalized(purse) = reader.card().unwrap().state() else {
        return None;
    };
    purse.services.area(service).cloned()
}

pub fn balance(reader: &Reader) -> u64 {
    let PersistentState::Personalized(purse) = reader.card().unwrap().state() else {
        return 0;
    };
    purse.balance.minor()
}

// What the SAM tests share beside the token.

pub const TICKETS: ServiceCode = ServiceCode(0x0102);
pub const MOVE: MoveId = [0x4D; 16];
pub const OTHER_MOVE: MoveId = [0x4E; 16];
pub const STORAGE: [u8; 16] = [0x5C; 16];

pub fn software_admin() -> SoftwareAdminSam {
    let (key, certificate) = testing::move_administrator();
    SoftwareAdminSam::new(key, certificate).unwrap()
}

/// Provider 2's tickets over the given SAMs.
pub fn tickets_provider(normal: Arc<dyn ProviderSam>, transfer: Arc<dyn ProviderSam>) -> Provider {
    provider_with(TICKETS, ServiceKind::Tickets, normal, transfer)
}

pub fn ticket() -> Ticket {
    Ticket {
        ticket_id: 0x7E57_0001,
        product: 0x0A0B,
        valid_from: testing::today(),
        valid_until: testing::today().add_days(30),
        rides_left: Some(4),
    }
}

/// A logged-in session of the test's own on `token` (the SAMs' sessions keep the user
/// logged in for the process already).
pub fn own_session(token: &Token) -> Session {
    let pkcs11 = context::context(&token.module).unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == token.label)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let _ = session.login(
        UserType::User,
        Some(&AuthPin::from(THROWAWAY_USER_PIN.to_owned())),
    );
    session
}

pub fn binding(card: u8, service: ServiceCode, key_state: KeyState) -> ChannelBinding {
    ChannelBinding {
        card_id: testing::card_id(card),
        service,
        key_state,
        host_challenge: random_array(&mut OsRng),
        card_challenge: random_array(&mut OsRng),
    }
}

/// The card's cryptogram for `binding` under the area key the test masters give.
pub fn card_cryptogram(number: u8, binding: ChannelBinding) -> [u8; 8] {
    let key = area_key(
        &testing::area_master(number, binding.key_state),
        binding.key_state,
        &binding.card_id,
        binding.service,
    );
    ServiceChannel::for_card(&key, binding).1
}
