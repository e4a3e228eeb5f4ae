//! Manufacture and installation (seed 003, Figs. 4A and 8): each SAM's and each card chip's
//! own transport key Ktemp, diversified from its device ID or chip serial under the manufacture
//! key, and the installation of a terminal or dispenser: its certificate, and KT, KO and the
//! first time stamp TS0 sealed to the SAM's own X25519 key and MACed under its Ktemp. Also
//! the certification of a device known by its keys only (`certify_keyed_device`).

use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::{aes_cmac, derivation, diversify_key, seal_to, PublicKey};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::{CenterError, Installation, InstallationRequest};
use valuecard_core::messages::purse::ChipSerial;
use valuecard_sam::{installation_keys_aad, installation_mac_input};

use crate::keys;
use crate::sql::Executor;
use crate::Center;

impl Center {
    /// Certifies a device known by its keys only and handed no scheme key (no KO, no KT,
    /// no first stamp): the online settlement system's security server (seed 004) and the
    /// move's SAMs (seed 002). An operator's act, as a terminal's installation is.
    pub(crate) fn certify_keyed_device(
        &mut self,
        role: Role,
        signing_key: PublicKey,
        sealing_key: [u8; 32],
    ) -> Result<(DeviceId, Certificate), CenterError> {
        let device_id = self.allocate_device_id()?;
        let certificate = self.certificate(device_id, role, signing_key, sealing_key)?;
        self.db.execute(
            "INSERT INTO devices (device_id, role, signing_key, sealing_key, certificate, status, installed_on)
             VALUES ($1, $2, $3, $4, $5, 'installed', $6)",
            &[
                device_id.0[..].into(),
                (role as u8).into(),
                signing_key.to_bytes()[..].into(),
                sealing_key[..].into(),
                certificate.encode().into(),
                self.today().0.into(),
            ],
        )?;
        Ok((device_id, certificate))
    }

    /// The transport key Ktemp of one device, for the factory that manufactures it (Fig. 8):
    /// diversified from the device's manufacture identifier (a SAM's device ID) under the
    /// center's manufacture key, so each device holds its own. The factory is part of the
    /// issuer's trusted set-up; nothing else receives one.
    pub fn transport_key_for_device(&self, device_id: &DeviceId) -> valuecard_core::crypto::AesKey {
        self.keys.transport_key(&device_id.0)
    }

    /// A new chip for the card factory (Fig. 8): a fresh manufacture serial and the chip's own
    /// transport key Ktemp, diversified from that serial under the manufacture key. Ktemp
    /// authenticates the center's GENERATE KEY PAIR and PERSONALIZE to this chip only; the
    /// keys KU and KO are sealed to the card's own X25519 key and cannot be opened with it.
    pub fn manufacture_chip(&mut self) -> (ChipSerial, valuecard_core::crypto::AesKey) {
        let serial = keys::chip_serial(&mut self.rng);
        (serial, self.keys.transport_key(&serial))
    }

    /// The transport key Ktemp of the chip with this serial, for the card factory.
    pub fn transport_key_for_chip(
        &self,
        serial: &ChipSerial,
    ) -> Result<valuecard_core::crypto::AesKey, CenterError> {
        self.chip_transport_key(serial)
    }

    /// The transport key of the chip a dispenser names. A serial without the chip prefix is
    /// refused, so that no request makes the center MAC under a SAM's transport key.
    pub(crate) fn chip_transport_key(
        &self,
        serial: &ChipSerial,
    ) -> Result<valuecard_core::crypto::AesKey, CenterError> {
        if serial[0] != keys::CHIP_SERIAL_PREFIX {
            return Err(CenterError::Mismatch(format!(
                "{} is not a chip serial",
                hex_serial(serial)
            )));
        }
        Ok(self.keys.transport_key(serial))
    }

    /// Fig. 4A with Fig. 8: certify a device's public key for `role`, and deliver KT
    /// (diversified from its ID under KA), KO and the first time stamp TS0 sealed to the
    /// SAM's own X25519 key with an ephemeral key of the center, the whole MACed under the
    /// device's own transport key. A sniffer of the installation who holds any transport key,
    /// even this device's, cannot open the keys (that needs the SAM's X25519 secret), and
    /// one device's transport key says nothing about another's.
    ///
    /// Charge and payment machines for memory cards (seed 001) install the same way: KO
    /// lets their SAMs open what another machine sealed (claim 4), and their first stamp
    /// and listing work as a terminal's do.
    pub fn install_device(
        &mut self,
        request: &InstallationRequest,
        role: Role,
    ) -> Result<Installation, CenterError> {
        if !matches!(
            role,
            Role::PaymentTerminal
                | Role::Dispenser
                | Role::SettlementTerminal
                | Role::ChargeMachine
                | Role::PaymentMachine
        ) {
            return Err(CenterError::NotAuthorized(request.device_id));
        }
        let certificate = self.certificate(
            request.device_id,
            role,
            request.signing_key,
            request.sealing_key,
        )?;
        let terminal_key = diversify_key(
            &self.keys.master_key,
            derivation::TERMINAL_KEY,
            request.device_id.as_bytes(),
        );
        // KT || KO || TS0: the first time stamp of Fig. 10 travels with the keys.
        let first_stamp: [u8; 32] = valuecard_core::crypto::random_array(&mut self.rng);
        let mut plain = [0u8; 64];
        plain[..16].copy_from_slice(terminal_key.expose());
        plain[16..32].copy_from_slice(self.keys.common_key.expose());
        plain[32..].copy_from_slice(&first_stamp);
        let anchor = self.anchor();
        let sealed = seal_to(
            &mut self.rng,
            &request.sealing_key,
            &installation_keys_aad(&request.device_id, &anchor, &request.challenge),
            &plain,
        );
        zeroize::Zeroize::zeroize(&mut plain);
        let sealed_keys = sealed.map_err(|_| {
            CenterError::Mismatch("the device's sealing key is not a usable X25519 key".into())
        })?;
        let mac = aes_cmac(
            &self.keys.transport_key(&request.device_id.0),
            &installation_mac_input(
                &request.device_id,
                &request.challenge,
                &certificate,
                &anchor,
                &sealed_keys,
            ),
        );
        let changed = self.db.execute(
            "INSERT INTO devices (device_id, role, signing_key, sealing_key, certificate, status, installed_on)
             VALUES ($1, $2, $3, $4, $5, 'installed', $6)
             ON CONFLICT (device_id) DO NOTHING",
            &[
                request.device_id.0[..].into(),
                (role as u8).into(),
                request.signing_key.to_bytes()[..].into(),
                request.sealing_key[..].into(),
                certificate.encode().into(),
                self.today().0.into(),
            ],
        )?;
        if changed == 0 {
            return Err(CenterError::Mismatch(format!(
                "device {} is already installed",
                request.device_id
            )));
        }
        self.register_first_stamp(request.device_id, &first_stamp)?;
        Ok(Installation {
            certificate,
            anchor,
            sealed_keys,
            mac,
        })
    }
}

fn hex_serial(serial: &ChipSerial) -> String {
    serial.iter().map(|byte| format!("{byte:02x}")).collect()
}
