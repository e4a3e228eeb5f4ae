//! What the card keeps and shows of its updates: the terminal's signed stamp (Figs. 10-12),
//! the usage record of Fig. 9, READ PURSE, READ LOG, and GET LAST TRANSACTION.

use super::*;

/// A terminal's signed time stamp (seed 003, Figs. 10-12): its update count t and its
/// signature ST(TS_t) over its current stamp TS_t. Stamps form a one-way chain
/// (TS_{t+1} = SHA-256(label || TS_t)) from a first stamp TS_0 that only the center keeps,
/// so a stolen terminal cannot produce a stamp older than the one it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalStamp {
    pub count: u32,
    pub signature: Signature,
}

/// Longest chain walk a verifier does (about 270 years of daily stamps).
pub const STAMP_COUNT_MAX: u32 = 100_000;

impl TerminalStamp {
    /// TS_{t+1} from TS_t.
    pub fn next(stamp: &[u8; 32]) -> [u8; 32] {
        let mut input = [0u8; 52];
        input[..20].copy_from_slice(b"valuecard/stamp/next");
        input[20..].copy_from_slice(stamp);
        crate::crypto::sha256(&input)
    }

    /// TS_t, walked from TS_0; `None` beyond [`STAMP_COUNT_MAX`].
    pub fn at(first: &[u8; 32], count: u32) -> Option<[u8; 32]> {
        if count > STAMP_COUNT_MAX {
            return None;
        }
        let mut stamp = *first;
        for _ in 0..count {
            stamp = Self::next(&stamp);
        }
        Some(stamp)
    }

    /// What the terminal signs: ST(TS_t), bound to the terminal and the count.
    pub fn signed_message(terminal_id: &DeviceId, count: u32, stamp: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(b"valuecard/stamp/v1");
        m.extend_from_slice(terminal_id.as_bytes());
        m.extend_from_slice(&count.to_be_bytes());
        m.extend_from_slice(stamp);
        m
    }

    pub(crate) fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u32(tag::STAMP_COUNT, self.count)
            .put(tag::STAMP_SIGNATURE, &self.signature.0);
    }

    pub(crate) fn decode_optional(r: &mut TlvReader<'_>) -> Result<Option<Self>, DecodeError> {
        let Some(count) = r.optional(tag::STAMP_COUNT)? else {
            return Ok(None);
        };
        let count = be_u32(tag::STAMP_COUNT, count)?;
        let signature = Signature(r.expect_array::<SIGNATURE_LEN>(tag::STAMP_SIGNATURE)?);
        Ok(Some(TerminalStamp { count, signature }))
    }

    pub(super) fn extend(&self, m: &mut Vec<u8>) {
        m.extend_from_slice(&self.count.to_be_bytes());
        m.extend_from_slice(&self.signature.0);
    }
}

/// The card's record of its last balance update: the usage information of Fig. 9 that the
/// next terminal reads and later uploads, so the center can see a record used twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub kind: TransactionKind,
    /// The card's transaction counter after this update.
    pub counter: u32,
    /// The other party's challenge (R of a purchase, Y of a load).
    pub challenge_writer: Challenge,
    /// The card's challenge X.
    pub challenge_card: Challenge,
    pub amount: Amount,
    pub balance_after: Amount,
    /// The terminal (purchase) or dispenser (load) that wrote the update.
    pub writer: DeviceId,
    /// The writer's own sequence number (purchase) or the center's load number (load).
    pub writer_sequence: u32,
    pub date: Date,
    /// The writer's signature: ST of Fig. 6, or SA of Fig. 7 by the center.
    pub signature: Signature,
    /// The writing terminal's stamp (purchases only; Figs. 10-12).
    pub stamp: Option<TerminalStamp>,
}

