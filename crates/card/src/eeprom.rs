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
    /// Another open of the same image file holds its lock: two processes (or two opens in
    /// one process) serving one card could each commit and roll the other back.
    #[error(
        "card image {0} is in use: another process (a `card attach`, a terminal with --card, \
         or `card apdu`) has it open; stop that one first"
    )]
    InUse(String),
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
///
/// The file is locked exclusively (an OS advisory lock, `flock` on Unix, `LockFileEx` on
/// Windows) for as long as this value lives, and the lock is taken before the image is read:
/// the in-memory copy is only the truth while nobody else writes the file. A second opener
/// gets [`StorageError::InUse`]. The kernel drops the lock when the process ends, however it
/// ends, so a killed `card attach` never leaves the image locked.
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
        lock_exclusively(&file, path)?;
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
        // Read through the locked handle: a path could name another file by now.
        let mut cache = vec![0u8; size];
        read_exact_at(&file, &mut cache)?;
        Ok(FileEeprom { file, cache })
    }
}

fn lock_exclusively(file: &File, path: &Path) -> Result<(), StorageError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StorageError::InUse(path.display().to_string()))
        }
        // A file system without locks: refuse rather than risk two writers.
        Err(std::fs::TryLockError::Error(error)) => Err(StorageError::Io(format!(
            "cannot lock the card image {}: {error}",
            path.display()
        ))),
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, 0)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(buf)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const SIZE: usize = 64;

    #[test]
    fn a_second_open_of_a_locked_image_is_refused_until_the_first_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.img");
        let mut first = FileEeprom::open(&path, SIZE).unwrap();
        first.write(0, &[0x11; 4]).unwrap();
        first.flush().unwrap();

        // The attack: a second holder of the same image, which could commit an old state
        // over the first one's newer one.
        let second = FileEeprom::open(&path, SIZE);
        assert_eq!(
            second.unwrap_err(),
            StorageError::InUse(path.display().to_string())
        );
        // The refused opener changed nothing.
        let mut byte = [0u8; 4];
        first.read(0, &mut byte).unwrap();
        assert_eq!(byte, [0x11; 4]);

        drop(first);
        let reopened = FileEeprom::open(&path, SIZE).unwrap();
        let mut bytes = [0u8; 4];
        reopened.read(0, &mut bytes).unwrap();
        assert_eq!(bytes, [0x11; 4], "the lock is released with the file");
    }

    #[test]
    fn the_message_names_the_image_and_what_may_hold_it() {
        let message = StorageError::InUse("/tmp/card.img".to_owned()).to_string();
        assert!(message.contains("/tmp/card.img"), "{message}");
        assert!(message.contains("card attach"), "{message}");
    }
}
