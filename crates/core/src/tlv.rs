//! A strict BER-TLV codec (ISO/IEC 7816-4 § 5.2, ISO/IEC 8825-1).
//!
//! Tags of one to three bytes, definite lengths in the shortest form only (a non-minimal
//! length would give one value two encodings, and every signed object must have exactly
//! one). Values are bounded by [`TLV_VALUE_MAX`]. Parsing never panics and never allocates
//! more than the input.

use crate::limits::TLV_VALUE_MAX;

/// A BER-TLV tag, its encoded bytes packed big-endian (`0x5F20`, `0x9F36`, `0x84`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u32);

impl Tag {
    /// Whether bit 6 of the first byte marks a constructed object (one holding TLVs).
    pub fn is_constructed(self) -> bool {
        self.first_byte() & 0x20 != 0
    }

    fn first_byte(self) -> u8 {
        let bytes = self.0.to_be_bytes();
        bytes.iter().copied().find(|&b| b != 0).unwrap_or(0)
    }

    fn encode_into(self, out: &mut Vec<u8>) {
        let bytes = self.0.to_be_bytes();
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(3);
        out.extend_from_slice(&bytes[start..]);
    }
}

impl core::fmt::Debug for Tag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Tag({:02X})", self.0)
    }
}

/// Why a TLV encoding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlvError {
    #[error("TLV truncated at offset {offset}")]
    Truncated { offset: usize },
    #[error("TLV tag at offset {offset} is longer than 3 bytes or malformed")]
    BadTag { offset: usize },
    #[error("TLV length at offset {offset} is not in its shortest definite form")]
    BadLength { offset: usize },
    #[error("TLV value of {len} bytes exceeds the limit of {TLV_VALUE_MAX}")]
    TooLong { len: usize },
    #[error("expected tag {expected:02X}, found {found:02X}")]
    UnexpectedTag { expected: u32, found: u32 },
    #[error("missing tag {0:02X}")]
    Missing(u32),
    #[error("tag {tag:02X}: value must be {expected} bytes, got {got}")]
    WrongValueLength {
        tag: u32,
        expected: usize,
        got: usize,
    },
    #[error("tag {tag:02X}: invalid value")]
    InvalidValue { tag: u32 },
    #[error("{0} trailing bytes after the last expected TLV")]
    Trailing(usize),
}

/// One parsed TLV, borrowing its value from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: Tag,
    pub value: &'a [u8],
}

/// Reads a sequence of TLVs in order, with a typed error for everything out of place.
#[derive(Debug, Clone)]
pub struct TlvReader<'a> {
    input: &'a [u8],
    offset: usize,
}

