//! PC/SC readers (feature `pcsc`): a real card in a real reader, or a valuecard card served
//! by the vpcd bridge, through pcsc-lite (`libpcsclite`, Debian `libpcsclite-dev`) or
//! WinSCard.
//!
//! [`PcscReader`] picks a reader by name or index, waits for a card, connects in shared mode
//! with T=0 or T=1, and implements [`CardReader`]. Without a selector it looks into every
//! reader that holds a card (SELECT of the purse AID) and takes the one reader that holds a
//! valuecard card; with none or several it names each reader and what it holds, and takes
//! none. Errors that mean the card went away or
//! was reset under the connection become [`ReaderError::CardRemoved`]; everything else
//! becomes [`ReaderError::Transport`] with the PC/SC call and reader named.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use valuecard_core::messages::purse::{PurseStatus, PURSE_AID};

use crate::{CardReader, ReaderError};

/// Large enough for any response APDU, extended length included.
const RECEIVE_BUFFER_LEN: usize = pcsc::MAX_BUFFER_SIZE_EXTENDED;

/// The longest single wait in PC/SC; the overall timeout is checked between waits.
const STATUS_WAIT_SLICE: Duration = Duration::from_millis(500);

/// A card in a PC/SC reader.
pub struct PcscReader {
    context: Context,
    reader: CString,
    name: String,
    card: Option<pcsc::Card>,
    atr: Vec<u8>,
}

impl std::fmt::Debug for PcscReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscReader")
            .field("reader", &self.name)
            .field("connected", &self.card.is_some())
            .field("atr", &hex_upper(&self.atr))
            .finish_non_exhaustive()
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

fn transport(call: &str, reader: Option<&str>, error: pcsc::Error) -> ReaderError {
    let hint = match error {
        pcsc::Error::NoService | pcsc::Error::ServiceStopped => {
            " (is pcscd running? Debian: `pcscd`, or scripts/start-pcscd.sh)"
        }
        pcsc::Error::NoReadersAvailable => " (no reader is connected)",
        _ => "",
    };
    match reader {
        Some(reader) => {
            ReaderError::Transport(format!("PC/SC {call} on \"{reader}\": {error}{hint}"))
        }
        None => ReaderError::Transport(format!("PC/SC {call}: {error}{hint}")),
    }
}

/// The PC/SC errors that mean the card left, lost power or was reset by someone else: the
/// terminal cannot know whether its command ran.
fn card_gone(error: pcsc::Error) -> bool {
    matches!(
        error,
        pcsc::Error::RemovedCard
            | pcsc::Error::ResetCard
            | pcsc::Error::UnpoweredCard
            | pcsc::Error::NoSmartcard
    )
}

fn establish() -> Result<Context, ReaderError> {
    Context::establish(Scope::User).map_err(|error| transport("SCardEstablishContext", None, error))
}

fn reader_names(context: &Context) -> Result<Vec<CString>, ReaderError> {
    match context.list_readers_owned() {
        Ok(names) => Ok(names),
        // pcsc-lite reports "no readers" as an error; it is an empty list.
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(error) => Err(transport("SCardListReaders", None, error)),
    }
}

/// The readers a selector names, in PC/SC order: every reader for `None`; the reader at that
/// (0-based) index for a number; otherwise every reader whose name contains the selector,
/// ignoring case. Empty if none matches.
pub fn select_readers(names: &[String], selector: Option<&str>) -> Vec<usize> {
    let Some(selector) = selector.map(str::trim) else {
        return (0..names.len()).collect();
    };
    if let Ok(index) = selector.parse::<usize>() {
        if index < names.len() {
            return vec![index];
        }
    }
    let wanted = selector.to_lowercase();
    names
        .iter()
        .enumerate()
        .filter(|(_, name)| name.to_lowercase().contains(&wanted))
        .map(|(index, _)| index)
        .collect()
}

impl PcscReader {
    /// The names of the connected readers, in PC/SC order (the indexes a selector uses).
    pub fn list() -> Result<Vec<String>, ReaderError> {
        let context = establish()?;
        Ok(reader_names(&context)?
            .iter()
            .map(|name| name.to_string_lossy().into_owned())
            .collect())
    }