impl UsageRecord {
    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::USAGE_RECORD, |r| {
            r.put_u8(tag::KIND, self.kind as u8)
                .put_u32(tag::COUNTER, self.counter)
                .put(tag::CHALLENGE_TERMINAL, &self.challenge_writer)
                .put(tag::CHALLENGE_CARD, &self.challenge_card)
                .put_u64(tag::AMOUNT, self.amount.minor())
                .put_u64(tag::BALANCE, self.balance_after.minor())
                .put(tag::DEVICE_ID, self.writer.as_bytes())
                .put_u32(tag::SEQUENCE, self.writer_sequence)
                .put_u32(tag::DATE, self.date.0)
                .put(tag::SIGNATURE, &self.signature.0);
            if let Some(stamp) = &self.stamp {
                stamp.encode_into(r);
            }
        });
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(240);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let [kind] = r.expect_array::<1>(tag::KIND)?;
        let record = UsageRecord {
            kind: TransactionKind::from_u8(kind)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            challenge_writer: challenge(&mut r, tag::CHALLENGE_TERMINAL)?,
            challenge_card: challenge(&mut r, tag::CHALLENGE_CARD)?,
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            writer: DeviceId(r.expect_array(tag::DEVICE_ID)?),
            writer_sequence: u32_field(&mut r, tag::SEQUENCE)?,
            date: Date(u32_field(&mut r, tag::DATE)?),
            signature: signature(&mut r)?,
            stamp: TerminalStamp::decode_optional(&mut r)?,
        };
        // Records written before stamps existed (card image format 1) have none; a load
        // or an online update (written by the center or the security server, not a
        // terminal) never has one.
        let stampless = matches!(
            record.kind,
            TransactionKind::Load
                | TransactionKind::OnlinePayment
                | TransactionKind::OnlineCharge
                | TransactionKind::MigrationIn
        );
        if stampless && record.stamp.is_some() {
            return Err(DecodeError::Field {
                field: "stamp",
                reason: "only terminals' records carry a stamp",
            });
        }
        r.finish()?;
        Ok(record)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let record = Self::decode_value(r.expect(tag::USAGE_RECORD)?)?;
        r.finish()?;
        Ok(record)
    }

    /// The byte string the writer signed for this record.
    pub fn signed_message(&self, card_id: &CardId) -> Vec<u8> {
        let stamp = self.stamp.unwrap_or(TerminalStamp {
            count: 0,
            signature: Signature([0; SIGNATURE_LEN]),
        });
        match self.kind {
            TransactionKind::Purchase => PurchaseCommit {
                stamp,
                card_id: *card_id,
                terminal_id: self.writer,
                challenge_terminal: self.challenge_writer,
                challenge_card: self.challenge_card,
                counter: self.counter.wrapping_sub(1),
                amount: self.amount,
                balance_after: self.balance_after,
                terminal_sequence: self.writer_sequence,
                date: self.date,
            }
            .signed_message(),
            TransactionKind::Load => LoadAuthorization {
                card_id: *card_id,
                dispenser_id: self.writer,
                challenge_dispenser: self.challenge_writer,
                challenge_card: self.challenge_card,
                counter: self.counter.wrapping_sub(1),
                amount: self.amount,
                balance_after: self.balance_after,
                load_number: self.writer_sequence,
                date: self.date,
            }
            .signed_message(),
            TransactionKind::TransferOut | TransactionKind::TransferIn => {
                let mut m = self.fields_message(b"valuecard/transfer/record/v1", card_id);
                stamp.extend(&mut m);
                m
            }
            TransactionKind::OnlinePayment | TransactionKind::OnlineCharge => {
                self.fields_message(crate::messages::online::ONLINE_RECORD_CONTEXT, card_id)
            }
            TransactionKind::MigrationIn => {
                self.fields_message(crate::messages::services::MIGRATION_RECORD_CONTEXT, card_id)
            }
        }
    }

    /// `label || kind || card ID || writer || writer's challenge || card's challenge ||
    /// counter || amount || balance after || writer sequence || date`: what a settlement
    /// terminal (with its stamp after it) and the security server sign for a record.
    pub(crate) fn fields_message(&self, label: &[u8], card_id: &CardId) -> Vec<u8> {
        let mut m = Vec::with_capacity(180);
        m.extend_from_slice(label);
        m.push(self.kind as u8);
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(self.writer.as_bytes());
        m.extend_from_slice(&self.challenge_writer);
        m.extend_from_slice(&self.challenge_card);
        m.extend_from_slice(&self.counter.to_be_bytes());
        m.extend_from_slice(&self.amount.to_be_bytes());
        m.extend_from_slice(&self.balance_after.to_be_bytes());
        m.extend_from_slice(&self.writer_sequence.to_be_bytes());
        m.extend_from_slice(&self.date.0.to_be_bytes());
        m
    }
}

