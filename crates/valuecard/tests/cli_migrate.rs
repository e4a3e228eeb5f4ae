//! The value move of seed 002 from the command line, each service its own process: the
//! center's service, three providers and the move server over HTTPS on 127.0.0.1. A chip
//! with three services is moved to a new chip in two sessions; on the way the holder meets a
//! wrong password, an unregistered chip and a provider that is down (run again once it is
//! back, the move goes on), and the move server is killed and restarted between the two
//! sessions. At the end the old chip is refused at a terminal, the new one pays, and the
//! center counts the value once, on the new card. The same move runs with every SAM of the
//! move system in a PKCS#11 token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::moves::{session, MoveSite, PASSWORD};
use common::run;
use serde_json::Value;

#[test]
fn a_chip_moves_to_a_new_chip_through_the_services_run_as_programs() {
    let site = MoveSite::with_center(&[
        ("old.img", "50.00"),
        ("new.img", "7.00"),
        ("stray.img", "3.00"),
    ]);
    let _center_service = site.center_service();
    let init = site.init_moves(&[]);
    assert_eq!(init["services"].as_array().unwrap().len(), 3, "{init}");
    assert_eq!(init["sams"], "software", "{init}");
    let _purse = site.provider("0001");
    let tickets = site.provider("0102");
    let _points = site.provider("0203");
    let server = site.server();
    site.issue_services("old.img");
    site.holder_with_chips("hanako", &["old.img", "new.img"]);
    let upload = |password: &str, image: &str| {
        let card = site.arg(image);
        site.migrate("hanako", &["--card", &card], password)
    };

    // A wrong password, an unregistered chip: clear words, a failure status, nothing moved.
    let wrong = upload("not the password", "old.img");
    assert!(!wrong.status.success());
    assert!(
        wrong.stderr.contains("wrong user ID or password"),
        "{}",
        wrong.stderr
    );
    let stray = upload(PASSWORD, "stray.img");
    assert!(!stray.status.success());
    assert!(stray.stderr.contains("not registered"), "{}", stray.stderr);

    // The passes' provider down: the holder is told which, and that nothing was lost.
    tickets.kill();
    let down = upload(PASSWORD, "old.img");
    assert!(!down.status.success());
    assert!(
        down.stderr.contains("service 0102 is unavailable")
            && down.stderr.contains("run the same command again"),
        "{}",
        down.stderr
    );
    // Back on its address: the same command carries the move on.
    let _tickets = site.provider("0102");
    assert_eq!(session(&upload(PASSWORD, "old.img"))["state"], "uploaded");

    // The old chip is on temporary keys: the terminal cannot sell to it.
    let refused = site.purchase("old.img", "1.00");
    assert!(!refused.status.success(), "{}", refused.stdout);

    // The move server killed and started again on its database: the download carries on.
    server.kill();
    let _server = site.server();
    let card = site.arg("new.img");
    let done = session(&site.migrate("hanako", &["--to-card", &card], PASSWORD));
    assert_eq!(done["state"], "done", "{done}");
    assert!(done["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|service| service["state"] == "cleared"));

    // The new chip pays with the moved value; the old one is still refused.
    let paid = site.purchase("new.img", "2.50");
    assert!(paid.status.success(), "{}", paid.stderr);
    let receipt: Value = serde_json::from_str(&paid.stdout).unwrap();
    assert_eq!(receipt["balance_after"], 5_000 + 700 - 250, "{receipt}");
    assert!(!site.purchase("old.img", "1.00").status.success());

    // The purse's provider reported the move to the center's service.
    let center = site.arg("center");
    let started = Instant::now();
    loop {
        let status = site.json(&["center", "status", "--data", &center]);
        if status["moves"]["moves"] == 1 {
            assert_eq!(status["moves"]["moved"], 5_000, "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the center never recorded the move: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The move system with every SAM in a PKCS#11 token (a throw-away SoftHSM2 token):
/// `migrate init --sam pkcs11:...` generates them there and records only where they are and
/// their certificates; the providers and the move server, each its own process, open them
/// from that record with the PIN from the environment; a chip with three services moves.
#[test]
fn a_move_system_with_its_sams_in_a_token() {
    use valuecard_sam_pkcs11::softhsm::{self, SoftHsmDirectory, THROWAWAY_USER_PIN};
    let Some(_module) = softhsm::module_or_skip("cli_migrate token SAMs") else {
        return;
    };
    let mut site = MoveSite::empty();
    let tokens = SoftHsmDirectory::create(&site.path("softhsm")).unwrap();
    tokens.init_token_with_util("moves").unwrap();
    site.env = vec![
        ("SOFTHSM2_CONF", tokens.conf().display().to_string()),
        ("VALUECARD_PKCS11_PIN", THROWAWAY_USER_PIN.to_owned()),
    ];
    site.issue_cards(&[("old.img", "20.00"), ("new.img", "1.00")]);
    let (center, data) = (site.arg("center"), site.arg("move"));
    let init_with = |pin: &str, object: &str| {
        run(site
            .command()
            .env("VALUECARD_PKCS11_PIN", pin)
            .args(["migrate", "init", "--center", &center, "--data", &data])
            .args(["--sam", &format!("pkcs11:token=moves;object={object}")]))
    };

    // A wrong PIN: a clear refusal, and no move system recorded.
    let wrong_pin = init_with("99999999", "move");
    assert!(!wrong_pin.status.success());
    assert!(wrong_pin.stderr.contains("PIN"), "{}", wrong_pin.stderr);
    assert!(!site.path("move/move-sams.json").exists());

    let init = site.init_moves(&["--sam", "pkcs11:token=moves;object=move"]);
    assert_eq!(init["sams"], "pkcs11", "{init}");
    let objects: Vec<&str> = init["token_objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|uri| uri.as_str().unwrap())
        .collect();
    assert_eq!(objects.len(), 7, "{init}");
    for object in ["move-admin", "move-0001-normal", "move-0102-transfer"] {
        assert!(
            objects
                .iter()
                .any(|uri| uri.ends_with(&format!("object={object}"))),
            "{object} not in {objects:?}"
        );
    }
    // The record names objects and certificates only: no key file, no PIN, no key.
    assert!(!site.path("move/move-keys.json").exists());
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(site.path("move/move-sams.json")).unwrap())
            .unwrap();
    let text = record.to_string();
    assert!(
        !text.contains(THROWAWAY_USER_PIN) && !text.contains("seed") && !text.contains("master"),
        "{text}"
    );
    let mut sams = vec![&record["admin"]];
    for provider in record["providers"].as_array().unwrap() {
        sams.extend([&provider["normal"], &provider["transfer"]]);
    }
    for sam in sams {
        let fields: Vec<&String> = sam.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["certificate", "uri"], "{sam}");
    }
    // Set up twice in one directory: refused.
    let again = init_with(THROWAWAY_USER_PIN, "other");
    assert!(
        !again.status.success() && again.stderr.contains("already holds"),
        "{}",
        again.stderr
    );

    // A provider whose token PIN is wrong does not start, and says why; a `--sam` given to
    // a service of the system is refused (its SAMs are the recorded ones).
    let refused = run(site
        .command()
        .env("VALUECARD_PKCS11_PIN", "99999999")
        .args(["provider", "serve", "--data", &data, "--service", "0102"]));
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("PIN"), "{}", refused.stderr);
    let other_sam = run(site
        .command()
        .args(["migrate", "serve", "--data", &data, "--port", "0"])
        .args(["--sam", "pkcs11:token=moves;object=move"]));
    assert!(!other_sam.status.success());
    assert!(
        other_sam.stderr.contains("not --sam"),
        "{}",
        other_sam.stderr
    );

    let _services = site.services();
    site.issue_services("old.img");
    site.holder_with_chips("taro", &["old.img", "new.img"]);
    let (old, new) = (site.arg("old.img"), site.arg("new.img"));
    let done = session(&site.migrate("taro", &["--card", &old, "--to-card", &new], PASSWORD));
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["services"].as_array().unwrap().len(), 3, "{done}");
    // The same command again (as after a crash that hid its end): the move is done.
    let again = site.migrate("taro", &["--card", &old, "--to-card", &new], PASSWORD);
    assert_eq!(session(&again)["state"], "done", "{}", again.stdout);

    let paid = site.purchase("new.img", "2.50");
    assert!(paid.status.success(), "{}", paid.stderr);
    let receipt: Value = serde_json::from_str(&paid.stdout).unwrap();
    assert_eq!(receipt["balance_after"], 2_000 + 100 - 250, "{receipt}");
    assert!(!site.purchase("old.img", "1.00").status.success());
}
