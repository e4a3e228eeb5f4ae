//! vpcd's framing: a 2-byte big-endian length, then that many payload bytes, in either
//! direction.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{MAX_FRAME_LEN, SW_NO_DIAGNOSIS};

/// One frame from vpcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    Payload(Vec<u8>),
    /// A frame longer than [`MAX_FRAME_LEN`]: its payload was read and discarded, so the
    /// connection stays in step and the command can be answered with a status word.
    Oversized(usize),
}

/// A frame-level failure on one connection.
#[derive(Debug)]
pub(super) enum FrameError {
    /// The stop flag was set while waiting.
    Stopped,
    /// Nothing arrived before the deadline (no byte of the frame was read).
    Silent,
    /// vpcd closed the connection.
    Closed,
    Io(io::Error),
}

/// Reads exactly `buf.len()` bytes, checking `stop` whenever a read times out. `Ok(false)`
/// means the peer closed the connection before the first byte. With a `deadline`, gives up
/// with [`FrameError::Silent`] if not one byte arrived by then; once a byte arrived, the
/// rest is awaited without one.
fn read_full(
    stream: &mut impl Read,
    buf: &mut [u8],
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<bool, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::SeqCst) {
            return Err(FrameError::Stopped);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => filled += n,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if filled == 0 && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    return Err(FrameError::Silent);
                }
            }
            Err(error) => return Err(FrameError::Io(error)),
        }
    }
    Ok(true)
}

/// Reads one frame. A payload longer than [`MAX_FRAME_LEN`] is drained in small pieces
/// (never held whole) and reported as [`Frame::Oversized`].
pub(super) fn read_frame(
    stream: &mut impl Read,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<Frame, FrameError> {
    let mut header = [0u8; 2];
    if !read_full(stream, &mut header, stop, deadline)? {
        return Err(FrameError::Closed);
    }
    let len = usize::from(u16::from_be_bytes(header));
    if len > MAX_FRAME_LEN {
        let mut scratch = [0u8; 1024];
        let mut left = len;
        while left > 0 {
            let piece = left.min(scratch.len());
            if !read_full(stream, &mut scratch[..piece], stop, None)? {
                return Err(FrameError::Closed);
            }
            left -= piece;
        }
        return Ok(Frame::Oversized(len));
    }
    let mut payload = vec![0u8; len];
    if len > 0 && !read_full(stream, &mut payload, stop, None)? {
        return Err(FrameError::Closed);
    }
    Ok(Frame::Payload(payload))
}

/// Encodes one frame, or `None` if the payload does not fit a 2-byte length.
pub fn encode_frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Some(frame)
}

pub(super) fn write_frame(stream: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let frame = encode_frame(payload).unwrap_or_else(|| {
        encode_frame(&SW_NO_DIAGNOSIS).unwrap_or_else(|| SW_NO_DIAGNOSIS.to_vec())
    });
    stream.write_all(&frame)?;
    stream.flush()
}
