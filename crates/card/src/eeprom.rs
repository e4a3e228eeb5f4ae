//! The card's non-volatile memory, as a device that can lose power in the middle of a write.
//!
//! The image store above it never assumes that a write completed unless `flush` returned.
//! [`FaultInjectingEeprom`] is the storage double the tearing tests use: it cuts power at a
//! chosen write and tears that write, as a real EEPROM or flash page would be torn.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// A storage failure. `PowerLost` means the card is now off: nothing more may be written
/// and no response is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("power lost during a write")]
    PowerLost,
    #[error("write outside the memory ({offset}+{len} > {size})")]
    OutOfRange {
        offset: usize,
        len: usize,
        size: usize,
    },
    #[error("storage I/O: {0}")]
    Io(String),
}

impl From<std::io::Error> for StorageError {
    fn from(error: std::io::Error) -> Self {
        StorageError::Io(error.to_string())
    }
}

/// Byte-addressed non-volatile memory with explicit durability barriers.
pub trait Eeprom: Send {
    fn size(&self) -> usize;
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError>;
    /// One physical write. It may be torn by a power cut.
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError>;
    /// Returns once every earlier write is durable.
    fn flush(&mut self) -> Result<(), StorageError>;
}

fn check_range(offset: usize, len: usize, size: usize) -> Result<(), StorageError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(StorageError::OutOfRange { offset, len, size }),
    }
}

/// Memory in RAM, shared between handles so a test can "power up" a new card on the same
/// memory after a cut.
#[derive(Debug, Clone)]
pub struct MemoryEeprom(Arc<Mutex<Vec<u8>>>);

impl MemoryEeprom {
    pub fn new(size: usize) -> Self {
        MemoryEeprom(Arc::new(Mutex::new(vec![0u8; size])))
    }

    fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock cannot leave the bytes inconsistent in a way that
        // matters more than a torn write, which the image store already tolerates.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.bytes().clone()
    }

    pub fn restore(&self, bytes: &[u8]) {
        let mut memory = self.bytes();
        memory.clear();
        memory.extend_from_slice(bytes);
    }
}

impl Eeprom for MemoryEeprom {
    fn size(&self) -> usize {
        self.bytes().len()
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        let memory = self.bytes();
        check_range(offset, buf.len(), memory.len())?;
        buf.copy_from_slice(&memory[offset..offset + buf.len()]);
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        let mut memory = self.bytes();
        check_range(offset, data.len(), memory.len())?;
        memory[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A card image file. Reads come from a copy in memory; writes go to the file at once and
/// `flush` is `fdatasync`.
#[derive(Debug)]
pub struct FileEeprom {
    file: File,
    cache: Vec<u8>,
}

impl FileEeprom {
    /// Opens an existing image file, or creates one of `size` zero bytes.
    pub fn open(path: &Path, size: usize) -> Result<Self, StorageError> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // The image holds the card's private keys.
            options.mode(0o600);
        }
        let file = options.open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            file.set_len(size as u64)?;
            file.sync_all()?;
        } else if len != size as u64 {
            return Err(StorageError::Io(format!(
                "{} is {len} bytes, a card image is {size} bytes: not a valuecard card image",
                path.display()
            )));
        }
        let cache = std::fs::read(path)?;
        Ok(FileEeprom { file, cache })
    }
}

impl Eeprom for FileEeprom {
    fn size(&self) -> usize {
        self.cache.len()
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        check_range(offset, buf.len(), self.cache.len())?;
        buf.copy_from_slice(&self.cache[offset..offset + buf.len()]);
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        check_range(offset, data.len(), self.cache.len())?;
        write_at(&self.file, offset as u64, data)?;
        self.cache[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.file.sync_data()?;
        Ok(())
    }
}

#[cfg(unix)]
fn write_at(file: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

/// Cuts power at the `cut_at`-th write (1-based) and tears it: only the first
/// `torn_len(len)` bytes of that write reach the memory. Every later write fails too.
#[derive(Debug)]
pub struct FaultInjectingEeprom<E> {
    inner: E,
    writes: u64,
    cut_at: Option<u64>,
    torn_fraction: (usize, usize),
    powered: bool,
}

impl<E: Eeprom> FaultInjectingEeprom<E> {
    pub fn new(inner: E) -> Self {
        FaultInjectingEeprom {
            inner,
            writes: 0,
            cut_at: None,
            torn_fraction: (1, 2),
            powered: true,
        }
    }

    /// Power will be cut at write number `write` from now on (1 = the next write), leaving
    /// `numerator / denominator` of that write's bytes written.
    pub fn cut_power_at(&mut self, write: u64, numerator: usize, denominator: usize) {
        self.cut_at = Some(self.writes + write);
        self.torn_fraction = (numerator, denominator.max(1));
    }

    pub fn writes(&self) -> u64 {
        self.writes
    }

    pub fn is_powered(&self) -> bool {
        self.powered
    }
}

impl<E: Eeprom> Eeprom for FaultInjectingEeprom<E> {
    fn size(&self) -> usize {
        self.inner.size()
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read(offset, buf)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        if !self.powered {
            return Err(StorageError::PowerLost);
        }
        self.writes += 1;
        if self.cut_at == Some(self.writes) {
            let (numerator, denominator) = self.torn_fraction;
            let torn = data.len() * numerator.min(denominator) / denominator;
            self.inner.write(offset, &data[..torn])?;
            self.powered = false;
            return Err(StorageError::PowerLost);
        }
        self.inner.write(offset, data)
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if !self.powered {
            return Err(StorageError::PowerLost);
        }
        self.inner.flush()
    }
}
