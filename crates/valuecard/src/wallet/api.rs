//! The page's JSON API: each route one step of the holder's client, errors as problem
//! documents whose `kind` the page turns into words a person understands (card missing,
//! declined, insufficient balance, signature failure, a service down).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use valuecard_core::ids::CardId;
use valuecard_core::messages::online::SettlementId;
use valuecard_core::money::Amount;
use valuecard_settle_http::holder::{
    read_card, HolderError, Order, Paid, PreparedCharge, PreparedPayment, Resolution,
};
use valuecard_settle_http::wire::{
    BillBody, CatalogBody, CreditCardBody, Embodiment, OrderLineBody,
};
use valuecard_settle_http::ProblemKind;

use super::Wallet;

type WalletState = State<Arc<Wallet>>;

/// What the wallet keeps between the page's requests.
#[derive(Debug, Default)]
pub struct Session {
    orders: BTreeMap<u64, Order>,
    payments: BTreeMap<SettlementId, PreparedPayment>,
    paid: BTreeMap<u64, Paid>,
    charges: BTreeMap<SettlementId, PreparedCharge>,
    /// The last card that proved KC, and the token that reads its log.
    log_token: Option<(CardId, String)>,
    /// The card as the payment or charge prepared last saw it, while the card's online
    /// session that its SETTLE or CHARGE needs is open: see [`status`].
    prepared_card: Option<(CardId, Amount)>,
    /// The store's and its member stores' names, from the last catalog read.
    names: Option<StoreNames>,
}

/// Names for the store IDs a receipt or the card's log carries.
#[derive(Debug, Clone, Default)]
struct StoreNames {
    store: String,
    /// Upper-case hex device ID → name.
    by_id: BTreeMap<String, String>,
}

impl StoreNames {
    fn of(catalog: &CatalogBody) -> Self {
        let mut by_id = BTreeMap::from([(
            catalog.store_id.to_ascii_uppercase(),
            catalog.store_name.clone(),
        )]);
        for item in &catalog.items {
            by_id.insert(
                item.member_store_id.to_ascii_uppercase(),
                item.member_store.clone(),
            );
        }
        StoreNames {
            store: catalog.store_name.clone(),
            by_id,
        }
    }
}

/// The names, read from the store's catalog the first time they are needed (the page asks
/// for the status every few seconds: that must not cost a request to the store each time).
/// A catalog that cannot be read leaves them empty until the next try.
async fn store_names(wallet: &Arc<Wallet>) -> StoreNames {
    if let Some(names) = session(wallet).names.clone() {
        return names;
    }
    let holder = wallet.holder.clone();
    match blocking(move || holder.catalog()).await {
        Ok(catalog) => {
            let names = StoreNames::of(&catalog);
            session(wallet).names = Some(names.clone());
            names
        }
        Err(_) => StoreNames::default(),
    }
}

/// A problem document for the page.
#[derive(Debug, Serialize)]
pub(super) struct PageProblem {
    kind: &'static str,
    title: String,
    detail: String,
}

pub(super) struct Failure(StatusCode, PageProblem);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response =
            (self.0, serde_json::to_vec(&self.1).unwrap_or_default()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

fn failure(
    status: StatusCode,
    kind: &'static str,
    title: &str,
    detail: impl Into<String>,
) -> Failure {
    Failure(
        status,
        PageProblem {
            kind,
            title: title.to_owned(),
            detail: detail.into(),
        },
    )
}

impl From<HolderError> for Failure {
    fn from(error: HolderError) -> Self {
        let detail = error.to_string();
        match &error {
            HolderError::CardMissing(_) => failure(
                StatusCode::CONFLICT,
                "card-missing",
                "No card in the reader",
                detail,
            ),
            HolderError::CardRefused { .. } | HolderError::CardAnswer { .. } => failure(
                StatusCode::CONFLICT,
                "card-missing",
                "The card did not go along",
                format!("{detail}; take the card out, put it back and try again"),
            ),
            HolderError::Service(problem) => {
                let (status, kind) = match problem.kind {
                    ProblemKind::InsufficientBalance => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "insufficient-balance")
                    }
                    ProblemKind::Declined => (StatusCode::PAYMENT_REQUIRED, "declined"),
                    ProblemKind::SignatureFailure => (StatusCode::FORBIDDEN, "signature-failure"),
                    ProblemKind::ServiceUnavailable => {
                        (StatusCode::SERVICE_UNAVAILABLE, "service-unavailable")
                    }
                    ProblemKind::BadRequest | ProblemKind::OverLimit => {
                        (StatusCode::BAD_REQUEST, "bad-request")
                    }
                    ProblemKind::NotFound => (StatusCode::NOT_FOUND, "not-found"),
                    ProblemKind::Conflict => (StatusCode::CONFLICT, "conflict"),
                    ProblemKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                };
                failure(status, kind, &problem.title, problem.detail.clone())
            }
            HolderError::Unreachable { .. } => failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "A service cannot be reached",
                detail,
            ),
            HolderError::Malformed { .. }
            | HolderError::Document(_)
            | HolderError::OfferMismatch(_) => failure(
                StatusCode::FORBIDDEN,
                "signature-failure",
                "A signed document does not check out",
                format!("{detail}; nothing was charged"),
            ),
        }
    }
}

