//! The whole exchange: a payment, a charge spent offline too, the preview, and a card
//! pulled before or after SETTLE.

use super::*;
use valuecard_core::messages::online::{Completion, OnlineFci, SettlementPreview};
use valuecard_core::messages::purse::PURSE_AID;

#[test]
fn an_online_payment_spends_the_purse_once_and_its_record_verifies() {
    let mut card = card_with_key(5_000);
    let fci = OnlineFci::decode(&select(&mut card, &ONLINE_AID).data).unwrap();
    assert_eq!(fci.card_id, testing::card_id(1));
    assert_eq!(fci.key_version, Some(1));
    let mut session = authenticate(&mut card);
    let id = [1; 16];
    let info = read_balance(&mut card, &mut session, id);
    assert_eq!(info.balance, amount(5_000));
    assert_eq!(info.counter, 0);
    assert_eq!(info.last_settlement, None);

    let update = update_for(&session, &info, TransactionKind::OnlinePayment, 1_250);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    let response = send(&mut card, online(ins::SETTLE, spc.clone()));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let pcn = Completion::decode(&session.open(ins::SETTLE, &response.data).unwrap()).unwrap();
    assert_eq!(pcn.settlement_id, id);
    assert_eq!(pcn.balance_after, amount(3_750));
    assert_eq!(pcn.counter, 1);

    let state = purse(&card);
    assert_eq!(state.balance, amount(3_750));
    assert_eq!(state.counter, 1);
    // The log names the store; the record names the server and verifies under its key.
    let entry = state.log.front().unwrap();
    assert_eq!(entry.party, STORE);
    assert_eq!(entry.kind, TransactionKind::OnlinePayment);
    let record = state.last_usage.as_ref().unwrap();
    let (server_key, certificate) = testing::online_server();
    server_key
        .public_key()
        .verify(
            &record.signed_message(&testing::card_id(1)),
            &record.signature,
        )
        .unwrap();
    assert_eq!(state.last_writer_certificate.as_ref(), Some(&certificate));

    // The same SPC again, in this session or in a new one, changes nothing.
    let again = send(&mut card, online(ins::SETTLE, spc.clone()));
    assert_eq!(again.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    authenticate(&mut card);
    assert_eq!(
        send(&mut card, online(ins::SETTLE, spc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // Sealed again under the new session, the old update is bound to a counter the card
    // has left.
    let mut next_session = authenticate(&mut card);
    assert_eq!(
        submit(&mut card, &mut next_session, ins::SETTLE, &update).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    assert_eq!(purse(&card).balance, amount(3_750));
}

#[test]
fn an_online_charge_raises_the_balance_and_the_purse_spends_it_offline_too() {
    let mut card = card_with_key(1_000);
    let (mut session, _, update) =
        prepared(&mut card, [2; 16], TransactionKind::OnlineCharge, 4_000);
    // A charge sent as a payment, or a payment as a charge, is refused.
    assert_eq!(
        submit(&mut card, &mut session, ins::SETTLE, &update).sw,
        StatusWord::WRONG_DATA
    );
    let (mut session, _, update) =
        prepared(&mut card, [2; 16], TransactionKind::OnlineCharge, 4_000);
    let response = submit(&mut card, &mut session, ins::CHARGE, &update);
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let completion =
        Completion::decode(&session.open(ins::CHARGE, &response.data).unwrap()).unwrap();
    assert_eq!(completion.kind, TransactionKind::OnlineCharge);
    assert_eq!(purse(&card).balance, amount(5_000));
    // The purse application sees the same balance.
    assert_eq!(select(&mut card, &PURSE_AID).sw, StatusWord::SUCCESS);
    let status = send(
        &mut card,
        Command::new(0x80, purse_ins::READ_PURSE, 0, 0).with_le(256),
    );
    let status = valuecard_core::messages::purse::PurseStatus::decode(&status.data).unwrap();
    assert_eq!(status.balance, amount(5_000));
    assert_eq!(
        status.last_usage.unwrap().kind,
        TransactionKind::OnlineCharge
    );
    // Selecting the purse ended the online session.
    assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
    let brc = sealed_readout(&mut session, [3; 16]);
    assert_eq!(
        send(&mut card, online(ins::READ_BALANCE, brc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
}

#[test]
fn the_preview_shows_the_update_without_applying_it() {
    let mut card = card_with_key(5_000);
    let (mut session, _, update) =
        prepared(&mut card, [6; 16], TransactionKind::OnlinePayment, 700);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    let response = send(
        &mut card,
        Command::new(CLA_ONLINE, ins::PREVIEW, 0, 0)
            .with_data(spc.clone())
            .with_le(256),
    );
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let preview = SettlementPreview::decode(&response.data).unwrap();
    assert_eq!(preview.amount, amount(700));
    assert_eq!(preview.balance_before, amount(5_000));
    assert_eq!(preview.balance_after, amount(4_300));
    assert_eq!(preview.party, STORE);
    assert_eq!(purse(&card).balance, amount(5_000));
    // Previewed as a charge, it does not open.
    assert_eq!(
        send(
            &mut card,
            Command::new(CLA_ONLINE, ins::PREVIEW, 1, 0)
                .with_data(spc.clone())
                .with_le(256)
        )
        .sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // That ended the session; in a fresh one the holder previews, then the card applies.
    let (mut session, _, update) =
        prepared(&mut card, [6; 16], TransactionKind::OnlinePayment, 700);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    let preview = send(
        &mut card,
        Command::new(CLA_ONLINE, ins::PREVIEW, 0, 0)
            .with_data(spc.clone())
            .with_le(256),
    );
    assert_eq!(preview.sw, StatusWord::SUCCESS);
    let response = send(&mut card, online(ins::SETTLE, spc));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    session.open(ins::SETTLE, &response.data).unwrap();
    assert_eq!(purse(&card).balance, amount(4_300));
}

/// A card pulled before SETTLE can never apply that SPC; pulled after it (the PCN lost),
/// the completion is answered again in a new session.
#[test]
fn a_card_pulled_before_or_after_settle_tells_the_server_what_happened() {
    let mut card = card_with_key(5_000);
    let (mut session, info, update) =
        prepared(&mut card, [7; 16], TransactionKind::OnlinePayment, 900);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    // Pulled before SETTLE: a new power-up, the SPC no longer opens.
    card.reset();
    assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
    assert_eq!(
        send(&mut card, online(ins::SETTLE, spc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    let mut recovery = authenticate(&mut card);
    let status = completion_status(&mut card, &mut recovery, [7; 16]);
    assert_eq!(status.applied, None);
    assert_eq!(status.counter, info.counter);
    assert_eq!(status.balance, amount(5_000));

    // Applied, then pulled before the PCN reached the server.
    let (mut session, info, update) =
        prepared(&mut card, [8; 16], TransactionKind::OnlinePayment, 900);
    let lost = submit(&mut card, &mut session, ins::SETTLE, &update);
    assert_eq!(lost.sw, StatusWord::SUCCESS);
    card.reset();
    assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
    let mut recovery = authenticate(&mut card);
    let status = completion_status(&mut card, &mut recovery, [8; 16]);
    let applied = status.applied.unwrap();
    assert_eq!(applied.balance_after, amount(4_100));
    assert_eq!(applied.counter, info.counter + 1);
    // Asked about the earlier settlement, the card says it did not apply it.
    let earlier = completion_status(&mut card, &mut recovery, [7; 16]);
    assert_eq!(earlier.applied, None);
    let info = read_balance(&mut card, &mut recovery, [9; 16]);
    assert_eq!(info.last_settlement, Some([8; 16]));
    // BI hands the security server the record that the next online record follows.
    let last = info.last_usage.unwrap();
    assert_eq!(last.kind, TransactionKind::OnlinePayment);
    assert_eq!(
        (last.counter, last.balance_after),
        (info.counter, info.balance)
    );
}