impl<'a> TlvReader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        TlvReader { input, offset: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.offset >= self.input.len()
    }

    /// How many bytes have been consumed so far.
    pub fn position(&self) -> usize {
        self.offset
    }

    /// The next TLV, or `None` at the end of input.
    pub fn next_tlv(&mut self) -> Result<Option<Tlv<'a>>, TlvError> {
        if self.is_empty() {
            return Ok(None);
        }
        let tag = self.read_tag()?;
        let len = self.read_len()?;
        let start = self.offset;
        let end = start
            .checked_add(len)
            .ok_or(TlvError::Truncated { offset: start })?;
        let value = self
            .input
            .get(start..end)
            .ok_or(TlvError::Truncated { offset: start })?;
        self.offset = end;
        Ok(Some(Tlv { tag, value }))
    }

    /// The next TLV, which must carry `tag`.
    pub fn expect(&mut self, tag: u32) -> Result<&'a [u8], TlvError> {
        match self.next_tlv()? {
            Some(tlv) if tlv.tag.0 == tag => Ok(tlv.value),
            Some(tlv) => Err(TlvError::UnexpectedTag {
                expected: tag,
                found: tlv.tag.0,
            }),
            None => Err(TlvError::Missing(tag)),
        }
    }

    /// The next TLV, which must carry `tag` and a value of exactly `N` bytes.
    pub fn expect_array<const N: usize>(&mut self, tag: u32) -> Result<[u8; N], TlvError> {
        let value = self.expect(tag)?;
        value.try_into().map_err(|_| TlvError::WrongValueLength {
            tag,
            expected: N,
            got: value.len(),
        })
    }

    /// The next TLV if it carries `tag`; otherwise nothing is consumed.
    pub fn optional(&mut self, tag: u32) -> Result<Option<&'a [u8]>, TlvError> {
        let mut peek = self.clone();
        match peek.next_tlv()? {
            Some(tlv) if tlv.tag.0 == tag => {
                *self = peek;
                Ok(Some(tlv.value))
            }
            _ => Ok(None),
        }
    }

    /// Succeeds only if every byte has been consumed.
    pub fn finish(self) -> Result<(), TlvError> {
        match self.input.len() - self.offset.min(self.input.len()) {
            0 => Ok(()),
            n => Err(TlvError::Trailing(n)),
        }
    }

    fn byte(&mut self) -> Result<u8, TlvError> {
        let b = *self.input.get(self.offset).ok_or(TlvError::Truncated {
            offset: self.offset,
        })?;
        self.offset += 1;
        Ok(b)
    }

    fn read_tag(&mut self) -> Result<Tag, TlvError> {
        let at = self.offset;
        let first = self.byte()?;
        // 00 and FF are padding in ISO 7816 data objects; we never emit them, so refuse.
        if first == 0x00 || first == 0xFF {
            return Err(TlvError::BadTag { offset: at });
        }
        let mut tag = first as u32;
        if first & 0x1F != 0x1F {
            return Ok(Tag(tag));
        }
        for index in 0..2 {
            let b = self.byte()?;
            if index == 0 && (b < 0x1F || b == 0x80) {
                // A tag number below 31 must use the one-byte form, and a leading 0x80
                // would be a non-minimal tag number.
                return Err(TlvError::BadTag { offset: at });
            }
            tag = (tag << 8) | b as u32;
            if b & 0x80 == 0 {
                return Ok(Tag(tag));
            }
        }
        Err(TlvError::BadTag { offset: at })
    }

    fn read_len(&mut self) -> Result<usize, TlvError> {
        let at = self.offset;
        let first = self.byte()?;
        let len = match first {
            0x00..=0x7F => first as usize,
            0x81 => {
                let b = self.byte()? as usize;
                if b < 0x80 {
                    return Err(TlvError::BadLength { offset: at });
                }
                b
            }
            0x82 => {
                let hi = self.byte()? as usize;
                let lo = self.byte()? as usize;
                let len = (hi << 8) | lo;
                if len < 0x100 {
                    return Err(TlvError::BadLength { offset: at });
                }
                len
            }
            _ => return Err(TlvError::BadLength { offset: at }),
        };
        if len > TLV_VALUE_MAX {
            return Err(TlvError::TooLong { len });
        }
        Ok(len)
    }
}

/// Builds a TLV encoding. Values longer than [`TLV_VALUE_MAX`] are a programming error
/// that encoders must rule out by their types, so they are checked with a debug assertion.
#[derive(Debug, Default, Clone)]
pub struct TlvWriter {
    buf: Vec<u8>,
}

impl TlvWriter {
    pub fn new() -> Self {
        TlvWriter { buf: Vec::new() }
    }

