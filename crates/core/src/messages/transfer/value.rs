//! The value transfer messages (claims 1, 3, 5, 8 with the settlement terminal of claims
//! 10-16).

use super::*;

/// What a settlement terminal signs for a card's transfer record, and what the card checks
/// before it commits: the writer's half of a [`UsageRecord`] of kind `TransferOut` or
/// `TransferIn` (the card fills in the rest from its own state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSignature {
    pub writer_sequence: u32,
    pub signature: Signature,
    pub stamp: Option<TerminalStamp>,
}

impl RecordSignature {
    pub(super) fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u32(purse_tag::SEQUENCE, self.writer_sequence)
            .put(purse_tag::SIGNATURE, &self.signature.0);
        if let Some(stamp) = &self.stamp {
            stamp.encode_into(w);
        }
    }

    pub(super) fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        Ok(RecordSignature {
            writer_sequence: u32_field(r, purse_tag::SEQUENCE)?,
            signature: signature_field(r)?,
            stamp: TerminalStamp::decode_optional(r)?,
        })
    }
}

/// INITIALIZE TRANSFER IN command data, to the destination card: the settlement terminal's
/// certificate and challenge, the source card, the amount and the terminal's date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeTransferIn {
    pub terminal_certificate: Certificate,
    pub challenge_terminal: Challenge,
    pub source: CardId,
    pub amount: Amount,
    pub date: Date,
}

impl InitializeTransferIn {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(400);
        put_certificate(&mut w, &self.terminal_certificate);
        w.put(purse_tag::CHALLENGE_TERMINAL, &self.challenge_terminal)
            .put(tag::PEER_CARD_ID, self.source.as_bytes())
            .put_u64(purse_tag::AMOUNT, self.amount.minor())
            .put_u32(purse_tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = InitializeTransferIn {
            terminal_certificate: certificate_field(&mut r)?,
            challenge_terminal: r.expect_array(purse_tag::CHALLENGE_TERMINAL)?,
            source: card_id_field(&mut r, tag::PEER_CARD_ID)?,
            amount: amount_field(&mut r, purse_tag::AMOUNT)?,
            date: Date(u32_field(&mut r, purse_tag::DATE)?),
        };
        r.finish()?;
        Ok(message)
    }
}

/// INITIALIZE TRANSFER IN response: the destination's state and fresh challenge, and its
/// last usage record with the certificate of its writer, as in a purchase offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferInOffer {
    pub counter: u32,
    pub balance: Amount,
    pub challenge_destination: Challenge,
    pub transfer_key_id: u32,
    pub last_usage: Option<UsageRecord>,
    pub last_writer_certificate: Option<Certificate>,
}

impl TransferInOffer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(600);
        w.put_u32(purse_tag::COUNTER, self.counter)
            .put_u64(purse_tag::BALANCE, self.balance.minor())
            .put(purse_tag::CHALLENGE_CARD, &self.challenge_destination)
            .put_u32(tag::TRANSFER_KEY_ID, self.transfer_key_id);
        put_last_writer(&mut w, &self.last_usage, &self.last_writer_certificate);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let counter = u32_field(&mut r, purse_tag::COUNTER)?;
        let balance = amount_field(&mut r, purse_tag::BALANCE)?;
        let challenge_destination = r.expect_array(purse_tag::CHALLENGE_CARD)?;
        let transfer_key_id = u32_field(&mut r, tag::TRANSFER_KEY_ID)?;
        let (last_usage, last_writer_certificate) = last_writer(&mut r)?;
        r.finish()?;
        Ok(TransferInOffer {
            counter,
            balance,
            challenge_destination,
            transfer_key_id,
            last_usage,
            last_writer_certificate,
        })
    }
}

/// TRANSFER OUT command data, to the source card: what the destination said, and the
/// terminal's challenge and date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOut {
    pub challenge_terminal: Challenge,
    pub destination: CardId,
    pub destination_counter: u32,
    pub challenge_destination: Challenge,
    pub amount: Amount,
    pub date: Date,
}