type Answer = Result<Response, Failure>;

fn json<T: Serialize>(body: &T) -> Answer {
    let mut response =
        (StatusCode::OK, serde_json::to_vec(body).unwrap_or_default()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|error| {
        failure(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "The request is malformed",
            error.to_string(),
        )
    })
}

fn lost() -> Failure {
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "internal",
        "The card reader stopped",
        "restart the wallet",
    )
}

fn session(wallet: &Wallet) -> std::sync::MutexGuard<'_, Session> {
    wallet
        .session
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Notes, from the card's thread, which card a preparation left with an open online session
/// (`None`: any other step on the card, which ends that session whatever its outcome).
fn note_prepared_card(wallet: &Wallet, card: Option<(CardId, Amount)>) {
    session(wallet).prepared_card = card;
}

/// Runs a blocking step of the holder's client (HTTPS calls) off the runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, HolderError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| lost())?
        .map_err(Failure::from)
}

pub(super) async fn status(State(wallet): WalletState) -> Answer {
    // Reading the card SELECTs the purse, which ends the card's online session: a prepared
    // payment or charge could then never be confirmed (the card refuses SETTLE or CHARGE).
    // Until the next step on the card it is shown as its preparation read it. This is
    // decided on the card's thread, in order with the steps that change it.
    let seen = Arc::clone(&wallet);
    let card = wallet
        .card
        .run(move |reader| {
            let prepared = session(&seen).prepared_card;
            match prepared {
                Some(card) => Ok(card),
                None => read_card(reader).map(|view| (view.card_id, view.status.balance)),
            }
        })
        .await
        .ok_or_else(lost)?;
    let store = store_names(&wallet).await.store;
    let card = match card {
        Ok((card_id, balance)) => serde_json::json!({
            "present": true,
            "card_id": card_id.to_string(),
            "balance": balance.minor(),
        }),
        Err(_) => serde_json::json!({"present": false}),
    };
    json(&serde_json::json!({
        "currency": wallet.currency,
        "card": card,
        "store": {"name": store},
    }))
}

pub(super) async fn catalog(State(wallet): WalletState) -> Answer {
    let holder = wallet.holder.clone();
    let catalog = blocking(move || holder.catalog()).await?;
    session(&wallet).names = Some(StoreNames::of(&catalog));
    json(&serde_json::json!({
        "store_name": catalog.store_name,
        "items": catalog.items.iter().map(|item| serde_json::json!({
            "sku": item.sku,
            "title": item.title,
            "price": item.price,
            "member_store": item.member_store,
        })).collect::<Vec<_>>(),
    }))
}

#[derive(Debug, Deserialize)]
struct LinesBody {
    lines: Vec<OrderLineBody>,
}

fn order_of(body: &[u8]) -> Result<Vec<(String, u32)>, Failure> {
    let lines: LinesBody = parse(body)?;
    Ok(lines
        .lines
        .into_iter()
        .map(|line| (line.sku, line.quantity))
        .collect())
}

fn bill_json(view: &BillBody) -> serde_json::Value {
    serde_json::json!({
        "order_number": view.order_number,
        "member_store": view.member_store,
        "lines": view.lines.iter().map(|line| serde_json::json!({
            "title": line.title,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "line_total": line.line_total,
        })).collect::<Vec<_>>(),
        "total": view.total,
        "expires": view.expires,
    })
}

pub(super) async fn estimate(State(wallet): WalletState, body: Bytes) -> Answer {
    let order = order_of(&body)?;
    let holder = wallet.holder.clone();
    let view = blocking(move || holder.estimate(&order)).await?;
    json(&bill_json(&view))
}

