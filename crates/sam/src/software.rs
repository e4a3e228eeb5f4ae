//! The software SAM: keys in process memory and in a protected image file.

use rand_core::{CryptoRngCore, OsRng};
use valuecard_core::cert::{Certificate, Role, TrustAnchor, VerifiedCertificate};
use valuecard_core::crypto::{
    aes_cmac_verify, random_array, AesKey, PublicKey, SealingKeyPair, SecretBytes, Signature,
    SigningKeyPair, PUBLIC_KEY_LEN,
};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::Installation;
use valuecard_core::messages::credit::{Password, SetPassword};
use valuecard_core::messages::memcard::{
    writer_value_key, CardContent, FloatGrant, PlainValue, ValueArea, WriteRecord,
};
use valuecard_core::messages::purse::{Challenge, TerminalStamp, UsageRecord, STAMP_COUNT_MAX};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date, SystemClock};
use valuecard_core::tlv::{be_u32, be_u64, TlvReader, TlvWriter};
use zeroize::Zeroize;

use crate::construction::{
    check_installation_certificate, check_purchase, check_transfer, installation_mac_message,
    next_sequence, purchase_commit, split_installation_keys, transfer_record, StampChain,
};
use crate::memcard::{self, MachineState, MemcardWriteOrder, ValueFormat};
use crate::{
    installation_keys_aad, request_signing_input, PurchaseOrder, Sam, SamError, SignedPurchase,
    TransferRecordOrder,
};

/// The stamp chain with the signature of its current stamp, so that a purchase need not
/// sign the stamp again.
#[derive(Clone, Copy)]
struct SignedChain {
    chain: StampChain,
    signed: TerminalStamp,
}

/// A SAM in software. Its persistent image holds the keys, so the file that stores it must
/// be protected like the keys themselves.
pub struct SoftwareSam {
    device_id: DeviceId,
    signing: SigningKeyPair,
    sealing: SealingKeyPair,
    /// This device's own transport key (diversified from its ID by the center), until
    /// installation.
    transport_key: Option<AesKey>,
    terminal_key: Option<AesKey>,
    common_key: Option<AesKey>,
    certificate: Option<Certificate>,
    anchor: Option<TrustAnchor>,
    chain: Option<SignedChain>,
    /// The highest terminal sequence this SAM signed a purchase under.
    last_sequence: u32,
    /// A charge machine's float (area 23A of seed 001), the last float grant it took, and
    /// the last memory-card write sequence it signed.
    memcard: MemcardState,
    clock: Box<dyn Clock>,
}

impl core::fmt::Debug for SoftwareSam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SoftwareSam")
            .field("device_id", &self.device_id)
            .field("installed", &self.certificate.is_some())
            .finish_non_exhaustive()
    }
}

/// What a SAM keeps for memory cards (seed 001).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MemcardState {
    float: Amount,
    last_grant: u32,
    last_sequence: u32,
}

/// Version 1 had no installation date and no sequence; version 2 no memory-card state. Both
/// still load (see `from_image`).
const IMAGE_MAGIC_V1: &[u8] = b"valuecard-sam-v1";
const IMAGE_MAGIC_V2: &[u8] = b"valuecard-sam-v2";
const IMAGE_MAGIC: &[u8] = b"valuecard-sam-v3";
mod image_tag {
    pub const MAGIC: u32 = 0x8F;
    pub const DEVICE_ID: u32 = 0x80;
    pub const SIGNING_SEED: u32 = 0x81;
    pub const SEALING_SECRET: u32 = 0x82;
    pub const TRANSPORT_KEY: u32 = 0x83;
    pub const TERMINAL_KEY: u32 = 0x84;
    pub const COMMON_KEY: u32 = 0x85;
    pub const ANCHOR_ID: u32 = 0x86;
    pub const ANCHOR_KEY: u32 = 0x87;
    pub const STAMP_COUNT: u32 = 0x88;
    pub const STAMP: u32 = 0x89;
    pub const INSTALLED_ON: u32 = 0x8A;
    pub const LAST_SEQUENCE: u32 = 0x8B;
    pub const MEMCARD_FLOAT: u32 = 0x8C;
    pub const MEMCARD_LAST_GRANT: u32 = 0x8D;
    pub const MEMCARD_LAST_SEQUENCE: u32 = 0x8E;
    pub const CERTIFICATE: u32 = valuecard_core::cert::TAG_CERTIFICATE;
}

