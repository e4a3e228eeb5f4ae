//! Fig. 6 on the card: INITIALIZE PURCHASE and DEBIT.

use super::*;

/// Fig. 6, card side of the first exchange: check the terminal's certificate, draw X, sign
/// (R, X, V) and hand over the previous usage record (Fig. 9).
pub(super) fn initialize_purchase(
    command: &Command,
    purse: &Purse,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let request = InitializePurchase::decode(&command.data).map_err(wrong_data)?;
    let terminal = match purse.anchor.verify_unexpired(
        core::slice::from_ref(&request.terminal_certificate),
        Role::PaymentTerminal,
        purse.known_date,
    ) {
        Ok(terminal) => terminal,
        Err(error @ (CertError::BadSignature { .. } | CertError::WrongIssuer { .. })) => {
            return Ok(Effect::refuse_and_record(
                cert_status(error),
                with_abnormal(purse, AbnormalCode::ForgedTerminalCertificate, false),
            ));
        }
        Err(error) => return Err(cert_status(error)),
    };
    if request.amount_max == Amount::ZERO {
        return Err(StatusWord::WRONG_DATA);
    }
    if request.amount_max > purse.spendable() {
        return Err(StatusWord::INSUFFICIENT_FUNDS);
    }
    let challenge_card: Challenge = random_array(rng);
    let card_id = purse.keys.card_id;
    let terminal_id = terminal.subject();
    let signature = purse.keys.signing.sign(&PurchaseOffer::signed_message(
        &card_id,
        &terminal_id,
        &request.challenge_terminal,
        &challenge_card,
        purse.balance,
        purse.counter,
        request.amount_max,
    ));
    volatile.purchase = Some(PurchaseSession {
        terminal_certificate: request.terminal_certificate,
        terminal_id,
        terminal_key: *terminal.signing_key(),
        challenge_terminal: request.challenge_terminal,
        challenge_card,
        amount_max: request.amount_max,
        date: request.date,
        counter: purse.counter,
    });
    let offer = PurchaseOffer {
        challenge_card,
        balance: purse.balance,
        counter: purse.counter,
        signature,
        last_usage: purse.last_usage.clone(),
        last_writer_certificate: purse.last_writer_certificate.clone(),
    };
    Ok(Effect::reply(offer.encode()))
}

/// Fig. 6, card side of the second exchange: verify ST(R * X * V' * IDU), refuse a raised
/// balance (and block, Fig. 5), then commit the new balance, usage record and log entry.
pub(super) fn debit(
    command: &Command,
    purse: &Purse,
    session: PurchaseSession,
) -> Result<Effect, StatusWord> {
    let request = DebitCommand::decode(&command.data).map_err(wrong_data)?;
    let commit = PurchaseCommit {
        card_id: purse.keys.card_id,
        terminal_id: session.terminal_id,
        challenge_terminal: session.challenge_terminal,
        challenge_card: session.challenge_card,
        counter: session.counter,
        amount: request.amount,
        balance_after: request.balance_after,
        terminal_sequence: request.terminal_sequence,
        date: session.date,
        stamp: request.stamp,
    };
    if session
        .terminal_key
        .verify(&commit.signed_message(), &request.signature)
        .is_err()
    {
        return Ok(Effect::refuse_and_record(
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            with_abnormal(purse, AbnormalCode::ForgedTerminalSignature, false),
        ));
    }
    if request.balance_after > purse.balance {
        return Ok(Effect::refuse_and_record(
            StatusWord::FUNCTION_NOT_SUPPORTED,
            with_abnormal(purse, AbnormalCode::BalanceRaised, true),
        ));
    }
    if request.amount == Amount::ZERO || request.amount > session.amount_max {
        return Err(StatusWord::WRONG_DATA);
    }
    let expected = purse
        .balance
        .checked_sub(request.amount)
        .map_err(|_| StatusWord::INSUFFICIENT_FUNDS)?;
    if expected != request.balance_after {
        return Err(StatusWord::WRONG_DATA);
    }
    let record = UsageRecord {
        kind: TransactionKind::Purchase,
        counter: 0,
        challenge_writer: session.challenge_terminal,
        challenge_card: session.challenge_card,
        amount: request.amount,
        balance_after: request.balance_after,
        writer: session.terminal_id,
        writer_sequence: request.terminal_sequence,
        date: session.date,
        signature: request.signature,
        stamp: Some(request.stamp),
    };
    commit_update(purse.clone(), record, Some(session.terminal_certificate))
}
