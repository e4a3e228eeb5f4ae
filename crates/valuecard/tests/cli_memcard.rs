//! `valuecard memcard issue` and `memcard info`: memory card images with IDs that never meet
//! a purse card's, and what a card holds as an outside reader sees it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{run, run_json, valuecard, Site};

#[test]
fn memory_cards_get_their_own_ids_and_info_shows_a_new_card() {
    let site = Site::new();
    let first = site.root.join("memcard-1.img");
    let second = site.root.join("memcard-2.img");
    let purse = site.root.join("purse.img");
    let issue = |out: &std::path::Path| {
        run_json(
            valuecard()
                .args(["memcard", "issue", "--json", "--data"])
                .arg(&site.data)
                .arg("--out")
                .arg(out),
        )
    };
    let one = issue(&first);
    let two = issue(&second);
    let purse_card = run_json(
        valuecard()
            .args(["card", "issue", "--json", "--data"])
            .arg(&site.data)
            .arg("--out")
            .arg(&purse),
    );
    let ids: Vec<String> = [&one, &two, &purse_card]
        .iter()
        .map(|report| report["card"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], "C100000000000001");
    assert_eq!(ids[1], "C100000000000002");
    assert!(
        ids[2].starts_with("C0"),
        "purse card IDs begin C0: {}",
        ids[2]
    );
    assert_eq!(one["counter"], 65_536);

    let info = run_json(
        valuecard()
            .args(["memcard", "info", "--json", "--card"])
            .arg(&first),
    );
    assert_eq!(info["card"], ids[0]);
    assert_eq!(info["counter"], 65_536);
    assert_eq!(info["value"]["format"], "blank");
    assert_eq!(info["signature_present"], false);
    assert!(info["writer_certificate"].is_null());

    // The text form says the same.
    let text = run(valuecard().args(["memcard", "info", "--card"]).arg(&first));
    assert!(text.status.success(), "{}", text.stderr);
    assert!(text.stdout.contains(&ids[0]), "{}", text.stdout);
    assert!(text.stdout.contains("blank"), "{}", text.stdout);

    // `card apdu` drives a memory card image too, with the commands of docs/memory-card.md.
    let apdu = run_json(
        valuecard()
            .args(["card", "apdu", "--json", "--card"])
            .arg(&second)
            .args(["FFCA000000", "FFD6001001 01", "FFD6000001EE"]),
    );
    let exchanges = apdu["exchanges"].as_array().unwrap();
    assert_eq!(exchanges[0]["data"], ids[1]);
    assert_eq!(exchanges[0]["sw"], "9000");
    assert_eq!(exchanges[1]["sw"], "9000");
    assert_eq!(exchanges[2]["sw"], "6981");
    let written = run_json(
        valuecard()
            .args(["memcard", "info", "--json", "--card"])
            .arg(&second),
    );
    assert_eq!(
        written["counter"], 65_535,
        "the write was committed to the image"
    );
    // Format 01 and zeros after it: a value of 0.00 on 1970-01-01, which no machine signed.
    assert_eq!(written["value"]["format"], "plain");
    assert_eq!(written["value"]["amount"], 0);
    assert_eq!(written["signature_present"], false);

    // An image file copied keeps the card ID in its ROM: a copy is the same card, never a
    // new one.
    let copy = site.root.join("copy.img");
    std::fs::copy(&first, &copy).unwrap();
    let copied = run_json(
        valuecard()
            .args(["memcard", "info", "--json", "--card"])
            .arg(&copy),
    );
    assert_eq!(copied["card"], ids[0]);
}

#[test]
fn issue_and_info_refuse_what_they_must() {
    let site = Site::new();
    let card = site.root.join("memcard.img");
    std::fs::write(&card, b"something else").unwrap();
    let refused = run(valuecard()
        .args(["memcard", "issue", "--data"])
        .arg(&site.data)
        .arg("--out")
        .arg(&card));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        refused.stderr.contains("never overwritten"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read(&card).unwrap(), b"something else");

    // No center keys, no card IDs.
    let elsewhere = site.root.join("no-center");
    let refused = run(valuecard()
        .args(["memcard", "issue", "--data"])
        .arg(&elsewhere)
        .arg("--out")
        .arg(site.root.join("x.img")));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        refused.stderr.contains("no center keys"),
        "{}",
        refused.stderr
    );

    // A purse card image is no memory card.
    let purse = site.root.join("purse.img");
    run_json(
        valuecard()
            .args(["card", "issue", "--json", "--data"])
            .arg(&site.data)
            .arg("--out")
            .arg(&purse),
    );
    let refused = run(valuecard().args(["memcard", "info", "--card"]).arg(&purse));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        refused.stderr.contains("holds no memory card"),
        "{}",
        refused.stderr
    );
}
