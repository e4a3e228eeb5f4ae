//! A stand-in center for tests of memory-card machines (feature `testing`): a root key and
//! a common key KO, installing software SAMs with any role through the real installation
//! path (certificate, sealed keys, MAC under the SAM's transport key), and signing float
//! grants. It exists so that the SAM and the machines are tested without the center crate;
//! production installs through the center.

use rand_core::CryptoRngCore;
use valuecard_core::cert::{Certificate, CertificateBody, Role, TrustAnchor};
use valuecard_core::crypto::{aes_cmac, random_array, seal_to, AesKey, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::Installation;
use valuecard_core::messages::memcard::FloatGrant;
use valuecard_core::money::Amount;
use valuecard_core::time::{Date, FixedClock};

use crate::{installation_keys_aad, installation_mac_input, Sam, SoftwareSam};

/// The certificates it issues are valid from this many days before `today` to this many
/// after.
const VALIDITY_DAYS: u32 = 365;

/// A minimal center: root key, anchor, common key.
#[derive(Debug)]
pub struct TestCenter {
    pub root: SigningKeyPair,
    pub anchor: TrustAnchor,
    pub common_key: AesKey,
    pub today: Date,
    next_device: u8,
}

impl TestCenter {
    pub fn new(rng: &mut impl CryptoRngCore, center: DeviceId, today: Date) -> Self {
        let root = SigningKeyPair::generate(rng);
        let anchor = TrustAnchor {
            center,
            public_key: root.public_key(),
        };
        TestCenter {
            root,
            anchor,
            common_key: AesKey::random(rng),
            today,
            next_device: 1,
        }
    }

    /// A certificate of this center for any key and role.
    pub fn certify(
        &self,
        subject: DeviceId,
        role: Role,
        signing_key: &SigningKeyPair,
        sealing_key: Option<[u8; 32]>,
    ) -> Certificate {
        CertificateBody {
            issuer: self.anchor.center,
            subject,
            role,
            effective: Date(self.today.0.saturating_sub(VALIDITY_DAYS)),
            expiry: self.today.add_days(VALIDITY_DAYS),
            signing_key: signing_key.public_key(),
            sealing_key,
        }
        .sign(&self.root)
    }

    /// Manufactures and installs a software SAM with `role`, on a clock fixed at `today`.
    pub fn install(&mut self, role: Role, rng: &mut impl CryptoRngCore) -> SoftwareSam {
        let device_id = DeviceId([0xD0, 0, 0, 0, 0, 0, 0, self.next_device]);
        self.next_device = self.next_device.wrapping_add(1);
        let transport_key = AesKey::random(rng);
        let mut sam = SoftwareSam::manufacture(device_id, transport_key.clone(), rng)
            .with_clock(Box::new(FixedClock(self.today)));
        let challenge = random_array(rng);
        let certificate = CertificateBody {
            issuer: self.anchor.center,
            subject: device_id,
            role,
            effective: Date(self.today.0.saturating_sub(VALIDITY_DAYS)),
            expiry: self.today.add_days(VALIDITY_DAYS),
            signing_key: sam.signing_key(),
            sealing_key: Some(sam.sealing_key()),
        }
        .sign(&self.root);
        let mut plain = [0u8; 64];
        plain[16..32].copy_from_slice(self.common_key.expose());
        plain[32..].copy_from_slice(&random_array::<32>(rng));
        let sealed_keys = seal_to(
            rng,
            &sam.sealing_key(),
            &installation_keys_aad(&device_id, &self.anchor, &challenge),
            &plain,
        )
        .unwrap_or_default();
        let mac = aes_cmac(
            &transport_key,
            &installation_mac_input(
                &device_id,
                &challenge,
                &certificate,
                &self.anchor,
                &sealed_keys,
            ),
        );
        let installation = Installation {
            certificate,
            anchor: self.anchor,
            sealed_keys,
            mac,
        };
        // A test helper: an installation this center just built for this SAM installs.
        #[allow(clippy::expect_used)]
        sam.install(&installation, &challenge, role, self.today)
            .expect("the test center's installation installs");
        sam
    }

    /// A float grant signed with the root key.
    pub fn grant(&self, machine: DeviceId, grant_number: u32, amount: Amount) -> FloatGrant {
        let mut grant = FloatGrant {
            machine,
            grant_number,
            amount,
            date: self.today,
            signature: valuecard_core::crypto::Signature([0; 64]),
        };
        grant.signature = self.root.sign(&grant.signed_message());
        grant
    }
}
