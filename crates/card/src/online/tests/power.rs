//! A power cut at every write of SETTLE and CHARGE.

use super::*;
use crate::CardError;

/// A power cut at every write of SETTLE and CHARGE: the card powers up with the old state
/// or the whole new one (balance, counter, record, log and completion together), and GET
/// COMPLETION says which.
#[test]
fn a_power_cut_at_any_write_applies_all_of_an_update_or_none_of_it() {
    let (mut applied, mut not_applied) = (0, 0);
    for kind in [
        TransactionKind::OnlinePayment,
        TransactionKind::OnlineCharge,
    ] {
        // How many writes the update takes when nothing fails: every one of them, and the
        // one after the last, is a place to cut.
        let writes = {
            let memory = MemoryEeprom::new(EEPROM_SIZE);
            let mut card = card_on(&memory, 5_000);
            let (mut session, _, update) = prepared(&mut card, [0; 16], kind, 1_000);
            let sealed = session
                .seal(instruction_for(kind), &update.encode())
                .unwrap();
            let before = card.eeprom_mut().writes();
            let response = send(&mut card, online(instruction_for(kind), sealed));
            assert_eq!(response.sw, StatusWord::SUCCESS);
            card.eeprom_mut().writes() - before
        };
        assert!(writes > 1);
        for cut in 1..=writes + 1 {
            for (numerator, denominator) in [(0, 1), (1, 2), (1, 1)] {
                let memory = MemoryEeprom::new(EEPROM_SIZE);
                let mut card = card_on(&memory, 5_000);
                let mut session = authenticate(&mut card);
                let id = [(cut % 251) as u8 + 1; 16];
                let info = read_balance(&mut card, &mut session, id);
                let update = update_for(&session, &info, kind, 1_000);
                let sealed = session
                    .seal(instruction_for(kind), &update.encode())
                    .unwrap();
                card.eeprom_mut().cut_power_at(cut, numerator, denominator);
                let outcome = card.process(&online(instruction_for(kind), sealed).encode());
                let mut card = match outcome {
                    Err(CardError::PowerLost) => Card::open(
                        FaultInjectingEeprom::new(memory.clone()),
                        ChaCha20Rng::seed_from_u64(8),
                    )
                    .unwrap(),
                    Ok(response) => {
                        assert_eq!(response.sw, StatusWord::SUCCESS);
                        card
                    }
                    Err(other) => panic!("{other:?}"),
                };
                assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
                let purse = purse(&card).clone();
                let mut recovery = authenticate(&mut card);
                let status = completion_status(&mut card, &mut recovery, id);
                match status.applied {
                    Some(completion) => {
                        applied += 1;
                        assert_eq!(purse.balance, update.balance_after);
                        assert_eq!(purse.counter, 1);
                        assert_eq!(completion.balance_after, update.balance_after);
                        assert_eq!(purse.last_usage.as_ref().unwrap().kind, kind);
                        assert_eq!(purse.log.len(), 1);
                    }
                    None => {
                        not_applied += 1;
                        assert_eq!(purse.balance, amount(5_000));
                        assert_eq!(purse.counter, 0);
                        assert!(purse.last_usage.is_none());
                        assert!(purse.log.is_empty());
                    }
                }
            }
        }
    }
    // Cuts early in the write lose the update, cuts after it landed keep it.
    assert!(
        applied > 0 && not_applied > 0,
        "{applied} applied, {not_applied} not"
    );
}
