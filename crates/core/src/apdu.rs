//! ISO/IEC 7816-4 § 5.1 command and response APDUs, short and extended lengths.
//!
//! One parser and one encoder for each. The parser accepts every case (1, 2S, 3S, 4S, 2E,
//! 3E, 4E) exactly as the standard lays them out and refuses everything else with a typed
//! error that the card maps to `6700 wrong length`.

use crate::limits::{APDU_COMMAND_DATA_MAX, APDU_RESPONSE_DATA_MAX};
use crate::sw::StatusWord;

/// A command APDU. `le` is the maximum response length the terminal expects: `None` when
/// absent, `Some(256)` for a short `00`, `Some(65536)` for an extended `0000`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    pub le: Option<u32>,
}

/// Why a command APDU was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApduError {
    #[error("APDU shorter than its 4-byte header ({0} bytes)")]
    TooShort(usize),
    #[error("APDU length fields do not match its {0} bytes")]
    LengthMismatch(usize),
    #[error("command data of {0} bytes exceeds the limit of {APDU_COMMAND_DATA_MAX}")]
    DataTooLong(usize),
    #[error("response shorter than its 2-byte status word")]
    ResponseTooShort,
    #[error("response data of {0} bytes exceeds the limit of {APDU_RESPONSE_DATA_MAX}")]
    ResponseTooLong(usize),
}

impl ApduError {
    /// The status word a card answers for this error.
    pub fn status_word(&self) -> StatusWord {
        StatusWord::WRONG_LENGTH
    }
}

impl Command {
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Command {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    pub fn with_data(mut self, data: Vec<u8>) -> Self {
        self.data = data;
        self
    }

    pub fn with_le(mut self, le: u32) -> Self {
        self.le = Some(le);
        self
    }

    /// Parses a command APDU (ISO/IEC 7816-4 § 5.1, the seven cases).
    pub fn parse(bytes: &[u8]) -> Result<Command, ApduError> {
        let (header, body) = match bytes {
            [cla, ins, p1, p2, body @ ..] => ([*cla, *ins, *p1, *p2], body),
            _ => return Err(ApduError::TooShort(bytes.len())),
        };
        let [cla, ins, p1, p2] = header;
        let total = bytes.len();
        let (data, le): (&[u8], Option<u32>) = match body {
            // Case 1.
            [] => (&[], None),
            // Case 2S.
            [le] => (&[], Some(short_le(*le))),
            // Extended forms start with a 00 byte followed by two length bytes.
            [0x00, hi, lo, rest @ ..] => {
                let n = u16::from_be_bytes([*hi, *lo]) as usize;
                match rest {
                    // Case 2E.
                    [] => (&[], Some(extended_le(*hi, *lo))),
                    // Case 3E.
                    _ if n != 0 && rest.len() == n => (rest, None),
                    // Case 4E.
                    _ if n != 0 && rest.len() == n + 2 => {
                        let le = &rest[n..];
                        (&rest[..n], Some(extended_le(le[0], le[1])))
                    }
                    _ => return Err(ApduError::LengthMismatch(total)),
                }
            }
            [lc, rest @ ..] => {
                let n = *lc as usize;
                match rest.len() {
                    // Case 3S.
                    len if n != 0 && len == n => (rest, None),
                    // Case 4S.
                    len if n != 0 && len == n + 1 => (&rest[..n], Some(short_le(rest[n]))),
                    _ => return Err(ApduError::LengthMismatch(total)),
                }
            }
        };
        if data.len() > APDU_COMMAND_DATA_MAX {
            return Err(ApduError::DataTooLong(data.len()));
        }
        Ok(Command {
            cla,
            ins,
            p1,
            p2,
            data: data.to_vec(),
            le,
        })
    }

    /// Encodes in the short form when data and Le fit, the extended form otherwise.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 9);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        let extended = self.data.len() > 255 || self.le.is_some_and(|le| le > 256);
        if extended {
            if !self.data.is_empty() {
                out.push(0x00);
                out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                if self.data.is_empty() {
                    out.push(0x00);
                }
                let encoded = if le >= 65_536 { 0 } else { le as u16 };
                out.extend_from_slice(&encoded.to_be_bytes());
            }
        } else {
            if !self.data.is_empty() {
                out.push(self.data.len() as u8);
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                out.push(if le >= 256 { 0 } else { le as u8 });
            }
        }
        out
    }
}