impl SoftwareSam {
    /// A SAM as it leaves the factory: its own fresh key pairs and its own transport key
    /// Ktemp (diversified from `device_id` under the center's manufacture key). It reads
    /// the operating system's clock; [`SoftwareSam::set_clock`] gives it another.
    pub fn manufacture(
        device_id: DeviceId,
        transport_key: AesKey,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        SoftwareSam {
            device_id,
            signing: SigningKeyPair::generate(rng),
            sealing: SealingKeyPair::generate(rng),
            transport_key: Some(transport_key),
            terminal_key: None,
            common_key: None,
            certificate: None,
            anchor: None,
            chain: None,
            last_sequence: 0,
            memcard: MemcardState::default(),
            clock: Box::new(SystemClock),
        }
    }

    /// The SAM's own calendar (the simulation gives every device one shared clock).
    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.clock = clock;
    }

    pub fn with_clock(mut self, clock: Box<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The signing key pair, as anyone who copies a software SAM's image file gets it. Only
    /// attack simulations and benchmarks that model a compromised terminal use this; the
    /// [`Sam`] trait has no such method, and a hardware SAM cannot offer one.
    pub fn extract_signing_key(&self) -> SigningKeyPair {
        SigningKeyPair::from_seed(self.signing.seed().expose())
    }

    fn signed_stamp(&self, chain: &StampChain) -> TerminalStamp {
        let signature = self.signing.sign(&chain.signed_message(&self.device_id));
        TerminalStamp {
            count: chain.count,
            signature,
        }
    }

    /// Brings the chain up to the clock: one step per day elapsed since installation. The
    /// count never goes down, whatever the clock says, and each step forgets TS_t.
    fn advance_to_clock(&mut self) -> Result<TerminalStamp, SamError> {
        let mut signed_chain = self.chain.ok_or(SamError::NotInstalled)?;
        if signed_chain.chain.advance_to(self.clock.today())? {
            signed_chain.signed = self.signed_stamp(&signed_chain.chain);
            self.chain = Some(signed_chain);
        }
        Ok(signed_chain.signed)
    }

    fn require_installed(&self) -> Result<(), SamError> {
        if self.certificate.is_none() {
            return Err(SamError::NotInstalled);
        }
        Ok(())
    }

    /// The persistent image (keys included), for the SAM's own protected storage.
    pub fn to_image(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(image_tag::MAGIC, IMAGE_MAGIC)
            .put(image_tag::DEVICE_ID, self.device_id.as_bytes())
            .put(image_tag::SIGNING_SEED, self.signing.seed().expose())
            .put(image_tag::SEALING_SECRET, self.sealing.secret().expose());
        for (tag, key) in [
            (image_tag::TRANSPORT_KEY, &self.transport_key),
            (image_tag::TERMINAL_KEY, &self.terminal_key),
            (image_tag::COMMON_KEY, &self.common_key),
        ] {
            if let Some(key) = key {
                w.put(tag, key.expose());
            }
        }
        if let (Some(anchor), Some(certificate)) = (&self.anchor, &self.certificate) {
            w.put(image_tag::ANCHOR_ID, anchor.center.as_bytes())
                .put(image_tag::ANCHOR_KEY, &anchor.public_key.to_bytes())
                .put_raw(&certificate.encode());
        }
        if let Some(SignedChain { chain, .. }) = &self.chain {
            w.put_u32(image_tag::STAMP_COUNT, chain.count)
                .put(image_tag::STAMP, &chain.current)
                .put_u32(image_tag::INSTALLED_ON, chain.installed_on.0);
        }
        w.put_u32(image_tag::LAST_SEQUENCE, self.last_sequence)
            .put_u64(image_tag::MEMCARD_FLOAT, self.memcard.float.minor())
            .put_u32(image_tag::MEMCARD_LAST_GRANT, self.memcard.last_grant)
            .put_u32(image_tag::MEMCARD_LAST_SEQUENCE, self.memcard.last_sequence);
        w.into_bytes()
    }

    /// Loads an image of version 3, 2 (no memory-card state: no float, no sequence), or 1
    /// (which had no installation date either: the chain then counts from today minus the
    /// stored count, so it neither jumps nor goes back). The SAM reads the operating system's clock; see [`SoftwareSam::set_clock`].
    pub fn from_image(image: &[u8]) -> Result<Self, SamError> {
        let mut r = TlvReader::new(image);
        let bad = |_| SamError::Image("malformed");
        let magic = r.expect(image_tag::MAGIC).map_err(bad)?;
        let version_1 = magic == IMAGE_MAGIC_V1;
        let version_2 = magic == IMAGE_MAGIC_V2;
        if magic != IMAGE_MAGIC && !version_1 && !version_2 {
            return Err(SamError::Image("unknown version"));
        }
        let device_id = DeviceId(r.expect_array(image_tag::DEVICE_ID).map_err(bad)?);
        let mut seed: [u8; 32] = r.expect_array(image_tag::SIGNING_SEED).map_err(bad)?;
        let signing = SigningKeyPair::from_seed(&seed);
        seed.zeroize();
        let mut secret: [u8; 32] = r.expect_array(image_tag::SEALING_SECRET).map_err(bad)?;
        let sealing = SealingKeyPair::from_secret(secret);
        secret.zeroize();
        let mut key = |tag| -> Result<Option<AesKey>, SamError> {
            r.optional(tag)
                .map_err(bad)?
                .map(AesKey::from_slice)
                .transpose()
                .map_err(|_| SamError::Image("key length"))
        };
        let transport_key = key(image_tag::TRANSPORT_KEY)?;
        let terminal_key = key(image_tag::TERMINAL_KEY)?;
        let common_key = key(image_tag::COMMON_KEY)?;
        let (anchor, certificate) = match r.optional(image_tag::ANCHOR_ID).map_err(bad)? {
            Some(center) => {
                let center =
                    DeviceId::from_slice(center).map_err(|_| SamError::Image("anchor id"))?;
                let public_key =
                    PublicKey::from_bytes(r.expect(image_tag::ANCHOR_KEY).map_err(bad)?)
                        .map_err(|_| SamError::Image("anchor key"))?;
                let certificate =
                    Certificate::decode_value(r.expect(image_tag::CERTIFICATE).map_err(bad)?)
                        .map_err(|_| SamError::Image("certificate"))?;
                (Some(TrustAnchor { center, public_key }), Some(certificate))
            }
            None => (None, None),
        };
        let clock: Box<dyn Clock> = Box::new(SystemClock);
        let stamp = match r.optional(image_tag::STAMP_COUNT).map_err(bad)? {
            Some(count) => {
                let count = be_u32(image_tag::STAMP_COUNT, count).map_err(bad)?;
                if count > STAMP_COUNT_MAX {
                    return Err(SamError::Image("stamp count"));
                }
                let current: [u8; 32] = r.expect_array(image_tag::STAMP).map_err(bad)?;
                let installed_on = if version_1 {
                    Date(clock.today().0.saturating_sub(count))
                } else {
                    let value = r.expect(image_tag::INSTALLED_ON).map_err(bad)?;
                    Date(be_u32(image_tag::INSTALLED_ON, value).map_err(bad)?)
                };
                Some((installed_on, count, current))
            }
            None => None,
        };
        let last_sequence = if version_1 {
            0
        } else {
            let value = r.expect(image_tag::LAST_SEQUENCE).map_err(bad)?;
            be_u32(image_tag::LAST_SEQUENCE, value).map_err(bad)?
        };
        let memcard = if version_1 || version_2 {
            MemcardState::default()
        } else {
            let float = r.expect(image_tag::MEMCARD_FLOAT).map_err(bad)?;
            let float = be_u64(image_tag::MEMCARD_FLOAT, float).map_err(bad)?;
            let last_grant = r.expect(image_tag::MEMCARD_LAST_GRANT).map_err(bad)?;
            let last_sequence = r.expect(image_tag::MEMCARD_LAST_SEQUENCE).map_err(bad)?;
            MemcardState {
                float: Amount::new(float)
                    .ok()
                    .filter(|float| *float <= memcard::FLOAT_MAX)
                    .ok_or(SamError::Image("float"))?,
                last_grant: be_u32(image_tag::MEMCARD_LAST_GRANT, last_grant).map_err(bad)?,
                last_sequence: be_u32(image_tag::MEMCARD_LAST_SEQUENCE, last_sequence)
                    .map_err(bad)?,
            }
        };
        r.finish().map_err(bad)?;
        let mut sam = SoftwareSam {
            device_id,
            signing,
            sealing,
            transport_key,
            terminal_key,
            common_key,
            certificate,
            anchor,
            chain: None,
            last_sequence,
            memcard,
            clock,
        };
        sam.chain = stamp.map(|(installed_on, count, current)| {
            let chain = StampChain {
                installed_on,
                count,
                current,
            };
            SignedChain {
                chain,
                signed: sam.signed_stamp(&chain),
            }
        });
        Ok(sam)
    }

    /// Whether the key KT and the common key KO were delivered (Fig. 8).
    pub fn has_link_keys(&self) -> bool {
        self.terminal_key.is_some() && self.common_key.is_some()
    }
}

