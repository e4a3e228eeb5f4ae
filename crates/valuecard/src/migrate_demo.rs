//! The value move of seed 002 in `valuecard demo`: the center certifies the move server's
//! administrative SAM and three providers' normal and transfer SAMs (the valuecard purse, a
//! transit operator's passes, a retailer's points); the old chip is issued all three
//! services; the holder moves them to a new chip through the move server over HTTPS, in two
//! sessions; the purse provider reports the move to the center. A terminal refuses the old
//! chip during and after the move, and accepts the new one.

use std::sync::Arc;

use rand_core::OsRng;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{AreaContent, ServiceCode, ServiceOperation, Ticket};
use valuecard_core::money::Amount;
use valuecard_migrate::client::{self, Mode, Outcome};
use valuecard_migrate::provider::report::report_pending;
use valuecard_migrate::provider::Provider;
use valuecard_migrate::setup::{demo_services, MoveKeys};
use valuecard_migrate_http::embedded::{MoveOptions, MoveSystem, ProviderSetup};
use valuecard_reader::CardReader;
use valuecard_settle_http::DatabaseLocation;
use valuecard_sim::World;

/// The holder's account at the move server.
const USER: &str = "demo-holder";
const PASSWORD: &str = "a long demo passphrase";

/// What the move showed, for the account and the JSON report.
pub struct MoveShow {
    pub lines: Vec<String>,
    pub migrations: Vec<serde_json::Value>,
    /// Whether everything the move promises held (each service usable on the new chip only,
    /// the value on the new card at the center, no copy left, the old chip refused).
    pub held: bool,
}

fn content_line(content: &AreaContent) -> String {
    content.describe()
}

