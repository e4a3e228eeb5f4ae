//! Test doubles for the machines (feature `testing`): a memory card in RAM that answers the
//! PC/SC Part 3 storage commands with the counter rule, and a center that takes uploads,
//! grants float and answers a card's newest state. The emulated memory card of the card
//! crate replaces the first; the center's own `MemcardLink` the second.

use std::collections::HashMap;

use valuecard_core::apdu::{Command, Response};
use valuecard_core::cert::Certificate;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::memcard::{
    map, FloatGrant, MemcardLink, PendingReceipt, RestoreEvidence, WriteReceipt, WriteRecord,
    WriteUpload, COUNTER_START, VALUE_AREA_LEN,
};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};
use valuecard_sam::testing::TestCenter;

use super::{CLA_STORAGE, INS_READ_BINARY, INS_UPDATE_BINARY};

/// What happens to one coming UPDATE BINARY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Power is cut before the write: the card keeps the old content.
    Before,
    /// The write lands, the answer is lost.
    After,
}

/// A memory card in RAM: `map::MEMORY_LEN` bytes, the card ID and counter read-only, the
/// counter lowered by one on each UPDATE BINARY that touches the value area (refused once
/// it is zero). Each UPDATE BINARY is atomic.
#[derive(Debug, Clone)]
pub struct MemoryCardDouble {
    memory: Vec<u8>,
    /// The number of UPDATE BINARY commands still to pass before the cut, and the cut.
    cut: Option<(usize, Cut)>,
    /// How many UPDATE BINARY commands the card carried out.
    pub writes: usize,
}

impl MemoryCardDouble {
    /// A new card: ID in ROM, counter at its start, everything else zero.
    pub fn new(card_id: CardId) -> Self {
        let mut memory = vec![0u8; map::MEMORY_LEN];
        memory[..map::CARD_ID_LEN].copy_from_slice(card_id.as_bytes());
        let counter = map::COUNTER as usize;
        memory[counter..counter + map::COUNTER_LEN].copy_from_slice(&COUNTER_START.to_be_bytes());
        MemoryCardDouble {
            memory,
            cut: None,
            writes: 0,
        }
    }

    /// A card holding `memory` (cut or zero-padded to [`map::MEMORY_LEN`]), whatever it
    /// says: for fuzzing the machines.
    pub fn from_memory(memory: &[u8]) -> Self {
        let mut memory = memory.to_vec();
        memory.resize(map::MEMORY_LEN, 0);
        MemoryCardDouble {
            memory,
            cut: None,
            writes: 0,
        }
    }

    pub fn memory(&self) -> &[u8] {
        &self.memory
    }

    pub fn counter(&self) -> u32 {
        let at = map::COUNTER as usize;
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&self.memory[at..at + 4]);
        u32::from_be_bytes(bytes)
    }

    /// Cuts power at the `after`-th coming UPDATE BINARY (0: the next one).
    pub fn cut_at_write(&mut self, after: usize, cut: Cut) {
        self.cut = Some((after, cut));
    }

    /// No cut pending any more.
    pub fn clear_cut(&mut self) {
        self.cut = None;
    }

    /// Writes everything writable of `image` (another dump of a memory card) through
    /// UPDATE BINARY, as anyone with a reader can: the counter falls on the value area
    /// write, and the card ID stays.
    pub fn write_back(&mut self, image: &[u8]) {
        let start = map::VALUE_AREA as usize;
        for (index, chunk) in image[start..].chunks(super::UPDATE_CHUNK_MAX).enumerate() {
            let at = (start + index * super::UPDATE_CHUNK_MAX) as u16;
            let command = super::update_binary(at, chunk);
            let _ = self.transmit_raw(&command.encode());
        }
    }

    fn process(&mut self, command: &Command) -> Result<Response, ReaderError> {
        if command.cla != CLA_STORAGE {
            return Ok(Response::error(StatusWord::CLA_NOT_SUPPORTED));
        }
        let address = u16::from_be_bytes([command.p1, command.p2]) as usize;
        match command.ins {
            INS_READ_BINARY => {
                let len = command.le.unwrap_or(0) as usize;
                match self.memory.get(address..address + len) {
                    Some(bytes) if len > 0 => Ok(Response::success(bytes.to_vec())),
                    _ => Ok(Response::error(StatusWord(0x6B00))),
                }
            }
            INS_UPDATE_BINARY => self.update(address, &command.data),
            _ => Ok(Response::error(StatusWord::INS_NOT_SUPPORTED)),
        }
    }

    fn update(&mut self, address: usize, data: &[u8]) -> Result<Response, ReaderError> {
        let end = address + data.len();
        if data.is_empty() || end > self.memory.len() {
            return Ok(Response::error(StatusWord(0x6B00)));
        }
        if address < map::VALUE_AREA as usize {
            return Ok(Response::error(StatusWord::SECURITY_STATUS_NOT_SATISFIED));
        }
        let touches_value =
            address < map::VALUE_AREA as usize + VALUE_AREA_LEN && end > map::VALUE_AREA as usize;
        let counter = self.counter();
        if touches_value && counter == 0 {
            return Ok(Response::error(StatusWord::MEMORY_FAILURE));
        }
        let cut = match self.cut {
            Some((0, cut)) => {
                self.cut = None;
                Some(cut)
            }
            Some((n, cut)) => {
                self.cut = Some((n - 1, cut));
                None
            }
            None => None,
        };
        if cut == Some(Cut::Before) {
            return Err(ReaderError::CardRemoved);
        }
        self.memory[address..end].copy_from_slice(data);
        if touches_value {
            let at = map::COUNTER as usize;
            self.memory[at..at + 4].copy_from_slice(&(counter - 1).to_be_bytes());
        }
        self.writes += 1;
        if cut == Some(Cut::After) {
            return Err(ReaderError::CardRemoved);
        }
        Ok(Response::success(Vec::new()))
    }
}