pub(super) async fn bill(State(wallet): WalletState, body: Bytes) -> Answer {
    let order = order_of(&body)?;
    let holder = wallet.holder.clone();
    let order = blocking(move || holder.order(&order)).await?;
    let answer = bill_json(&order.view);
    session(&wallet)
        .orders
        .insert(order.bill.order_number, order);
    json(&answer)
}

#[derive(Debug, Deserialize)]
struct OrderNumberBody {
    order_number: u64,
}

fn settlement_id(text: &str) -> Result<SettlementId, Failure> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| SettlementId::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| {
            failure(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "no such payment",
            )
        })
}

fn not_found(what: &str) -> Failure {
    failure(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        what.to_owned(),
    )
}

/// ST7-ST15: the card is touched; the offer comes back for the holder to confirm.
pub(super) async fn prepare_payment(State(wallet): WalletState, body: Bytes) -> Answer {
    let request: OrderNumberBody = parse(&body)?;
    let order = session(&wallet)
        .orders
        .get(&request.order_number)
        .cloned()
        .ok_or_else(|| not_found("no such order: ask for the bill again"))?;
    let holder = wallet.holder.clone();
    let seen = Arc::clone(&wallet);
    let prepared = wallet
        .card
        .run(move |reader| {
            let prepared = holder.prepare_payment(reader, &order, Embodiment::Signed);
            let card = prepared.as_ref().ok().map(|p| (p.card_id, p.balance));
            note_prepared_card(&seen, card);
            prepared
        })
        .await
        .ok_or_else(lost)??;
    let answer = serde_json::json!({
        "settlement_id": hex::encode(prepared.settlement_id),
        "balance": prepared.balance.minor(),
        "spendable": prepared.spendable.minor(),
        "total": prepared.total.minor(),
        "balance_after": prepared.balance_after.minor(),
        "order_number": prepared.order_number,
    });
    let mut session = session(&wallet);
    session.log_token = Some((prepared.card_id, prepared.log_token.clone()));
    session.payments.insert(prepared.settlement_id, prepared);
    drop(session);
    json(&answer)
}

#[derive(Debug, Deserialize)]
struct SettlementBody {
    settlement_id: String,
}

/// ST16-ST20: SETTLE on the card, the completion and the receipt checked.
pub(super) async fn confirm_payment(State(wallet): WalletState, body: Bytes) -> Answer {
    let request: SettlementBody = parse(&body)?;
    let id = settlement_id(&request.settlement_id)?;
    let (prepared, order) = {
        let session = session(&wallet);
        let prepared = session
            .payments
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("no such payment"))?;
        let order = session
            .orders
            .get(&prepared.order_number)
            .cloned()
            .ok_or_else(|| not_found("no such order"))?;
        (prepared, order)
    };
    let holder = wallet.holder.clone();
    let seen = Arc::clone(&wallet);
    let paid = wallet
        .card
        .run(move |reader| {
            note_prepared_card(&seen, None);
            holder.confirm_payment(reader, &order, &prepared)
        })
        .await
        .ok_or_else(lost)??;
    let answer = serde_json::json!({
        "order_number": paid.order_number,
        "amount": paid.amount.minor(),
        "balance_after": paid.balance_after.minor(),
        "receipt": {
            "order_number": paid.receipt.order_number,
            "amount": paid.receipt.amount.minor(),
            "date": paid.receipt.date.to_string(),
            "store": paid.receipt.store.to_string(),
        },
        "download_url": format!("/api/download/{}", paid.order_number),
    });
    let mut session = session(&wallet);
    session.payments.remove(&id);
    session.paid.insert(paid.order_number, paid);
    drop(session);
    json(&answer)
}

/// The holder declined at ST15: the update is resolved with the card in a new session,
/// after which the sealed SPC can never apply.
pub(super) async fn cancel_payment(State(wallet): WalletState, body: Bytes) -> Answer {
    let request: SettlementBody = parse(&body)?;
    let id = settlement_id(&request.settlement_id)?;
    let holder = wallet.holder.clone();
    let seen = Arc::clone(&wallet);
    let (resolution, _) = wallet
        .card
        .run(move |reader| {
            note_prepared_card(&seen, None);
            holder.resolve(reader, &id)
        })
        .await
        .ok_or_else(lost)??;
    session(&wallet).payments.remove(&id);
    json(&serde_json::json!({
        "cancelled": resolution == Resolution::Voided,
    }))
}