impl Sam for SoftwareSam {
    fn device_id(&self) -> DeviceId {
        self.device_id
    }

    fn signing_key(&self) -> PublicKey {
        self.signing.public_key()
    }

    fn sealing_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.sealing.public_key()
    }

    fn certificate(&self) -> Result<&Certificate, SamError> {
        self.certificate.as_ref().ok_or(SamError::NotInstalled)
    }

    fn anchor(&self) -> Result<&TrustAnchor, SamError> {
        self.anchor.as_ref().ok_or(SamError::NotInstalled)
    }

    fn stamp(&mut self) -> Result<TerminalStamp, SamError> {
        self.advance_to_clock()
    }

    fn sign_purchase(&mut self, order: &PurchaseOrder) -> Result<SignedPurchase, SamError> {
        self.require_installed()?;
        let balance_after = check_purchase(order)?;
        let stamp = self.advance_to_clock()?;
        let sequence = next_sequence(self.last_sequence, order.sequence_floor)?;
        let commit = purchase_commit(order, self.device_id, balance_after, sequence, stamp);
        let signature = self.signing.sign(&commit.signed_message());
        self.last_sequence = sequence;
        Ok(SignedPurchase { commit, signature })
    }

    fn sign_transfer_record(
        &mut self,
        order: &TransferRecordOrder,
    ) -> Result<UsageRecord, SamError> {
        self.require_installed()?;
        let (balance_after, counter) = check_transfer(order, self.certificate()?.body.role)?;
        let stamp = self.advance_to_clock()?;
        let sequence = next_sequence(self.last_sequence, order.sequence_floor)?;
        let mut record = transfer_record(
            order,
            self.device_id,
            balance_after,
            counter,
            sequence,
            stamp,
        );
        record.signature = self.signing.sign(&record.signed_message(&order.card_id));
        self.last_sequence = sequence;
        Ok(record)
    }

    fn sign_set_password(
        &mut self,
        card_id: &CardId,
        challenge_terminal: &Challenge,
        challenge_card: &Challenge,
        password: &Password,
    ) -> Result<Signature, SamError> {
        self.require_installed()?;
        Ok(self.signing.sign(&SetPassword::signed_message(
            card_id,
            &self.device_id,
            challenge_terminal,
            challenge_card,
            password,
        )))
    }

    fn sign_device_request(
        &mut self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, SamError> {
        self.require_installed()?;
        Ok(self
            .signing
            .sign(&request_signing_input(method, path, sequence, body)))
    }

    fn install(
        &mut self,
        installation: &Installation,
        challenge: &Challenge,
        role: Role,
        today: Date,
    ) -> Result<VerifiedCertificate, SamError> {
        let verified = check_installation_certificate(
            installation,
            role,
            today,
            self.device_id,
            &self.signing.public_key(),
            &self.sealing.public_key(),
        )?;
        let transport_key = self
            .transport_key
            .as_ref()
            .ok_or(SamError::BadInstallationMac)?;
        // The MAC under this device's own Ktemp says the delivery comes from the center; the
        // keys themselves are sealed to this SAM's X25519 key, so neither Ktemp nor a
        // recorded installation opens them.
        aes_cmac_verify(
            transport_key,
            &installation_mac_message(installation, &self.device_id, challenge),
            &installation.mac,
        )
        .map_err(|_| SamError::BadInstallationMac)?;
        let mut keys = self
            .sealing
            .open(
                &installation_keys_aad(&self.device_id, &installation.anchor, challenge),
                &installation.sealed_keys,
            )
            .map_err(|_| SamError::BadSealedKeys)?;
        // KT || KO, then the first time stamp TS0 (Fig. 10).
        let parts = split_installation_keys(&keys).map(|parts| {
            let mut first_stamp = [0u8; 32];
            first_stamp.copy_from_slice(parts.first_stamp);
            (
                SecretBytes::from_slice(parts.terminal_key),
                SecretBytes::from_slice(parts.common_key),
                first_stamp,
            )
        });
        keys.zeroize();
        let (Ok(terminal_key), Ok(common_key), mut first_stamp) = parts? else {
            return Err(SamError::BadSealedKeys);
        };
        let chain = StampChain {
            installed_on: self.clock.today(),
            count: 0,
            current: first_stamp,
        };
        first_stamp.zeroize();
        self.chain = Some(SignedChain {
            chain,
            signed: self.signed_stamp(&chain),
        });
        self.terminal_key = Some(terminal_key);
        self.common_key = Some(common_key);
        self.transport_key = None;
        self.certificate = Some(installation.certificate.clone());
        self.anchor = Some(installation.anchor);
        Ok(verified)
    }

    fn open_memcard_value(
        &self,
        content: &CardContent,
        writer: DeviceId,
    ) -> Result<PlainValue, SamError> {
        let common_key = self.common_key.as_ref().ok_or(SamError::NotInstalled)?;
        let value_key = writer_value_key(common_key, &writer);
        content
            .value_area
            .open(Some(&value_key), &content.card_id, content.counter, &writer)
            .map_err(|_| SamError::MemcardState(memcard::MemcardCheckError::SealBroken))?
            .ok_or(SamError::MemcardState(
                memcard::MemcardCheckError::SealBroken,
            ))
    }

    fn sign_memcard_write(&mut self, order: &MemcardWriteOrder) -> Result<WriteRecord, SamError> {
        let role = self.certificate()?.body.role;
        let prepared = memcard::prepare_write(
            order,
            MachineState {
                role,
                float: self.memcard.float,
                last_sequence: self.memcard.last_sequence,
            },
        )?;
        let area = match prepared.format {
            ValueFormat::Plain => prepared.plain_area(),
            ValueFormat::Sealed => {
                let common_key = self.common_key.as_ref().ok_or(SamError::NotInstalled)?;
                // A fresh random nonce for every seal: a write retried at the same counter
                // never reuses one under the same key.
                ValueArea::seal(
                    &writer_value_key(common_key, &self.device_id),
                    random_array(&mut OsRng),
                    &prepared.card_id,
                    prepared.counter_after,
                    &self.device_id,
                    &prepared.new_value,
                )
            }
        };
        let signature = self.signing.sign(&prepared.signing_input(&area));
        let after = prepared.state_after;
        let record = prepared.finish(self.device_id, area, signature);
        self.memcard.float = after.float;
        self.memcard.last_sequence = after.last_sequence;
        Ok(record)
    }

    fn take_float_grant(&mut self, grant: &FloatGrant) -> Result<Amount, SamError> {
        let role = self.certificate()?.body.role;
        let float = memcard::check_float_grant(
            self.anchor()?,
            self.device_id,
            role,
            self.memcard.float,
            self.memcard.last_grant,
            grant,
        )?;
        self.memcard.float = float;
        self.memcard.last_grant = grant.grant_number;
        Ok(float)
    }

    fn float(&self) -> Amount {
        self.memcard.float
    }

    fn memcard_sequence(&self) -> u32 {
        self.memcard.last_sequence
    }
}