impl CardReader for MemoryCardDouble {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        let response = match Command::parse(apdu) {
            Ok(command) => self.process(&command)?,
            Err(error) => Response::error(error.status_word()),
        };
        Ok(response.encode())
    }

    fn name(&self) -> String {
        "memory card double".into()
    }
}

/// The center as the machines see it: it keeps every uploaded record (once per machine and
/// sequence), the certificates of the machines it knows, and grants the float asked for,
/// signed with its root key.
#[derive(Debug)]
pub struct MemcardLinkDouble {
    pub center: TestCenter,
    pub records: Vec<(DeviceId, WriteRecord)>,
    /// Pending writes reported and held as evidence.
    pub pending: Vec<(DeviceId, WriteRecord)>,
    pub certificates: HashMap<DeviceId, Certificate>,
    next_grant: HashMap<DeviceId, u32>,
}

impl MemcardLinkDouble {
    pub fn new(center: TestCenter) -> Self {
        MemcardLinkDouble {
            center,
            records: Vec::new(),
            pending: Vec::new(),
            certificates: HashMap::new(),
            next_grant: HashMap::new(),
        }
    }

    pub fn know(&mut self, certificate: &Certificate) {
        self.certificates
            .insert(certificate.subject(), certificate.clone());
    }
}

impl MemcardLink for MemcardLinkDouble {
    fn upload_writes(&mut self, upload: &WriteUpload) -> Result<WriteReceipt, CenterError> {
        let mut receipt = WriteReceipt::default();
        for record in &upload.records {
            self.pending.retain(|(machine, r)| {
                !(*machine == upload.machine && r.sequence == record.sequence)
            });
            if self
                .records
                .iter()
                .any(|(machine, r)| *machine == upload.machine && r.sequence == record.sequence)
            {
                receipt.duplicates += 1;
            } else {
                self.records.push((upload.machine, record.clone()));
                receipt.stored += 1;
            }
        }
        Ok(receipt)
    }

    fn request_float(
        &mut self,
        machine: DeviceId,
        amount: Amount,
    ) -> Result<FloatGrant, CenterError> {
        let number = self.next_grant.entry(machine).or_insert(1);
        let grant = self.center.grant(machine, *number, amount);
        *number += 1;
        Ok(grant)
    }

    /// As the center stands them (`center/src/memcard/pending.rs`), without its checks:
    /// landed when a stored record starts from the state one signed, superseded when one
    /// starts where it started, held otherwise.
    fn report_pending(&mut self, upload: &WriteUpload) -> Result<PendingReceipt, CenterError> {
        let mut receipt = PendingReceipt::default();
        for record in &upload.records {
            let key = |(machine, r): &(DeviceId, WriteRecord)| {
                *machine == upload.machine && r.sequence == record.sequence
            };
            self.pending.retain(|entry| !key(entry));
            let starts_from = |state: Option<&_>| {
                self.records.iter().any(|(_, r)| {
                    r.written.card_id == record.written.card_id && r.previous.as_ref() == state
                })
            };
            if self.records.iter().any(key) || starts_from(Some(&record.written)) {
                if !self.records.iter().any(key) {
                    self.records.push((upload.machine, record.clone()));
                }
                receipt.landed.push(record.sequence);
            } else if starts_from(record.previous.as_ref()) {
                receipt.superseded.push(record.sequence);
            } else {
                self.pending.push((upload.machine, record.clone()));
                receipt.held += 1;
            }
        }
        Ok(receipt)
    }

    fn latest_state(&mut self, card: &CardId) -> Result<Option<RestoreEvidence>, CenterError> {
        let counted = self
            .records
            .iter()
            .filter(|(_, record)| record.written.card_id == *card)
            .min_by_key(|(_, record)| record.written.counter);
        let newer_pending = self
            .pending
            .iter()
            .filter(|(_, record)| record.written.card_id == *card)
            .filter(|(_, record)| {
                counted.is_none_or(|(_, counted)| record.written.counter < counted.written.counter)
            })
            .min_by_key(|(_, record)| record.written.counter);
        let newest = newer_pending.or(counted);
        Ok(newest.and_then(|(machine, record)| {
            Some(RestoreEvidence {
                record: record.clone(),
                writer_certificate: self.certificates.get(machine)?.clone(),
            })
        }))
    }
}
