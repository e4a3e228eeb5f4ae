//! `valuecard card attach` and `valuecard memcard attach`: put a card image (a purse card
//! or a memory card) into a PC/SC reader. The card is served to
//! vsmartcard's virtual reader driver vpcd (loaded by pcscd) until the process is
//! interrupted or terminated; every PC/SC application then sees it in vpcd's reader slot.
//!
//! The `--danger-*` options inject faults for tests of terminals: the bridge drops its
//! connection to vpcd at a chosen command APDU, which pcscd and the terminal see as the card
//! being pulled out, and the process exits. Attaching the same image again is the card's
//! next power-up.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use valuecard_card::{CardError, FileCard};
use valuecard_reader::vpcd::{BridgeEvent, InjectedDrop, VpcdBridge};
use valuecard_reader::EmulatedCard;

/// Fault injection, for tests of what a terminal does when the card leaves mid-command.
/// Named `danger`: a card served this way misbehaves on purpose.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DangerArgs {
    /// DANGER, for tests: when the Nth command APDU arrives (counted from 1 since the start),
    /// drop the connection to vpcd before the card sees it (to pcscd and the terminal, the
    /// card was pulled out), then exit.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..),
        conflicts_with = "danger_drop_after_commit"
    )]
    pub danger_drop_after: Option<u64>,
    /// DANGER, for tests: let the card process the Nth command APDU (counted from 1 since
    /// the start) and commit what it changes, then drop the connection to vpcd instead of
    /// answering, and exit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub danger_drop_after_commit: Option<u64>,
}

impl DangerArgs {
    fn injected_drop(&self) -> Option<InjectedDrop> {
        match (self.danger_drop_after, self.danger_drop_after_commit) {
            (Some(n), _) => Some(InjectedDrop::BeforeApdu(n)),
            (None, Some(n)) => Some(InjectedDrop::AfterApdu(n)),
            (None, None) => None,
        }
    }
}

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

pub fn run(
    card_path: &Path,
    vpcd: &str,
    slot: u16,
    verbose: bool,
    danger: &DangerArgs,
) -> Result<ExitCode, String> {
    let path = card_path.to_path_buf();
    let target = Target {
        card_path,
        vpcd,
        slot,
        verbose,
        danger,
    };
    serve(
        &target,
        move || FileCard::open_file(&path),
        |card: &FileCard| {
            format!(
                "card {} ({:?})",
                card.state()
                    .card_id()
                    .map_or_else(|| "without an ID".to_owned(), |id| id.to_string()),
                card.state().card_state()
            )
        },
    )
}

/// Where and how a card image is attached.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub card_path: &'a Path,
    pub vpcd: &'a str,
    pub slot: u16,
    pub verbose: bool,
    pub danger: &'a DangerArgs,
}

/// Serves the card `open` opens (a purse card or a memory card) to vpcd until interrupted;
/// `describe` names it in the first line on stderr.
pub fn serve<C, F>(
    target: &Target<'_>,
    open: F,
    describe: impl Fn(&C) -> String,
) -> Result<ExitCode, String>
where
    C: EmulatedCard,
    F: FnMut() -> Result<C, CardError>,
{
    let Target {
        card_path,
        vpcd,
        slot,
        verbose,
        danger,
    } = *target;
    let addr = slot_address(vpcd, slot)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled ends the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .map_err(|error| format!("installing the signal handler: {error}"))?;
    }

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
    let injected_drop = danger.injected_drop();
    if let Some(drop) = injected_drop {
        bridge = bridge.with_injected_drop(drop);
    }
    let (card, atr) = match bridge.card() {
        Some(card) => (describe(card), hex::encode_upper(card.atr())),
        None => ("card (not open)".to_owned(), String::new()),
    };
    eprintln!(
        "valuecard attach: {card} from {label}, ATR {atr}; serving it to vpcd at {addr} \
         (reader slot {slot}) until interrupted",
    );
    if let Some(drop) = injected_drop {
        let how = match drop {
            InjectedDrop::BeforeApdu(_) => "before the card sees it",
            InjectedDrop::AfterApdu(_) => "after the card processed it, instead of its answer",
        };
        eprintln!(
            "valuecard attach: DANGER: will drop the connection at command APDU {}, {how}, \
             and exit",
            drop.apdu()
        );
    }
    bridge
        .run_until(&stop)
        .map_err(|error| format!("{label}: {error}"))?;
    if bridge.dropped_on_purpose() {
        eprintln!(
            "valuecard attach: dropped the connection on purpose; the card is out of the \
             reader (attach the image again to power it up)"
        );
    } else {
        eprintln!("valuecard attach: stopped; the card is out of the reader");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct DangerCli {
        #[command(flatten)]
        danger: DangerArgs,
    }

    fn parse_danger(args: &[&str]) -> Result<Option<InjectedDrop>, clap::Error> {
        use clap::Parser;
        let cli = DangerCli::try_parse_from(std::iter::once("attach").chain(args.iter().copied()))?;
        Ok(cli.danger.injected_drop())
    }

    #[test]
    fn danger_options_choose_the_drop() {
        assert_eq!(parse_danger(&[]).unwrap(), None);
        assert_eq!(
            parse_danger(&["--danger-drop-after", "2"]).unwrap(),
            Some(InjectedDrop::BeforeApdu(2))
        );
        assert_eq!(
            parse_danger(&["--danger-drop-after-commit", "3"]).unwrap(),
            Some(InjectedDrop::AfterApdu(3))
        );
        assert!(parse_danger(&["--danger-drop-after", "0"]).is_err());
        assert!(parse_danger(&[
            "--danger-drop-after",
            "1",
            "--danger-drop-after-commit",
            "1"
        ])
        .is_err());
    }

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