/// Moves every service of the chip in `old` to the chip in `new` (both issued by the
/// world's center) and shows the old chip refused and the new one accepted at terminal 1.
pub fn demo(
    world: &mut World,
    old: &mut dyn CardReader,
    new: &mut dyn CardReader,
    old_id: CardId,
    new_id: CardId,
) -> Result<MoveShow, String> {
    let today = world.today();
    let mut rng = OsRng;
    let keys = MoveKeys::certify(&mut world.center, &demo_services(), &mut rng)
        .map_err(|e| e.to_string())?;
    let admin = Arc::new(keys.admin().map_err(|e| e.to_string())?);
    let mut lines = Vec::new();
    let mut providers: Vec<(String, Arc<Provider>)> = Vec::new();
    for offer in keys.offers() {
        let provider = Arc::new(keys.provider(offer.code()).map_err(|e| e.to_string())?);
        providers.push((offer.name.clone(), provider));
    }
    lines.push(format!(
        "Move server's administrative SAM and {} providers' normal and transfer SAMs certified by the center (roles 0C, 0A, 0B)",
        providers.len()
    ));

    // The old chip is issued every service, and used once in each of the two others.
    for (name, provider) in &providers {
        provider
            .issue_area(admin.as_ref(), old, today, &mut rng)
            .map_err(|e| format!("issuing {name}: {e}"))?;
    }
    let ticket = Ticket {
        ticket_id: 0x2026_1201,
        product: 0x0031,
        valid_from: today,
        valid_until: today.add_days(30),
        rides_left: Some(10),
    };
    let operations = [
        ServiceOperation::IssueTicket(ticket),
        ServiceOperation::EarnPoints {
            points: 1_200,
            expiry: today.add_days(365),
        },
    ];
    let mut before = Vec::new();
    for ((name, provider), operation) in providers.iter().skip(1).zip(&operations) {
        let content = provider
            .normal_use(old, Some(operation), &mut rng)
            .map_err(|e| format!("{name}: {e}"))?;
        before.push((provider.service(), content.clone()));
        lines.push(format!(
            "Card {old_id}: {name} in normal use on main keys: {}",
            content_line(&content)
        ));
    }

    let system = MoveSystem::start(
        admin,
        providers
            .iter()
            .map(|(_, provider)| ProviderSetup {
                provider: provider.clone(),
                database: DatabaseLocation::Memory,
            })
            .collect(),
        &MoveOptions::in_memory(today),
    )
    .map_err(|e| e.to_string())?;
    let server = system.client();
    lines.push(format!(
        "Move server at {} (HTTPS) with the providers behind it; the holder's device talks to it only",
        system.url()
    ));
    server
        .create_user(USER, PASSWORD)
        .map_err(|e| e.to_string())?;
    for card in [old_id, new_id] {
        server
            .register_chip(USER, PASSWORD, &card)
            .map_err(|e| e.to_string())?;
    }

    let mut steps = 0usize;
    let uploaded = client::run(&server, old, USER, PASSWORD, Mode::Upload, &mut |_| {
        steps += 1
    })
    .map_err(|e| format!("the upload: {e}"))?;
    lines.push(format!(
        "Upload from card {old_id} (S1-S8): {} APDUs relayed; {}",
        steps + 1,
        services_line(&uploaded)
    ));
    let during =
        world.terminals[0].purchase(&mut &mut *old, Amount::new(100).unwrap_or(Amount::ZERO));
    lines.push(format!(
        "Terminal {} with the old chip during the move: {}",
        world.terminals[0].device_id(),
        refusal_line(&during.as_ref().map(|_| ()).map_err(|e| e.to_string()))
    ));

    let mut steps = 0usize;
    let done = client::run(&server, new, USER, PASSWORD, Mode::Download, &mut |_| {
        steps += 1
    })
    .map_err(|e| format!("the download: {e}"))?;
    lines.push(format!(
        "Download into card {new_id} (S9-S17): {} APDUs relayed; {}",
        steps + 1,
        services_line(&done)
    ));

    // The purse provider reports the move; the center lists the old card.
    let purse_pool = system
        .provider_pool(ServiceCode(0x0001))
        .ok_or("the purse provider is not running")?
        .clone();
    let summary = purse_pool
        .run_blocking(|db| report_pending(db, &mut world.center))
        .map_err(|e| e.to_string())?;
    let recorded = world.center.move_from(&old_id).map_err(|e| e.to_string())?;
    lines.push(format!(
        "The purse provider reported {} move(s) to the center: {}",
        summary.reported,
        match &recorded {
            Some(recorded) => format!(
                "{} moved from card {} to card {}, the old card listed as migrated",
                recorded.amount, recorded.source, recorded.destination
            ),
            None => "NOT RECORDED".into(),
        }
    ));
    let copies_left = system.copies_held().map_err(|e| e.to_string())?;
    system.shutdown();

    valuecard_sim::scenarios::sync_all(world).map_err(|e| e.to_string())?;
    let after =
        world.terminals[0].purchase(&mut &mut *old, Amount::new(100).unwrap_or(Amount::ZERO));
    lines.push(format!(
        "Terminal {} with the old chip after the move: {}",
        world.terminals[0].device_id(),
        refusal_line(&after.as_ref().map(|_| ()).map_err(|e| e.to_string()))
    ));
    let accepted = world.terminals[0]
        .purchase(&mut &mut *new, Amount::new(250).unwrap_or(Amount::ZERO))
        .map_err(|e| format!("the new chip at the terminal: {e}"))?;
    lines.push(format!(
        "Terminal {} with the new chip: sold {}, balance {} -> {}",
        world.terminals[0].device_id(),
        accepted.amount,
        accepted.balance_before,
        accepted.balance_after
    ));

    // Each service on the new chip in normal use; the same content as on the old one.
    let mut arrived = true;
    for (service, content) in &before {
        let provider = providers
            .iter()
            .find(|(_, p)| p.service() == *service)
            .map(|(_, p)| p.clone())
            .ok_or("a provider went missing")?;
        let now = provider
            .normal_use(new, None, &mut rng)
            .map_err(|e| format!("service {service} on the new chip: {e}"))?;
        arrived &= now == *content;
    }
    let held = during.is_err()
        && after.is_err()
        && done.state == "done"
        && recorded.is_some()
        && copies_left == 0
        && arrived;
    let migrations = vec![serde_json::json!({
        "move_id": hex::encode(done.move_id),
        "old_card": old_id.to_string(),
        "new_card": new_id.to_string(),
        "state": done.state,
        "services": done.services.iter().map(|(service, kind, state)| serde_json::json!({
            "service": service.to_string(),
            "kind": kind.name(),
            "state": state,
        })).collect::<Vec<_>>(),
        "purse_moved": recorded.as_ref().map(|r| r.amount.minor()),
        "center_recorded": recorded.is_some(),
        "copies_left": copies_left,
        "contents_arrived": arrived,
        "old_chip_refused_during": during.is_err(),
        "old_chip_refused_after": after.is_err(),
        "new_chip_purchase": accepted.amount.minor(),
        "held": held,
    })];
    Ok(MoveShow {
        lines,
        migrations,
        held,
    })
}

fn services_line(outcome: &Outcome) -> String {
    outcome
        .services
        .iter()
        .map(|(service, kind, state)| format!("{} {service} {state}", kind.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn refusal_line(outcome: &Result<(), String>) -> String {
    match outcome {
        Err(reason) => format!("refused ({reason})"),
        Ok(()) => "NOT REFUSED".into(),
    }
}
