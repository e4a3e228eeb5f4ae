//! A value move (seed 002) whose programs are killed (SIGKILL) at arbitrary moments: the
//! move server, a provider or the holder's client dies while the client runs, in the middle
//! of a request, a database transaction or a card write as it happens to fall. Each time
//! the killed service is started again on its database and the holder runs the same
//! command again, until the move is done. At the end the new chip holds the value once,
//! the old chip is refused, and the transfer SAMs hold no copy.
//!
//! The moments are fixed delays after the client starts, so that a run is reproducible in
//! intent; where exactly each falls depends on the machine, which is the point: the test
//! counts how many kills landed while the client ran and requires several.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::moves::{MoveSite, Service, PASSWORD, SERVICES};
use serde_json::Value;

/// Who is killed in each round, in turn.
const VICTIMS: [&str; 5] = ["server", "0102", "client", "0001", "0203"];

/// How long after the client starts each round's kill comes (ms). A whole move takes a few
/// hundred milliseconds here; each run goes on from where the last one was cut, so the same
/// delay falls on later steps as the move advances.
const DELAYS_MS: [u64; 20] = [
    30, 45, 60, 75, 90, 105, 120, 40, 70, 100, 130, 50, 80, 110, 140, 60, 90, 120, 150, 200,
];

#[test]
fn a_move_survives_its_programs_killed_at_any_moment() {
    let site = MoveSite::with_center(&[("old.img", "40.00"), ("new.img", "3.00")]);
    site.init_moves(&[]);
    let mut services: HashMap<&str, Service> = SERVICES
        .into_iter()
        .map(|service| (service, site.provider(service)))
        .collect();
    services.insert("server", site.server());
    site.issue_services("old.img");
    site.holder_with_chips("kenji", &["old.img", "new.img"]);
    let (old, new) = (site.arg("old.img"), site.arg("new.img"));
    let args = ["--card", old.as_str(), "--to-card", new.as_str()];

    let mut landed = Vec::new();
    let mut done: Option<Value> = None;
    for (round, delay) in DELAYS_MS.into_iter().enumerate() {
        let victim = VICTIMS[round % VICTIMS.len()];
        let mut client = site.spawn_migrate("kenji", &args, PASSWORD);
        std::thread::sleep(Duration::from_millis(delay));
        if client.try_wait().unwrap().is_none() {
            landed.push(format!("{victim} at {delay} ms"));
            if victim == "client" {
                client.kill().unwrap();
            } else {
                services.remove(victim).unwrap().kill();
            }
        }
        let output = client.wait_with_output().unwrap();
        if victim != "client" && !services.contains_key(victim) {
            let restarted = if victim == "server" {
                site.server()
            } else {
                site.provider(victim)
            };
            services.insert(victim, restarted);
        }
        if output.status.success() {
            let sessions: Value = serde_json::from_slice(&output.stdout).unwrap();
            let last = sessions["sessions"].as_array().unwrap().last().cloned();
            if let Some(session) = last.filter(|s| s["state"] == "done") {
                done = Some(session);
                break;
            }
        } else {
            // A failure the client reports is worded for the holder, never a panic.
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!stderr.contains("panicked"), "round {round}: {stderr}");
        }
    }
    // Without more kills, the same command finishes whatever is left.
    for _ in 0..3 {
        if done.is_some() {
            break;
        }
        let output = site
            .spawn_migrate("kenji", &args, PASSWORD)
            .wait_with_output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sessions: Value = serde_json::from_slice(&output.stdout).unwrap();
        done = sessions["sessions"]
            .as_array()
            .unwrap()
            .last()
            .cloned()
            .filter(|s| s["state"] == "done");
    }
    let done = done.expect("the move never finished");
    println!("kills that landed while the client ran: {landed:?}");
    assert!(
        landed.len() >= 4,
        "too few kills landed while the client ran: {landed:?}"
    );
    let services_moved = done["services"].as_array().unwrap();
    assert_eq!(services_moved.len(), 3, "{done}");
    assert!(
        services_moved.iter().all(|s| s["state"] == "cleared"),
        "{done}"
    );

    // One chip with the value: the new one pays with old + new, the old one is refused;
    // the transfer SAMs hold nothing.
    let paid = site.purchase("new.img", "1.00");
    assert!(paid.status.success(), "{} (kills: {landed:?})", paid.stderr);
    let receipt: Value = serde_json::from_str(&paid.stdout).unwrap();
    assert_eq!(receipt["balance_after"], 4_000 + 300 - 100, "{receipt}");
    assert!(!site.purchase("old.img", "1.00").status.success());
    drop(services);
    assert_eq!(site.copies_held(), 0);
}
