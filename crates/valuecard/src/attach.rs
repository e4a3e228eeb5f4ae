//! `valuecard card attach`: put a card image into a PC/SC reader. The card is served to
//! vsmartcard's virtual reader driver vpcd (loaded by pcscd) until the process is
//! interrupted or terminated; every PC/SC application then sees it in vpcd's reader slot.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use valuecard_card::FileCard;
use valuecard_reader::vpcd::{BridgeEvent, VpcdBridge, ATR};

/// `HOST:PORT` of slot 0 plus `slot` on the port.
fn slot_address(vpcd: &str, slot: u16) -> Result<String, String> {
    let (host, port) = vpcd
        .rsplit_once(':')
        .ok_or_else(|| format!("--vpcd {vpcd:?}: expected HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("--vpcd {vpcd:?}: expected HOST:PORT"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--vpcd {vpcd:?}: {port:?} is not a port number"))?;
    let port = port
        .checked_add(slot)
        .ok_or_else(|| format!("--slot {slot}: port {port} + {slot} is past 65535"))?;
    Ok(format!("{host}:{port}"))
}

/// Events worth a line on stderr: connections, power and resets, but of a failing
/// connection attempt only the first and then one in 30, and APDUs only when `verbose`.
fn worth_logging(event: &BridgeEvent, verbose: bool) -> bool {
    match event {
        BridgeEvent::ConnectFailed { attempt, .. } => *attempt == 1 || *attempt % 30 == 0,
        BridgeEvent::Apdu { .. } => verbose,
        _ => true,
    }
}

pub fn run(card_path: &Path, vpcd: &str, slot: u16, verbose: bool) -> Result<ExitCode, String> {
    let addr = slot_address(vpcd, slot)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled ends the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .map_err(|error| format!("installing the signal handler: {error}"))?;
    }

    let path = card_path.to_path_buf();
    let open = move || FileCard::open_file(&path);
    let started = Instant::now();
    let label = card_path.display().to_string();
    let mut bridge = VpcdBridge::new(addr.clone(), open)
        .map_err(|error| format!("{label}: {error}"))?
        .on_event(move |event| {
            if worth_logging(event, verbose) {
                eprintln!(
                    "[{:>9.3}s] valuecard attach: {event}",
                    started.elapsed().as_secs_f64()
                );
            }
        });
    let state = bridge.card().state();
    let card_id = state
        .card_id()
        .map_or_else(|| "without an ID".to_owned(), |id| id.to_string());
    eprintln!(
        "valuecard attach: card {card_id} ({:?}) from {label}, ATR {}; serving it to vpcd at \
         {addr} (reader slot {slot}) until interrupted",
        state.card_state(),
        hex::encode_upper(ATR),
    );
    bridge
        .run_until(&stop)
        .map_err(|error| format!("{label}: {error}"))?;
    eprintln!("valuecard attach: stopped; the card is out of the reader");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_added_to_the_port() {
        assert_eq!(
            slot_address("127.0.0.1:35963", 0).as_deref(),
            Ok("127.0.0.1:35963")
        );
        assert_eq!(
            slot_address("127.0.0.1:35963", 1).as_deref(),
            Ok("127.0.0.1:35964")
        );
        assert_eq!(slot_address("[::1]:35963", 2).as_deref(), Ok("[::1]:35965"));
        assert_eq!(
            slot_address("localhost:35963", 0).as_deref(),
            Ok("localhost:35963")
        );
        assert!(slot_address("127.0.0.1", 0).is_err());
        assert!(slot_address(":35963", 0).is_err());
        assert!(slot_address("127.0.0.1:port", 0).is_err());
        assert!(slot_address("127.0.0.1:65535", 1).is_err());
    }
}