impl TransferOut {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(120);
        w.put(purse_tag::CHALLENGE_TERMINAL, &self.challenge_terminal)
            .put(tag::PEER_CARD_ID, self.destination.as_bytes())
            .put_u32(tag::PEER_COUNTER, self.destination_counter)
            .put(tag::PEER_CHALLENGE, &self.challenge_destination)
            .put_u64(purse_tag::AMOUNT, self.amount.minor())
            .put_u32(purse_tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = TransferOut {
            challenge_terminal: r.expect_array(purse_tag::CHALLENGE_TERMINAL)?,
            destination: card_id_field(&mut r, tag::PEER_CARD_ID)?,
            destination_counter: u32_field(&mut r, tag::PEER_COUNTER)?,
            challenge_destination: r.expect_array(tag::PEER_CHALLENGE)?,
            amount: amount_field(&mut r, purse_tag::AMOUNT)?,
            date: Date(u32_field(&mut r, purse_tag::DATE)?),
        };
        r.finish()?;
        Ok(message)
    }
}

/// Everything a value message is bound to: both cards, both counters, all three challenges,
/// the amount, the date and the key generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferBinding {
    pub key_id: u32,
    pub source: CardId,
    pub source_counter: u32,
    pub challenge_source: Challenge,
    pub destination: CardId,
    pub destination_counter: u32,
    pub challenge_destination: Challenge,
    pub challenge_terminal: Challenge,
    pub date: Date,
}

impl TransferBinding {
    fn bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(140);
        m.extend_from_slice(b"valuecard/transfer/value/v1");
        m.extend_from_slice(&self.key_id.to_be_bytes());
        m.extend_from_slice(self.source.as_bytes());
        m.extend_from_slice(&self.source_counter.to_be_bytes());
        m.extend_from_slice(&self.challenge_source);
        m.extend_from_slice(self.destination.as_bytes());
        m.extend_from_slice(&self.destination_counter.to_be_bytes());
        m.extend_from_slice(&self.challenge_destination);
        m.extend_from_slice(&self.challenge_terminal);
        m.extend_from_slice(&self.date.0.to_be_bytes());
        m
    }

    fn nonce(&self) -> [u8; GCM_NONCE_LEN] {
        // The source's challenge is fresh random per transfer, so the nonce never repeats
        // under one value key.
        let mut nonce = [0u8; GCM_NONCE_LEN];
        nonce.copy_from_slice(&self.challenge_source[..GCM_NONCE_LEN]);
        nonce
    }
}

/// The value message: the amount, AES-128-GCM under the value key of one transfer-key
/// generation, with everything in the [`TransferBinding`] as associated data, so that it is
/// good for one destination, at one counter, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMessage {
    pub key_id: u32,
    pub ciphertext: [u8; 8 + GCM_TAG_LEN],
}

impl ValueMessage {
    pub fn seal(key: &TransferKey, binding: &TransferBinding, amount: Amount) -> Self {
        let sealed = aes_gcm_seal(
            &key.value_key(),
            &binding.nonce(),
            &binding.bytes(),
            &amount.to_be_bytes(),
        );
        let mut ciphertext = [0u8; 8 + GCM_TAG_LEN];
        ciphertext.copy_from_slice(&sealed);
        ValueMessage {
            key_id: key.id,
            ciphertext,
        }
    }

    pub fn open(
        &self,
        key: &TransferKey,
        binding: &TransferBinding,
    ) -> Result<Amount, CryptoError> {
        if self.key_id != key.id || binding.key_id != key.id {
            return Err(CryptoError::DecryptFailed);
        }
        let plain = aes_gcm_open(
            &key.value_key(),
            &binding.nonce(),
            &binding.bytes(),
            &self.ciphertext,
        )?;
        let bytes: [u8; 8] = plain.try_into().map_err(|_| CryptoError::BadLength)?;
        Amount::new(u64::from_be_bytes(bytes)).map_err(|_| CryptoError::BadLength)
    }

