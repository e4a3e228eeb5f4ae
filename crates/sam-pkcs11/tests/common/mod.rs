//! A throw-away SoftHSM2 token per test, and SAMs of either kind installed at a world's
//! center.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};

use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::messages::center::InstallationRequest;
use valuecard_sam::{Sam, SoftwareSam};
use valuecard_sam_pkcs11::softhsm::{self, THROWAWAY_USER_PIN};
use valuecard_sam_pkcs11::{Pkcs11Sam, TokenAddress};
use valuecard_sim::World;

/// SoftHSM2's module with this process's token directory set, or `None` (skipped) when
/// SoftHSM2 is not installed and CI does not require it.
pub fn softhsm(test: &str) -> Option<PathBuf> {
    let module = softhsm::module_or_skip(test)?;
    let root =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("softhsm-{}", std::process::id()));
    softhsm::use_directory_for_process(&root).unwrap();
    Some(module)
}

/// A fresh token; the address of the SAM `object` in it (PIN in the URI).
pub fn fresh_address(module: &Path, object: &str) -> TokenAddress {
    let label = softhsm::fresh_token(module, "t").unwrap();
    address_in(module, &label, object, THROWAWAY_USER_PIN)
}

pub fn address_in(module: &Path, label: &str, object: &str, pin: &str) -> TokenAddress {
    TokenAddress::parse(
        &format!("pkcs11:token={label};object={object}?pin-value={pin}"),
        Some(module),
    )
    .unwrap()
}

/// Which SAM a device gets.
#[derive(Debug, Clone)]
pub enum Kind {
    Software,
    Pkcs11(Box<TokenAddress>),
}

/// Manufactures a SAM of `kind` and installs it at the world's center as `role` (in a
/// token: under the label `object`).
pub fn installed_sam(world: &mut World, kind: &Kind, role: Role, object: &str) -> Box<dyn Sam> {
    let device_id = world.center.allocate_device_id().unwrap();
    let transport_key = world.center.transport_key_for_device(&device_id);
    let mut sam: Box<dyn Sam> = match kind {
        Kind::Software => {
            let mut rng = world.fork_rng();
            Box::new(
                SoftwareSam::manufacture(device_id, transport_key, &mut rng)
                    .with_clock(world.clock()),
            )
        }
        Kind::Pkcs11(address) => {
            let mut address = address.clone();
            address.uri.object = object.to_owned();
            Box::new(
                Pkcs11Sam::manufacture(&address, device_id, transport_key)
                    .unwrap()
                    .with_clock(world.clock()),
            )
        }
    };
    let challenge = random_array(&mut world.fork_rng());
    let request = InstallationRequest {
        device_id,
        signing_key: sam.signing_key(),
        sealing_key: sam.sealing_key(),
        challenge,
    };
    let installation = world.center.install_device(&request, role).unwrap();
    sam.install(&installation, &challenge, role, world.center.today())
        .unwrap();
    sam
}

/// Every secret key `session` finds in its token, as its label and the `asked` attributes
/// (the label is asked always), after checking that its value cannot be read: CKA_VALUE is
/// sensitive and never comes back.
pub fn secret_keys(
    session: &cryptoki::session::Session,
    asked: &[cryptoki::object::AttributeType],
) -> Vec<(String, Vec<cryptoki::object::Attribute>)> {
    use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
    let mut asked = asked.to_vec();
    asked.extend([AttributeType::Label, AttributeType::Value]);
    let mut keys = Vec::new();
    for key in session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap()
    {
        let info = session
            .get_attribute_info(key, &[AttributeType::Value])
            .unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "CKA_VALUE must not be readable: {info:?}"
        );
        let attributes = session.get_attributes(key, &asked).unwrap();
        assert!(
            !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
            "no key value may come back"
        );
        let label = attributes
            .iter()
            .find_map(|a| match a {
                Attribute::Label(label) => Some(String::from_utf8(label.clone()).unwrap()),
                _ => None,
            })
            .unwrap();
        keys.push((label, attributes));
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}