    /// Connects to the card in the reader `selector` names (see [`select_readers`]),
    /// waiting up to `timeout` for one to be inserted. If the selector names several
    /// readers, the first that holds a card is used. Without a selector, the one reader that
    /// holds a valuecard card is used (see [`survey`]): waiting up to `timeout` for one, and
    /// refusing to guess when several do.
    pub fn open(selector: Option<&str>, timeout: Duration) -> Result<Self, ReaderError> {
        let context = establish()?;
        let names = reader_names(&context)?;
        let display: Vec<String> = names
            .iter()
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        if names.is_empty() {
            return Err(ReaderError::Transport(
                "no PC/SC readers: connect a reader, or start pcscd with vpcd \
                 (scripts/start-pcscd.sh) and `valuecard card attach`"
                    .to_owned(),
            ));
        }
        let candidates = select_readers(&display, selector);
        if candidates.is_empty() {
            return Err(ReaderError::Transport(format!(
                "no PC/SC reader matches {:?}; readers: {}",
                selector.unwrap_or_default(),
                display
                    .iter()
                    .enumerate()
                    .map(|(index, name)| format!("{index}: {name}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let chosen: Vec<CString> = candidates
            .iter()
            .filter_map(|index| names.get(*index).cloned())
            .collect();
        let reader = match selector {
            Some(_) => wait_for_card(&context, &chosen, timeout)?,
            None => wait_for_purse(&context, &chosen, timeout)?,
        };
        let name = reader.to_string_lossy().into_owned();
        let mut pcsc_reader = PcscReader {
            context,
            reader,
            name,
            card: None,
            atr: Vec::new(),
        };
        pcsc_reader.connect()?;
        Ok(pcsc_reader)
    }

    /// Every reader and what it holds, in PC/SC order (the card in each is SELECTed; see
    /// [`survey`]).
    pub fn survey_all() -> Result<Vec<(String, Holding)>, ReaderError> {
        let context = establish()?;
        let names = reader_names(&context)?;
        let holdings = survey(&context, &names)?;
        Ok(names
            .iter()
            .map(|name| name.to_string_lossy().into_owned())
            .zip(holdings)
            .collect())
    }

    /// The reader's name as PC/SC reports it.
    pub fn reader_name(&self) -> &str {
        &self.name
    }

    /// The card's ATR as seen at the last connection.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    /// Waits up to `timeout` for a card in this reader (after a removal, say).
    pub fn wait_for_card(&mut self, timeout: Duration) -> Result<(), ReaderError> {
        wait_for_card(&self.context, std::slice::from_ref(&self.reader), timeout)?;
        Ok(())
    }

    /// Connects (again) to the card in this reader: shared, T=0 or T=1.
    pub fn connect(&mut self) -> Result<(), ReaderError> {
        self.card = None;
        let card = self
            .context
            .connect(
                &self.reader,
                ShareMode::Shared,
                Protocols::T0 | Protocols::T1,
            )
            .map_err(|error| match error {
                pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard => ReaderError::NoCard,
                other => transport("SCardConnect", Some(&self.name), other),
            })?;
        self.atr = card
            .status2_owned()
            .map(|status| status.atr().to_vec())
            .unwrap_or_default();
        self.card = Some(card);
        Ok(())
    }

    /// Ends the connection, resetting the card (its session ends).
    pub fn disconnect(&mut self) -> Result<(), ReaderError> {
        if let Some(card) = self.card.take() {
            card.disconnect(Disposition::ResetCard)
                .map_err(|(_, error)| transport("SCardDisconnect", Some(&self.name), error))?;
        }
        Ok(())
    }
}

/// What a reader holds, as seen by [`survey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    NoCard,
    /// A card that could not be reached (mute, or in exclusive use by another program).
    Unreachable(String),
    /// A card without the valuecard purse: its ATR and its answer to the purse's SELECT.
    OtherCard {
        atr: Vec<u8>,
        select_sw: u16,
    },
    /// A valuecard purse card, with its card ID when READ PURSE answered.
    Purse {
        atr: Vec<u8>,
        card_id: Option<String>,
    },
}

impl std::fmt::Display for Holding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holding::NoCard => f.write_str("no card"),
            Holding::Unreachable(why) => write!(f, "a card that cannot be reached ({why})"),
            Holding::OtherCard { atr, select_sw } => write!(
                f,
                "a card without the valuecard purse (ATR {}, SELECT answered {select_sw:04X})",
                hex_upper(atr)
            ),
            Holding::Purse {
                card_id: Some(card_id),
                ..
            } => write!(f, "valuecard card {card_id}"),
            Holding::Purse { atr, card_id: None } => {
                write!(f, "a valuecard card (ATR {})", hex_upper(atr))
            }
        }
    }
}

/// SELECT of the purse by its AID (docs/card-commands.md § 6.1).
fn select_purse_apdu() -> Vec<u8> {
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, PURSE_AID.len() as u8];
    apdu.extend_from_slice(&PURSE_AID);
    apdu.push(0x00);
    apdu
}

/// READ PURSE (docs/card-commands.md § 6.5).
const READ_PURSE: [u8; 5] = [0x80, 0x30, 0x00, 0x00, 0x00];

fn status_word(response: &[u8]) -> u16 {
    match response {
        [.., sw1, sw2] => u16::from_be_bytes([*sw1, *sw2]),
        _ => 0,
    }
}

/// Looks at the card in one reader: SELECT the purse and, if it is there, READ PURSE for
/// its card ID. The card is left as it was found (no reset), so a session another program
/// holds on it goes on; only its selection changes.
fn probe(context: &Context, reader: &CString) -> Holding {
    let card = match context.connect(reader, ShareMode::Shared, Protocols::T0 | Protocols::T1) {
        Ok(card) => card,
        Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => return Holding::NoCard,
        Err(error) => return Holding::Unreachable(error.to_string()),
    };
    let atr = card
        .status2_owned()
        .map(|status| status.atr().to_vec())
        .unwrap_or_default();
    let mut buffer = vec![0u8; RECEIVE_BUFFER_LEN];
    let holding = match card.transmit(&select_purse_apdu(), &mut buffer) {
        Ok(response) if status_word(response) == 0x9000 => {
            let card_id = card
                .transmit(&READ_PURSE, &mut buffer)
                .ok()
                .filter(|response| status_word(response) == 0x9000)
                .and_then(|response| PurseStatus::decode(&response[..response.len() - 2]).ok())
                .map(|status| status.card_id.to_string());
            Holding::Purse { atr, card_id }
        }
        Ok(response) => Holding::OtherCard {
            select_sw: status_word(response),
            atr,
        },
        Err(error) => Holding::Unreachable(error.to_string()),
    };
    let _ = card.disconnect(Disposition::LeaveCard);
    holding
}

/// What each of `readers` holds, in their order.
pub fn survey(context: &Context, readers: &[CString]) -> Result<Vec<Holding>, ReaderError> {
    let mut states: Vec<ReaderState> = readers
        .iter()
        .map(|name| ReaderState::new(name.clone(), State::UNAWARE))
        .collect();
    match context.get_status_change(Duration::ZERO, &mut states) {
        Ok(()) | Err(pcsc::Error::Timeout) => {}
        Err(error) => return Err(transport("SCardGetStatusChange", None, error)),
    }
    Ok(states
        .iter()
        .map(|state| {
            let event = state.event_state();
            if !event.contains(State::PRESENT) {
                Holding::NoCard
            } else if event.contains(State::MUTE) {
                Holding::Unreachable("mute".to_owned())
            } else {
                probe(context, &state.name().to_owned())
            }
        })
        .collect())
}

/// "readers: 0: NAME (HOLDING), ...", for an error message.
fn describe(readers: &[CString], holdings: &[Holding]) -> String {
    let list: Vec<String> = readers
        .iter()
        .zip(holdings)
        .enumerate()
        .map(|(index, (name, holding))| {
            format!("{index}: \"{}\" holds {holding}", name.to_string_lossy())
        })
        .collect();
    format!("readers: {}", list.join("; "))
}

/// How often the readers are looked into again while waiting for a valuecard card.
const SURVEY_INTERVAL: Duration = Duration::from_millis(300);

/// Waits up to `timeout` until exactly one of `readers` holds a valuecard card; returns its
/// name. Several at once is an error at once: which card is meant is not for the terminal
/// to guess.
fn wait_for_purse(
    context: &Context,
    readers: &[CString],
    timeout: Duration,
) -> Result<CString, ReaderError> {
    let deadline = Instant::now() + timeout;
    loop {
        let holdings = survey(context, readers)?;
        let purses: Vec<&CString> = readers
            .iter()
            .zip(&holdings)
            .filter(|(_, holding)| matches!(holding, Holding::Purse { .. }))
            .map(|(name, _)| name)
            .collect();
        match purses.as_slice() {
            [only] => return Ok((*only).clone()),
            [] if Instant::now() >= deadline => {
                return Err(ReaderError::NoPurseReader {
                    readers: describe(readers, &holdings),
                })
            }
            [] => std::thread::sleep(SURVEY_INTERVAL.min(deadline - Instant::now())),
            _ => {
                return Err(ReaderError::SeveralPurseReaders {
                    readers: describe(readers, &holdings),
                })
            }
        }
    }
}

/// Waits until one of `readers` holds a responsive card; returns its name.
fn wait_for_card(
    context: &Context,
    readers: &[CString],
    timeout: Duration,
) -> Result<CString, ReaderError> {
    let deadline = Instant::now() + timeout;
    let mut states: Vec<ReaderState> = readers
        .iter()
        .map(|name| ReaderState::new(name.clone(), State::UNAWARE))
        .collect();
    loop {
        // With UNAWARE (first round) this returns at once with the current states.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(STATUS_WAIT_SLICE);
        match context.get_status_change(wait, &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(error) => return Err(transport("SCardGetStatusChange", None, error)),
        }
        if let Some(ready) = states.iter().find(|state| {
            let event = state.event_state();
            event.contains(State::PRESENT) && !event.contains(State::MUTE)
        }) {
            return Ok(ready.name().to_owned());
        }
        if Instant::now() >= deadline {
            return Err(ReaderError::NoCard);
        }
        for state in &mut states {
            state.sync_current_state();
        }
    }
}

impl CardReader for PcscReader {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        if self.card.is_none() {
            // After a removal the next command finds the card again if it is back.
            self.connect()?;
        }
        let card = self.card.as_mut().ok_or(ReaderError::NoCard)?;
        let mut buffer = vec![0u8; RECEIVE_BUFFER_LEN];
        match card.transmit(apdu, &mut buffer) {
            // vpcd answers an empty response when the card vanished mid-command: that is a
            // removal, not a malformed answer (every real answer carries a status word).
            Ok([]) => {
                self.card = None;
                Err(ReaderError::CardRemoved)
            }
            Ok(response) => Ok(response.to_vec()),
            Err(pcsc::Error::ResetCard) => {
                // Someone reset the card: this session is over, but the handle can be kept.
                if card
                    .reconnect(
                        ShareMode::Shared,
                        Protocols::T0 | Protocols::T1,
                        Disposition::LeaveCard,
                    )
                    .is_err()
                {
                    self.card = None;
                }
                Err(ReaderError::CardRemoved)
            }
            Err(error) if card_gone(error) => {
                self.card = None;
                Err(ReaderError::CardRemoved)
            }
            Err(error) => Err(transport("SCardTransmit", Some(&self.name), error)),
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names() -> Vec<String> {
        vec![
            "Virtual PCD 00 00".to_owned(),
            "Virtual PCD 00 01".to_owned(),
            "ACS ACR39U ICC Reader 01 00".to_owned(),
        ]
    }

    #[test]
    fn selectors_pick_by_index_or_name() {
        assert_eq!(select_readers(&names(), None), vec![0, 1, 2]);
        assert_eq!(select_readers(&names(), Some("2")), vec![2]);
        assert_eq!(select_readers(&names(), Some("virtual pcd")), vec![0, 1]);
        assert_eq!(select_readers(&names(), Some("Virtual PCD 00 01")), vec![1]);
        assert_eq!(select_readers(&names(), Some("ACR39")), vec![2]);
        assert!(select_readers(&names(), Some("Gemalto")).is_empty());
        // A number that is no index may still be part of a name.
        assert_eq!(select_readers(&names(), Some("39")), vec![2]);
        assert!(select_readers(&[], Some("0")).is_empty());
    }

    #[test]
    fn holdings_and_the_reader_list_say_what_each_reader_holds() {
        let readers = [
            CString::new("Virtual PCD 00 00").unwrap(),
            CString::new("Virtual PCD 00 01").unwrap(),
        ];
        let holdings = [
            Holding::NoCard,
            Holding::Purse {
                atr: vec![0x3B],
                card_id: Some("C000000000000001".to_owned()),
            },
        ];
        assert_eq!(
            describe(&readers, &holdings),
            "readers: 0: \"Virtual PCD 00 00\" holds no card; 1: \"Virtual PCD 00 01\" holds \
             valuecard card C000000000000001"
        );
        let other = Holding::OtherCard {
            atr: vec![0x3B, 0x00],
            select_sw: 0x6A82,
        };
        assert_eq!(
            other.to_string(),
            "a card without the valuecard purse (ATR 3B00, SELECT answered 6A82)"
        );
        assert_eq!(
            select_purse_apdu(),
            hex_bytes("00A4040008F05643505552534500")
        );
    }

    fn hex_bytes(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn removal_and_reset_are_card_removed_the_rest_is_transport() {
        for error in [
            pcsc::Error::RemovedCard,
            pcsc::Error::ResetCard,
            pcsc::Error::UnpoweredCard,
            pcsc::Error::NoSmartcard,
        ] {
            assert!(card_gone(error), "{error:?}");
        }
        for error in [
            pcsc::Error::CommError,
            pcsc::Error::NotTransacted,
            pcsc::Error::Timeout,
        ] {
            assert!(!card_gone(error), "{error:?}");
        }
        let ReaderError::Transport(message) = transport(
            "SCardTransmit",
            Some("Virtual PCD 00 00"),
            pcsc::Error::CommError,
        ) else {
            unreachable!()
        };
        assert!(message.starts_with("PC/SC SCardTransmit on \"Virtual PCD 00 00\": "));
        let ReaderError::Transport(message) =
            transport("SCardEstablishContext", None, pcsc::Error::NoService)
        else {
            unreachable!()
        };
        assert!(message.contains("pcscd"), "{message}");
    }
}