    pub(super) fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u32(tag::TRANSFER_KEY_ID, self.key_id)
            .put(tag::CIPHERTEXT, &self.ciphertext);
    }

    pub(super) fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        Ok(ValueMessage {
            key_id: u32_field(r, tag::TRANSFER_KEY_ID)?,
            ciphertext: r.expect_array(tag::CIPHERTEXT)?,
        })
    }
}

/// TRANSFER OUT response: the source's state, its fresh challenge, the value message, and
/// its last usage record with its writer's certificate (the terminal checks the balance
/// was signed before it lets the value reach the destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOutOffer {
    pub counter: u32,
    pub balance: Amount,
    pub challenge_source: Challenge,
    pub value: ValueMessage,
    pub last_usage: Option<UsageRecord>,
    pub last_writer_certificate: Option<Certificate>,
}

impl TransferOutOffer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(600);
        w.put_u32(purse_tag::COUNTER, self.counter)
            .put_u64(purse_tag::BALANCE, self.balance.minor())
            .put(purse_tag::CHALLENGE_CARD, &self.challenge_source);
        self.value.encode_into(&mut w);
        put_last_writer(&mut w, &self.last_usage, &self.last_writer_certificate);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let counter = u32_field(&mut r, purse_tag::COUNTER)?;
        let balance = amount_field(&mut r, purse_tag::BALANCE)?;
        let challenge_source = r.expect_array(purse_tag::CHALLENGE_CARD)?;
        let value = ValueMessage::decode_from(&mut r)?;
        let (last_usage, last_writer_certificate) = last_writer(&mut r)?;
        r.finish()?;
        Ok(TransferOutOffer {
            counter,
            balance,
            challenge_source,
            value,
            last_usage,
            last_writer_certificate,
        })
    }
}

/// TRANSFER IN command data, to the destination: the source's counter and challenge, the
/// value message, and the terminal's signature over the destination's transfer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferIn {
    pub source_counter: u32,
    pub challenge_source: Challenge,
    pub value: ValueMessage,
    pub record: RecordSignature,
}

impl TransferIn {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(220);
        w.put_u32(tag::PEER_COUNTER, self.source_counter)
            .put(tag::PEER_CHALLENGE, &self.challenge_source);
        self.value.encode_into(&mut w);
        self.record.encode_into(&mut w);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = TransferIn {
            source_counter: u32_field(&mut r, tag::PEER_COUNTER)?,
            challenge_source: r.expect_array(tag::PEER_CHALLENGE)?,
            value: ValueMessage::decode_from(&mut r)?,
            record: RecordSignature::decode_from(&mut r)?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// What the destination says about one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProofStatus {
    /// The destination applied the value (at the counter in the proof).
    Received = 0x01,
    /// The destination did not apply it and never will: it dropped any session in which
    /// it could have, and its log covers every transfer it could have applied it in.
    NotReceived = 0x02,
}

impl ProofStatus {
    pub fn from_u8(value: u8) -> Result<Self, DecodeError> {
        match value {
            0x01 => Ok(ProofStatus::Received),
            0x02 => Ok(ProofStatus::NotReceived),
            _ => Err(field("status", "unknown proof status")),
        }
    }
}

/// A proof from the destination, MACed under the proof key of a transfer-key generation:
/// the TRANSFER IN response (received) and the TRANSFER STATUS response (either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferProof {
    pub status: ProofStatus,
    pub key_id: u32,
    /// The destination's counter: after the transfer (received), or now (not received).
    pub destination_counter: u32,
    pub mac: [u8; MAC_LEN],
}

/// What a proof speaks about: one transfer, named by its source and the source's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofSubject {
    pub source: CardId,
    pub challenge_source: Challenge,
    pub destination: CardId,
    /// The amount received; zero for a proof of non-receipt.
    pub amount: Amount,
}

impl TransferProof {
    pub fn mac_input(
        status: ProofStatus,
        key_id: u32,
        destination_counter: u32,
        subject: &ProofSubject,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(100);
        m.extend_from_slice(b"valuecard/transfer/proof/v1");
        m.push(status as u8);
        m.extend_from_slice(&key_id.to_be_bytes());
        m.extend_from_slice(subject.source.as_bytes());
        m.extend_from_slice(&subject.challenge_source);
        m.extend_from_slice(subject.destination.as_bytes());
        m.extend_from_slice(&destination_counter.to_be_bytes());
        m.extend_from_slice(&subject.amount.to_be_bytes());
        m
    }