/// READ PURSE response: what the holder may always read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurseStatus {
    pub state: CardState,
    pub card_id: CardId,
    pub balance: Amount,
    pub counter: u32,
    /// Number of abnormal events recorded (forged signatures, raised balances).
    pub abnormal_events: u8,
    pub last_usage: Option<UsageRecord>,
}

impl PurseStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(200);
        w.put_u8(tag::STATE, self.state as u8)
            .put(tag::CARD_ID, self.card_id.as_bytes())
            .put_u64(tag::BALANCE, self.balance.minor())
            .put_u32(tag::COUNTER, self.counter)
            .put_u8(tag::ABNORMAL_EVENTS, self.abnormal_events);
        if let Some(record) = &self.last_usage {
            record.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let [state] = r.expect_array::<1>(tag::STATE)?;
        let status = PurseStatus {
            state: CardState::from_u8(state)?,
            card_id: CardId(r.expect_array(tag::CARD_ID)?),
            balance: amount(&mut r, tag::BALANCE)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            abnormal_events: r.expect_array::<1>(tag::ABNORMAL_EVENTS)?[0],
            last_usage: r
                .optional(tag::USAGE_RECORD)?
                .map(UsageRecord::decode_value)
                .transpose()?,
        };
        r.finish()?;
        Ok(status)
    }
}

/// One entry of the holder-readable transaction log (READ LOG, newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub kind: TransactionKind,
    pub counter: u32,
    pub amount: Amount,
    pub balance_after: Amount,
    pub party: DeviceId,
    pub date: Date,
}

impl LogEntry {
    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::LOG_ENTRY, |e| {
            e.put_u8(tag::KIND, self.kind as u8)
                .put_u32(tag::COUNTER, self.counter)
                .put_u64(tag::AMOUNT, self.amount.minor())
                .put_u64(tag::BALANCE, self.balance_after.minor())
                .put(tag::DEVICE_ID, self.party.as_bytes())
                .put_u32(tag::DATE, self.date.0);
        });
    }

    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let [kind] = r.expect_array::<1>(tag::KIND)?;
        let entry = LogEntry {
            kind: TransactionKind::from_u8(kind)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            party: DeviceId(r.expect_array(tag::DEVICE_ID)?),
            date: Date(u32_field(&mut r, tag::DATE)?),
        };
        r.finish()?;
        Ok(entry)
    }

    pub fn encode_list(entries: &[LogEntry]) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(entries.len() * 48);
        for entry in entries {
            entry.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode_list(bytes: &[u8]) -> Result<Vec<LogEntry>, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let mut entries = Vec::new();
        while !r.is_empty() {
            if entries.len() >= crate::limits::CARD_LOG_ENTRIES_MAX {
                return Err(DecodeError::Field {
                    field: "log",
                    reason: "too many entries",
                });
            }
            entries.push(LogEntry::decode_value(r.expect(tag::LOG_ENTRY)?)?);
        }
        Ok(entries)
    }
}

/// GET LAST TRANSACTION command data: a fresh challenge from the asking terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetLastTransaction {
    pub challenge: Challenge,
}

impl GetLastTransaction {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::CHALLENGE_TERMINAL, &self.challenge);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let challenge = challenge(&mut r, tag::CHALLENGE_TERMINAL)?;
        r.finish()?;
        Ok(GetLastTransaction { challenge })
    }
}

/// GET LAST TRANSACTION response: the last usage record, signed by the card together with
/// the asker's challenge, so a terminal that lost a response learns whether the card
/// committed without having to trust the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTransaction {
    pub record: UsageRecord,
    pub signature: Signature,
}

impl LastTransaction {
    pub fn signed_message(
        card_id: &CardId,
        challenge: &Challenge,
        record: &UsageRecord,
    ) -> Vec<u8> {
        let mut m = b"valuecard/last-transaction/v1".to_vec();
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(challenge);
        m.extend_from_slice(&record.encode());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(200);
        self.record.encode_into(&mut w);
        w.put(tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let record = UsageRecord::decode_value(r.expect(tag::USAGE_RECORD)?)?;
        let signature = signature(&mut r)?;
        r.finish()?;
        Ok(LastTransaction { record, signature })
    }
}
