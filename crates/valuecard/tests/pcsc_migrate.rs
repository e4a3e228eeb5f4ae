//! The holder's client moving a chip through PC/SC readers (seed 002): `valuecard card
//! attach` serves the old chip in vpcd's slot 0 and the new chip in slot 1, and `valuecard
//! migrate --from-reader` uploads its three services while the providers and the move
//! server run as programs; the old chip leaves its reader in the middle of the upload and
//! the same command, run again once it is back, carries the move on; `--to-reader`
//! downloads them into the new chip, which then pays while the old one is refused.
//!
//! Needs pcscd with vpcd (`scripts/start-pcscd.sh`) and the `pcsc` feature
//! (`cargo test -p valuecard --features pcsc --test pcsc_migrate`); says `SKIPPED: ...` on
//! stderr and passes without them. It takes the readers lock of tests/common/pcsc.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::moves::{session, MoveSite, PASSWORD};
use common::pcsc::{reader_index, start, Attached, Needs};
use serde_json::Value;

#[test]
fn a_chip_moves_between_two_pcsc_readers_and_survives_leaving_its_reader() {
    const TEST: &str = "a_chip_moves_between_two_pcsc_readers_and_survives_leaving_its_reader";
    let Some(_readers) = start(TEST, Needs::PcscFeature) else {
        return;
    };
    let site = MoveSite::with_center(&[("old.img", "30.00"), ("new.img", "2.00")]);
    site.init_moves(&[]);
    let _services = site.services();
    site.issue_services("old.img");
    site.holder_with_chips("sachiko", &["old.img", "new.img"]);
    let (old, new) = (site.path("old.img"), site.path("new.img"));

    // The old chip leaves its reader at its sixth command of the upload (after SELECT and
    // the first steps): the holder is told to present it again, and nothing is lost.
    let mut leaving = Attached::start_in_slot(
        &old,
        0,
        site.path("attach-old-leaving.log"),
        &["--danger-drop-after", "6"],
    );
    let reader0 = reader_index(0);
    let cut = site.migrate("sachiko", &["--from-reader", &reader0], PASSWORD);
    assert!(!cut.status.success(), "{}", cut.stdout);
    assert!(
        cut.stderr.contains("run the same command again"),
        "{}",
        cut.stderr
    );
    leaving.wait_exit(Duration::from_secs(10), "its injected drop");
    drop(leaving);

    // Back in its reader: the same command carries the upload on to its end.
    let mut old_slot = Attached::start_in_slot(&old, 0, site.path("attach-old.log"), &[]);
    let uploaded = session(&site.migrate("sachiko", &["--from-reader", &reader0], PASSWORD));
    assert_eq!(uploaded["mode"], "upload", "{uploaded}");
    assert_eq!(uploaded["state"], "uploaded", "{uploaded}");

    // The new chip in the second reader: the download, every copy cleared.
    let mut new_slot = Attached::start_in_slot(&new, 1, site.path("attach-new.log"), &[]);
    let reader1 = reader_index(1);
    assert_ne!(reader0, reader1);
    let done = session(&site.migrate("sachiko", &["--to-reader", &reader1], PASSWORD));
    assert_eq!(done["state"], "done", "{done}");
    let services = done["services"].as_array().unwrap();
    assert_eq!(services.len(), 3, "{done}");
    assert!(
        services.iter().all(|service| service["state"] == "cleared"),
        "{done}"
    );
    old_slot.terminate();
    new_slot.terminate();

    // The images the readers served: the new chip pays with the moved value, the old one
    // is refused.
    let paid = site.purchase("new.img", "1.00");
    assert!(paid.status.success(), "{}", paid.stderr);
    let receipt: Value = serde_json::from_str(&paid.stdout).unwrap();
    assert_eq!(receipt["balance_after"], 3_000 + 200 - 100, "{receipt}");
    assert!(!site.purchase("old.img", "1.00").status.success());
}