    pub fn make(
        status: ProofStatus,
        key: &TransferKey,
        destination_counter: u32,
        subject: &ProofSubject,
    ) -> Self {
        let mac = aes_cmac(
            &key.proof_key(),
            &Self::mac_input(status, key.id, destination_counter, subject),
        );
        TransferProof {
            status,
            key_id: key.id,
            destination_counter,
            mac,
        }
    }

    pub fn verify(&self, key: &TransferKey, subject: &ProofSubject) -> Result<(), CryptoError> {
        if self.key_id != key.id {
            return Err(CryptoError::BadMac);
        }
        crate::crypto::aes_cmac_verify(
            &key.proof_key(),
            &Self::mac_input(self.status, self.key_id, self.destination_counter, subject),
            &self.mac,
        )
    }

    pub(super) fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u8(tag::PROOF_STATUS, self.status as u8)
            .put_u32(tag::TRANSFER_KEY_ID, self.key_id)
            .put_u32(tag::PEER_COUNTER, self.destination_counter)
            .put(purse_tag::MAC, &self.mac);
    }

    pub(super) fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        let [status] = r.expect_array::<1>(tag::PROOF_STATUS)?;
        Ok(TransferProof {
            status: ProofStatus::from_u8(status)?,
            key_id: u32_field(r, tag::TRANSFER_KEY_ID)?,
            destination_counter: u32_field(r, tag::PEER_COUNTER)?,
            mac: r.expect_array(purse_tag::MAC)?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(48);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let proof = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(proof)
    }
}

/// TRANSFER STATUS command data, to the destination: which transfer the terminal asks
/// about (from the source's pending-transfer log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStatusQuery {
    pub source: CardId,
    pub challenge_source: Challenge,
    /// The destination's counter when it accepted to receive.
    pub destination_counter: u32,
}

impl TransferStatusQuery {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(48);
        w.put(tag::PEER_CARD_ID, self.source.as_bytes())
            .put(tag::PEER_CHALLENGE, &self.challenge_source)
            .put_u32(tag::PEER_COUNTER, self.destination_counter);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let query = TransferStatusQuery {
            source: card_id_field(&mut r, tag::PEER_CARD_ID)?,
            challenge_source: r.expect_array(tag::PEER_CHALLENGE)?,
            destination_counter: u32_field(&mut r, tag::PEER_COUNTER)?,
        };
        r.finish()?;
        Ok(query)
    }
}

/// TRANSFER COMPLETE command data, to the source: the destination's proof and, when the
/// value was received, the (possibly another) settlement terminal's certificate, challenge,
/// date and signature over the source's transfer-out record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferComplete {
    pub proof: TransferProof,
    pub record: Option<CompletionRecord>,
}

/// The terminal's part of a completed transfer-out record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRecord {
    pub terminal_certificate: Certificate,
    pub challenge_terminal: Challenge,
    pub date: Date,
    pub signature: RecordSignature,
}

impl TransferComplete {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(500);
        self.proof.encode_into(&mut w);
        if let Some(record) = &self.record {
            put_certificate(&mut w, &record.terminal_certificate);
            w.put(purse_tag::CHALLENGE_TERMINAL, &record.challenge_terminal)
                .put_u32(purse_tag::DATE, record.date.0);
            record.signature.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let proof = TransferProof::decode_from(&mut r)?;
        let record = match optional_certificate(&mut r)? {
            None => None,
            Some(terminal_certificate) => Some(CompletionRecord {
                terminal_certificate,
                challenge_terminal: r.expect_array(purse_tag::CHALLENGE_TERMINAL)?,
                date: Date(u32_field(&mut r, purse_tag::DATE)?),
                signature: RecordSignature::decode_from(&mut r)?,
            }),
        };
        r.finish()?;
        Ok(TransferComplete { proof, record })
    }
}