fn short_le(byte: u8) -> u32 {
    if byte == 0 {
        256
    } else {
        byte as u32
    }
}

fn extended_le(hi: u8, lo: u8) -> u32 {
    match u16::from_be_bytes([hi, lo]) {
        0 => 65_536,
        n => n as u32,
    }
}

/// A response APDU: data followed by SW1-SW2.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl Response {
    pub fn success(data: Vec<u8>) -> Self {
        Response {
            data,
            sw: StatusWord::SUCCESS,
        }
    }

    pub fn error(sw: StatusWord) -> Self {
        Response {
            data: Vec::new(),
            sw,
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Response, ApduError> {
        let split = bytes
            .len()
            .checked_sub(2)
            .ok_or(ApduError::ResponseTooShort)?;
        if split > APDU_RESPONSE_DATA_MAX {
            return Err(ApduError::ResponseTooLong(split));
        }
        let (data, sw) = bytes.split_at(split);
        Ok(Response {
            data: data.to_vec(),
            sw: StatusWord::from_bytes(sw[0], sw[1]),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_all_seven_cases() {
        let case1 = Command::parse(&[0x80, 0x10, 1, 2]).unwrap();
        assert_eq!((case1.data.len(), case1.le), (0, None));
        assert_eq!(Command::parse(&[0, 0xB0, 0, 0, 0]).unwrap().le, Some(256));
        let case3s = Command::parse(&[0, 0xA4, 4, 0, 2, 0xAA, 0xBB]).unwrap();
        assert_eq!((case3s.data, case3s.le), (vec![0xAA, 0xBB], None));
        let case4s = Command::parse(&[0, 0xA4, 4, 0, 1, 0xAA, 0x10]).unwrap();
        assert_eq!((case4s.data, case4s.le), (vec![0xAA], Some(16)));
        assert_eq!(
            Command::parse(&[0, 0xB0, 0, 0, 0, 0, 0]).unwrap().le,
            Some(65_536)
        );
        let case3e = Command::parse(&[0, 0xD6, 0, 0, 0, 0, 1, 0x55]).unwrap();
        assert_eq!((case3e.data, case3e.le), (vec![0x55], None));
        let case4e = Command::parse(&[0, 0xD6, 0, 0, 0, 0, 1, 0x55, 0x01, 0x00]).unwrap();
        assert_eq!((case4e.data, case4e.le), (vec![0x55], Some(256)));
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        assert_eq!(Command::parse(&[0, 0xA4, 4]), Err(ApduError::TooShort(3)));
        assert!(Command::parse(&[0, 0xA4, 4, 0, 3, 0xAA]).is_err());
        assert!(Command::parse(&[0, 0xA4, 4, 0, 1, 0xAA, 0xBB, 0xCC]).is_err());
        assert!(Command::parse(&[0, 0xA4, 4, 0, 0, 0, 2, 0xAA]).is_err());
        assert!(Command::parse(&[0, 0xA4, 4, 0, 0, 0, 0, 0xAA]).is_err());
        let mut huge = vec![0, 0xD6, 0, 0, 0, 0x20, 0x00];
        huge.extend(vec![0u8; 0x2000]);
        assert_eq!(Command::parse(&huge), Err(ApduError::DataTooLong(0x2000)));
        assert_eq!(Response::parse(&[0x90]), Err(ApduError::ResponseTooShort));
    }

    #[test]
    fn response_round_trip() {
        let response = Response {
            data: vec![1, 2, 3],
            sw: StatusWord::SUCCESS,
        };
        assert_eq!(response.encode(), vec![1, 2, 3, 0x90, 0x00]);
        assert_eq!(Response::parse(&response.encode()).unwrap(), response);
    }

    proptest! {
        #[test]
        fn command_round_trip(cla: u8, ins: u8, p1: u8, p2: u8,
                              data in proptest::collection::vec(any::<u8>(), 0..600),
                              le in proptest::option::of(1u32..=65_536)) {
            let command = Command { cla, ins, p1, p2, data, le };
            let parsed = Command::parse(&command.encode()).unwrap();
            // A short Le of 256 and an extended Le of 256 mean the same.
            prop_assert_eq!(parsed, command);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(command) = Command::parse(&bytes) {
                prop_assert_eq!(Command::parse(&command.encode()).unwrap(), command);
            }
        }
    }
}