    pub fn with_capacity(capacity: usize) -> Self {
        TlvWriter {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn put(&mut self, tag: u32, value: &[u8]) -> &mut Self {
        debug_assert!(value.len() <= TLV_VALUE_MAX);
        Tag(tag).encode_into(&mut self.buf);
        encode_len(value.len(), &mut self.buf);
        self.buf.extend_from_slice(value);
        self
    }

    /// Appends bytes that are already a complete TLV encoding.
    pub fn put_raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(encoded);
        self
    }

    pub fn put_u8(&mut self, tag: u32, value: u8) -> &mut Self {
        self.put(tag, &[value])
    }

    pub fn put_u32(&mut self, tag: u32, value: u32) -> &mut Self {
        self.put(tag, &value.to_be_bytes())
    }

    pub fn put_u64(&mut self, tag: u32, value: u64) -> &mut Self {
        self.put(tag, &value.to_be_bytes())
    }

    /// A constructed TLV whose value the closure writes.
    pub fn nested(&mut self, tag: u32, build: impl FnOnce(&mut TlvWriter)) -> &mut Self {
        let mut inner = TlvWriter::new();
        build(&mut inner);
        self.put(tag, &inner.buf)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

fn encode_len(len: usize, out: &mut Vec<u8>) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
}

/// Reads a big-endian unsigned integer of exactly `N` bytes from a TLV value.
pub fn be_u32(tag: u32, value: &[u8]) -> Result<u32, TlvError> {
    let raw: [u8; 4] = value.try_into().map_err(|_| TlvError::WrongValueLength {
        tag,
        expected: 4,
        got: value.len(),
    })?;
    Ok(u32::from_be_bytes(raw))
}

pub fn be_u64(tag: u32, value: &[u8]) -> Result<u64, TlvError> {
    let raw: [u8; 8] = value.try_into().map_err(|_| TlvError::WrongValueLength {
        tag,
        expected: 8,
        got: value.len(),
    })?;
    Ok(u64::from_be_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_tags_and_lengths_minimally() {
        let mut w = TlvWriter::new();
        w.put(0x84, &[1, 2])
            .put(0x5F20, &[])
            .put(0x9F8101, &[0xAA; 200]);
        let bytes = w.into_bytes();
        assert_eq!(&bytes[..4], &[0x84, 0x02, 1, 2]);
        assert_eq!(&bytes[4..7], &[0x5F, 0x20, 0x00]);
        assert_eq!(&bytes[7..12], &[0x9F, 0x81, 0x01, 0x81, 200]);
        let mut r = TlvReader::new(&bytes);
        assert_eq!(r.expect(0x84).unwrap(), &[1, 2]);
        assert_eq!(r.expect(0x5F20).unwrap(), &[] as &[u8]);
        assert_eq!(r.expect(0x9F8101).unwrap().len(), 200);
        r.finish().unwrap();
    }

    #[test]
    fn rejects_non_minimal_lengths_and_tags() {
        assert_eq!(
            TlvReader::new(&[0x84, 0x81, 0x05, 0, 0, 0, 0, 0]).next_tlv(),
            Err(TlvError::BadLength { offset: 1 })
        );
        assert_eq!(
            TlvReader::new(&[0x84, 0x82, 0x00, 0x05]).next_tlv(),
            Err(TlvError::BadLength { offset: 1 })
        );
        assert_eq!(
            TlvReader::new(&[0x84, 0x83, 0, 0, 1]).next_tlv(),
            Err(TlvError::BadLength { offset: 1 })
        );
        assert_eq!(
            TlvReader::new(&[0x84, 0x80]).next_tlv(),
            Err(TlvError::BadLength { offset: 1 })
        );
        assert_eq!(
            TlvReader::new(&[0x5F, 0x05, 0x00]).next_tlv(),
            Err(TlvError::BadTag { offset: 0 })
        );
        assert_eq!(
            TlvReader::new(&[0x5F, 0x81, 0x81, 0x81, 0x00]).next_tlv(),
            Err(TlvError::BadTag { offset: 0 })
        );
        assert_eq!(
            TlvReader::new(&[0x00, 0x00]).next_tlv(),
            Err(TlvError::BadTag { offset: 0 })
        );
    }

    #[test]
    fn detects_truncation_at_every_point() {
        let mut w = TlvWriter::new();
        w.put(0x9F36, &[1, 2, 3]).nested(0x7F21, |inner| {
            inner.put(0x5F20, b"abc");
        });
        let bytes = w.into_bytes();
        for cut in 0..bytes.len() {
            let mut r = TlvReader::new(&bytes[..cut]);
            let outcome = (|| {
                r.expect(0x9F36)?;
                r.expect(0x7F21)?;
                Ok::<_, TlvError>(())
            })();
            assert!(outcome.is_err(), "accepted truncation at {cut}");
        }
    }

    #[test]
    fn rejects_trailing_and_wrong_tags() {
        let mut r = TlvReader::new(&[0x80, 0x01, 0x00, 0x81]);
        r.expect(0x80).unwrap();
        assert_eq!(r.finish(), Err(TlvError::Trailing(1)));
        let mut r = TlvReader::new(&[0x80, 0x01, 0x00]);
        assert_eq!(
            r.expect(0x81),
            Err(TlvError::UnexpectedTag {
                expected: 0x81,
                found: 0x80
            })
        );
        let mut r = TlvReader::new(&[0x80, 0x02, 0x00, 0x01]);
        assert!(matches!(
            r.expect_array::<1>(0x80),
            Err(TlvError::WrongValueLength { .. })
        ));
        let mut r = TlvReader::new(&[0x80, 0x01, 0x00]);
        assert_eq!(r.optional(0x81).unwrap(), None);
        assert_eq!(r.optional(0x80).unwrap(), Some(&[0u8][..]));
    }

    proptest! {
        #[test]
        fn round_trips_arbitrary_sequences(items in proptest::collection::vec(
            (prop_oneof![0x80u32..0x9F, 0x5F20u32..0x5F7F, 0x9F8100u32..0x9F8170], proptest::collection::vec(any::<u8>(), 0..300)),
            0..6,
        )) {
            let mut w = TlvWriter::new();
            for (tag, value) in &items {
                w.put(*tag, value);
            }
            let bytes = w.into_bytes();
            let mut r = TlvReader::new(&bytes);
            for (tag, value) in &items {
                prop_assert_eq!(r.expect(*tag).unwrap(), &value[..]);
            }
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = TlvReader::new(&bytes);
            while let Ok(Some(_)) = r.next_tlv() {}
        }
    }
}