pub(super) async fn download(State(wallet): WalletState, Path(order): Path<String>) -> Answer {
    let number: u64 = order.parse().map_err(|_| not_found("no such order"))?;
    let paid = session(&wallet)
        .paid
        .get(&number)
        .cloned()
        .ok_or_else(|| not_found("this order is not paid"))?;
    let holder = wallet.holder.clone();
    let content = blocking(move || holder.download(&paid)).await?;
    let mut response = (StatusCode::OK, content).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"order-{number}.txt\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct ChargeBody {
    amount: u64,
    card_number: String,
    expiry: String,
    holder_name: String,
}

/// Figs. 25-29: the charge authorized and sealed for the card, SIG5 checked.
pub(super) async fn authorize_charge(State(wallet): WalletState, body: Bytes) -> Answer {
    let request: ChargeBody = parse(&body)?;
    let amount = Amount::new_positive(request.amount).map_err(|error| {
        failure(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "The amount is not valid",
            error.to_string(),
        )
    })?;
    let holder = wallet.holder.clone();
    let credit_card = CreditCardBody {
        number: request.card_number,
        expiry: request.expiry,
        holder_name: request.holder_name,
    };
    let seen = Arc::clone(&wallet);
    let prepared = wallet
        .card
        .run(move |reader| {
            let prepared = holder.prepare_charge(reader, amount, credit_card);
            let card = prepared.as_ref().ok().map(|p| (p.card_id, p.balance));
            note_prepared_card(&seen, card);
            prepared
        })
        .await
        .ok_or_else(lost)??;
    let answer = serde_json::json!({
        "charge_id": hex::encode(prepared.settlement_id),
        "authorization": prepared.authorization,
        "amount": prepared.amount.minor(),
        "balance": prepared.balance.minor(),
        "balance_after": prepared.balance_after.minor(),
    });
    let mut session = session(&wallet);
    session.log_token = Some((prepared.card_id, prepared.log_token.clone()));
    session.charges.insert(prepared.settlement_id, prepared);
    drop(session);
    json(&answer)
}

#[derive(Debug, Deserialize)]
struct ChargeIdBody {
    charge_id: String,
}

/// Figs. 30-32: CHARGE on the card.
pub(super) async fn confirm_charge(State(wallet): WalletState, body: Bytes) -> Answer {
    let request: ChargeIdBody = parse(&body)?;
    let id = settlement_id(&request.charge_id)?;
    let prepared = session(&wallet)
        .charges
        .get(&id)
        .cloned()
        .ok_or_else(|| not_found("no such charge"))?;
    let holder = wallet.holder.clone();
    let charged = prepared.clone();
    let seen = Arc::clone(&wallet);
    let resolution = wallet
        .card
        .run(move |reader| {
            note_prepared_card(&seen, None);
            holder.confirm_charge(reader, &charged)
        })
        .await
        .ok_or_else(lost)??;
    session(&wallet).charges.remove(&id);
    match resolution {
        Resolution::Completed { balance_after } => json(&serde_json::json!({
            "amount": prepared.amount.minor(),
            "balance_after": balance_after.minor(),
        })),
        Resolution::Voided => Err(failure(
            StatusCode::CONFLICT,
            "conflict",
            "The charge did not reach the card",
            "nothing was charged to your credit card",
        )),
    }
}

/// The card's log at the information server, with the token of the card's last session.
pub(super) async fn log(State(wallet): WalletState) -> Answer {
    let token = session(&wallet).log_token.clone();
    let Some((card_id, token)) = token else {
        return json(&serde_json::json!({"entries": []}));
    };
    let holder = wallet.holder.clone();
    let log = blocking(move || holder.card_log(&card_id, &token)).await?;
    let names = store_names(&wallet).await.by_id;
    json(&serde_json::json!({
        "entries": log.entries.iter().map(|entry| serde_json::json!({
            "date": entry.date,
            "kind": entry.kind,
            "amount": entry.amount,
            "balance_after": entry.balance_after,
            "party": match (entry.kind.as_str(), names.get(&entry.party.to_ascii_uppercase())) {
                (_, Some(name)) => name.clone(),
                ("charge", None) => "the settlement service".to_owned(),
                (_, None) => entry.party.clone(),
            },
        })).collect::<Vec<_>>(),
    }))
}
