//! The holder's side of a move: a card reader and the move server's next command, nothing
//! else. It never reads what it carries: every command comes from the server, every answer
//! goes back to it.

use valuecard_core::messages::services::{ServiceCode, ServiceKind};
use valuecard_reader::{CardReader, ReaderError};

pub use crate::server::engine::{Mode, Outcome, SessionId};
use crate::server::{MoveError, Next, Progress, Started};

/// How the client reaches the move server: in this process or over HTTPS.
pub trait MoveServerLink {
    fn start(&self, user_id: &str, password: &str, mode: Mode) -> Result<Started, MoveError>;
    fn next(&self, session: &SessionId, response: &[u8]) -> Result<Next, MoveError>;
}

/// Why a run of the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused or failed (its words).
    #[error("{0}")]
    Server(#[from] MoveError),
    /// The chip could not be reached (pulled out, reader gone).
    #[error("the chip could not be reached: {0}")]
    Reader(#[from] ReaderError),
}

/// One run: the session from start to its end, reporting each step to `progress`.
pub fn run(
    server: &dyn MoveServerLink,
    reader: &mut dyn CardReader,
    user_id: &str,
    password: &str,
    mode: Mode,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, ClientError> {
    let Started { session, mut apdu } = server.start(user_id, password, mode)?;
    loop {
        let response = reader.transmit_raw(&apdu)?;
        match server.next(&session, &response)? {
            Next::Apdu {
                apdu: next,
                progress: step,
            } => {
                progress(&step);
                apdu = next;
            }
            Next::Finished(outcome) => return Ok(outcome),
        }
    }
}

/// A service as the holder reads it on the screen.
pub fn service_label(service: ServiceCode, kind: ServiceKind) -> String {
    format!("{} (service {service})", kind.name())
}
