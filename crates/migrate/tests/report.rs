//! The purse provider's report to the center: a completed move leaves exactly one
//! unreported purse move whose two signatures verify (the old chip's export under its
//! certified key, the new chip's record under the transfer SAM's); a report the center
//! takes marks it reported, one it refuses stays for the next attempt, and a failed call
//! changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_card::testing;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{CenterError, UploadReceipt};
use valuecard_core::messages::services::PurseMove;
use valuecard_migrate::provider::report::{report_pending, unreported, PurseMoveSink};

/// A center that answers as told and keeps what it was sent.
struct Center {
    received: Vec<PurseMove>,
    answer: fn(&[PurseMove]) -> Result<UploadReceipt, CenterError>,
}

impl PurseMoveSink for Center {
    fn report(&mut self, moves: &[PurseMove]) -> Result<UploadReceipt, CenterError> {
        self.received.extend_from_slice(moves);
        (self.answer)(moves)
    }
}

fn stored(moves: &[PurseMove]) -> Result<UploadReceipt, CenterError> {
    Ok(UploadReceipt {
        stored: moves.len() as u32,
        ..UploadReceipt::default()
    })
}

fn refused(moves: &[PurseMove]) -> Result<UploadReceipt, CenterError> {
    Ok(UploadReceipt {
        refused: moves
            .iter()
            .map(|item| (item.record.writer_sequence, "refused".to_owned()))
            .collect(),
        ..UploadReceipt::default()
    })
}

fn down(_: &[PurseMove]) -> Result<UploadReceipt, CenterError> {
    Err(CenterError::Unreachable("the center is down".into()))
}

#[test]
fn a_completed_move_is_reported_once_with_both_signatures_verifying() {
    let mut world = World::new();
    world.upload().unwrap();
    let purse = world.provider(PURSE).clone();
    // Nothing to report before the value reached the new chip.
    assert!(purse
        .with_db(|_, db| unreported(db, 10))
        .unwrap()
        .is_empty());
    world.download().unwrap();

    let pending = purse.with_db(|_, db| unreported(db, 10)).unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let report = &pending[0];
    assert_eq!(report.source, CardId(testing::card_id(1).0));
    assert_eq!(report.destination, CardId(testing::card_id(2).0));
    assert_eq!(report.amount.minor(), OLD_BALANCE);
    assert_eq!(
        report.record.balance_after.minor(),
        OLD_BALANCE + NEW_BALANCE
    );
    let old_key = testing::card_keys(1).signing.public_key();
    let transfer_key = testing::service_transfer(1).0.public_key();
    report.verify(&old_key, &transfer_key).unwrap();
    // Under any other key, either signature fails.
    assert!(report.verify(&transfer_key, &transfer_key).is_err());
    assert!(report.verify(&old_key, &old_key).is_err());

    // The center down: nothing marked.
    let mut center = Center {
        received: Vec::new(),
        answer: down,
    };
    assert!(purse
        .with_db(|_, db| report_pending(db, &mut center))
        .is_err());
    assert_eq!(purse.with_db(|_, db| unreported(db, 10)).unwrap().len(), 1);

    // Refused: logged, kept for the next attempt, and the pass still ends.
    center.answer = refused;
    let summary = purse
        .with_db(|_, db| report_pending(db, &mut center))
        .unwrap();
    assert_eq!((summary.reported, summary.refused.len()), (0, 1));
    assert_eq!(purse.with_db(|_, db| unreported(db, 10)).unwrap().len(), 1);

    // Taken: marked, and the next pass sends nothing.
    center.answer = stored;
    let summary = purse
        .with_db(|_, db| report_pending(db, &mut center))
        .unwrap();
    assert_eq!(summary.reported, 1);
    assert!(purse
        .with_db(|_, db| unreported(db, 10))
        .unwrap()
        .is_empty());
    let sent = center.received.len();
    let summary = purse
        .with_db(|_, db| report_pending(db, &mut center))
        .unwrap();
    assert_eq!(summary.reported, 0);
    assert_eq!(center.received.len(), sent);
    assert!(center.received.iter().all(|item| item == report));

    // The other providers have nothing to report: only the purse moves as value.
    for service in [TICKETS, POINTS] {
        assert!(world
            .provider(service)
            .with_db(|_, db| unreported(db, 10))
            .unwrap()
            .is_empty());
    }
}
