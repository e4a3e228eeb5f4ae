//! PC/SC readers (feature `pcsc`): a real card in a real reader, or a valuecard card served
//! by the vpcd bridge, through pcsc-lite (`libpcsclite`, Debian `libpcsclite-dev`) or
//! WinSCard.
//!
//! [`PcscReader`] picks a reader by name or index, waits for a card, connects in shared mode
//! with T=0 or T=1, and implements [`CardReader`]. Errors that mean the card went away or
//! was reset under the connection become [`ReaderError::CardRemoved`]; everything else
//! becomes [`ReaderError::Transport`] with the PC/SC call and reader named.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};

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
    /// readers, the first that holds a card is used.
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
        let reader = wait_for_card(&context, &chosen, timeout)?;
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
