//! The store device 4 as an HTTPS service (a single store, or a mall selling for its member
//! stores): the catalog (ST2), the estimate (ST3), the order with its bill signed SIG1 (ST5),
//! the receipt signed SIG4 once the settlement system's completion SIG3 checks out
//! (ST19/ST112), and the content delivered to whoever shows the receipt's signature.
//!
//! Every order and receipt is in the store's database (`store_` tables), so any instance
//! over the same database answers any request; a completion shown again gets the same
//! receipt, and an order is paid by one settlement only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand_core::RngCore;
use valuecard_center::db::Migration;
use valuecard_center::sql::{Database, Executor};
use valuecard_core::crypto::Signature;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::online::{Bill, Receipt, SettlementCompletion};
use valuecard_core::time::Clock;
use valuecard_settle::store::{Store, StoreError};

use crate::db::DatabasePool;
use crate::service::{hex_array, hex_field, json, parse, Answer, Problem, ProblemKind};
use crate::wire::{
    BillBody, BillLineBody, CatalogBody, CatalogItemBody, CompletionBody, ContentRequestBody,
    OrderRequestBody, ReceiptBody,
};

/// The store's schema; append-only.
pub const MIGRATIONS: &[Migration] = &[Migration::Portable(
    r#"
    CREATE TABLE store_orders (
        order_number         BIGINT PRIMARY KEY,
        bill                 BYTEA NOT NULL,
        bill_signature       BYTEA NOT NULL,
        skus                 TEXT NOT NULL,
        settlement_id        BYTEA,
        completion           BYTEA,
        completion_signature BYTEA,
        receipt              BYTEA,
        receipt_signature    BYTEA,
        created_on           BIGINT NOT NULL,
        paid_on              BIGINT
    )
    "#,
)];

/// The migrations' history table.
pub const MIGRATION_TABLE: &str = "store_migrations";

/// Order numbers are drawn at random from this range (ten digits): no counter row that
/// every instance would queue on, and a number says nothing about the store's volume.
const ORDER_NUMBERS: core::ops::Range<u64> = 1_000_000_000..10_000_000_000;

/// What the store delivers for an item once paid.
pub trait ContentSource: Send + Sync {
    /// The content of `sku`, or `None` for an item that is not content (a physical good).
    fn content(&self, sku: &str) -> Option<(String, Vec<u8>)>;
}

/// The store's state shared by its handlers.
pub struct StoreService {
    store: Store,
    name: String,
    member_names: BTreeMap<DeviceId, String>,
    contents: Box<dyn ContentSource>,
    pool: DatabasePool,
    clock: Box<dyn Clock + Sync>,
}

impl core::fmt::Debug for StoreService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoreService")
            .field("store", &self.store)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl StoreService {
    pub fn new(
        store: Store,
        name: impl Into<String>,
        member_names: BTreeMap<DeviceId, String>,
        contents: Box<dyn ContentSource>,
        pool: DatabasePool,
        clock: Box<dyn Clock + Sync>,
    ) -> Self {
        StoreService {
            store,
            name: name.into(),
            member_names,
            contents,
            pool,
            clock,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The router of the service.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/catalog", get(catalog))
            .route("/v1/estimate", post(estimate))
            .route("/v1/orders", post(order))
            .route("/v1/orders/{order}/completion", post(completion))
            .route("/v1/orders/{order}/content", post(content))
            .route("/health", get(health))
            .with_state(Arc::new(self))
    }

    fn member_name(&self, id: &DeviceId) -> String {
        self.member_names
            .get(id)
            .cloned()
            .unwrap_or_else(|| self.name.clone())
    }

    fn bill_body(&self, bill: &Bill, signature: Option<&Signature>) -> BillBody {
        BillBody {
            order_number: signature.map(|_| bill.order_number),
            member_store: self.member_name(&bill.member_store.unwrap_or(bill.store)),
            lines: bill
                .lines
                .iter()
                .map(|line| BillLineBody {
                    title: line.item.clone(),
                    quantity: line.quantity,
                    unit_price: line.unit_price.minor(),
                    line_total: line.unit_price.minor() * u64::from(line.quantity),
                })
                .collect(),
            total: bill.total.minor(),
            expires: bill.expires.to_string(),
            bill: signature.map(|_| hex::encode(bill.encode())),
            signature: signature.map(|signature| hex::encode(signature.0)),
        }
    }
}

fn order_lines(body: &[u8]) -> Result<Vec<(String, u32)>, Problem> {
    let request: OrderRequestBody = parse(body)?;
    Ok(request
        .lines
        .into_iter()
        .map(|line| (line.sku, line.quantity))
        .collect())
}

fn store_problem(error: StoreError) -> Problem {
    let kind = match error {
        StoreError::ForgedCompletion => ProblemKind::SignatureFailure,
        StoreError::WrongOrder(_) => ProblemKind::Conflict,
        _ => ProblemKind::BadRequest,
    };
    Problem::new(kind, error.to_string())
}

async fn catalog(State(service): State<Arc<StoreService>>) -> Response {
    let items = service
        .store
        .catalog()
        .map(|item| CatalogItemBody {
            sku: item.sku.clone(),
            title: item.title.clone(),
            price: item.price.minor(),
            member_store_id: hex::encode(item.member_store.as_bytes()),
            member_store: service.member_name(&item.member_store),
        })
        .collect();
    json(&CatalogBody {
        store_id: hex::encode(service.store.id.as_bytes()),
        store_name: service.name.clone(),
        items,
    })
}

async fn estimate(State(service): State<Arc<StoreService>>, body: Bytes) -> Answer {
    let lines = order_lines(&body)?;
    let bill = service
        .store
        .estimate(&lines, 0, service.clock.today())
        .map_err(store_problem)?;
    Ok(json(&service.bill_body(&bill, None)))
}

/// ST4-ST5: a new order with its bill signed SIG1, kept until it is paid.
async fn order(State(service): State<Arc<StoreService>>, body: Bytes) -> Answer {
    let lines = order_lines(&body)?;
    let skus = lines
        .iter()
        .map(|(sku, quantity)| format!("{sku}:{quantity}"))
        .collect::<Vec<_>>()
        .join(",");
    let today = service.clock.today();
    // Priced (and refused if bad) once, before any database work; each number drawn only
    // renumbers and signs it.
    let mut bill = service
        .store
        .estimate(&lines, 0, today)
        .map_err(store_problem)?;
    let worker = Arc::clone(&service);
    let (bill, signature) = service
        .pool
        .run(move |db: &mut Database| -> Result<_, Problem> {
            loop {
                let number = ORDER_NUMBERS.start
                    + rand_core::OsRng.next_u64() % (ORDER_NUMBERS.end - ORDER_NUMBERS.start);
                bill.order_number = number;
                let signature = worker.store.sign_bill(&bill);
                let inserted = db.execute(
                    "INSERT INTO store_orders (order_number, bill, bill_signature, skus, created_on)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_number) DO NOTHING",
                    &[
                        (number as i64).into(),
                        bill.encode().into(),
                        signature.0[..].into(),
                        skus.as_str().into(),
                        today.0.into(),
                    ],
                )?;
                if inserted == 1 {
                    return Ok((bill, signature));
                }
            }
        })
        .await?;
    Ok(json(&service.bill_body(&bill, Some(&signature))))
}

fn order_number(text: &str) -> Result<u64, Problem> {
    text.parse()
        .map_err(|_| Problem::new(ProblemKind::NotFound, format!("no order {text:?}")))
}

/// The stored order: its bill, SKUs and, once paid, its settlement and receipt.
struct StoredOrder {
    bill: Bill,
    skus: String,
    settlement_id: Option<Vec<u8>>,
    receipt: Option<(Vec<u8>, Vec<u8>)>,
}

fn read_order(db: &mut Database, number: u64) -> Result<StoredOrder, Problem> {
    let row = db
        .query_optional(
            "SELECT bill, skus, settlement_id, receipt, receipt_signature FROM store_orders
             WHERE order_number = $1",
            &[(number as i64).into()],
        )?
        .ok_or_else(|| Problem::new(ProblemKind::NotFound, format!("no order {number}")))?;
    let bill = Bill::decode(&row.bytes(0)?)
        .map_err(|error| Problem::new(ProblemKind::Internal, error.to_string()))?;
    let receipt = match (row.optional_bytes(3)?, row.optional_bytes(4)?) {
        (Some(receipt), Some(signature)) => Some((receipt, signature)),
        _ => None,
    };
    Ok(StoredOrder {
        bill,
        skus: row.text(1)?,
        settlement_id: row.optional_bytes(2)?,
        receipt,
    })
}

/// ST19/ST112: the completion SIG3 of this order's settlement; answers the receipt SIG4.
/// The same completion shown again gets the same receipt; another settlement's completion
/// for a paid order is refused (the order is paid once).
async fn completion(
    State(service): State<Arc<StoreService>>,
    Path(order): Path<String>,
    body: Bytes,
) -> Answer {
    let number = order_number(&order)?;
    let request: CompletionBody = parse(&body)?;
    let completion = SettlementCompletion::decode(&hex_field("completion", &request.completion)?)
        .map_err(|error| Problem::bad_request(format!("completion: {error}")))?;
    let signature = Signature(hex_array("signature", &request.signature)?);
    let worker = Arc::clone(&service);
    let receipt = service
        .pool
        .run(move |db: &mut Database| -> Result<ReceiptBody, Problem> {
            let stored = read_order(db, number)?;
            let today = worker.clock.today();
            let (receipt, receipt_signature) = worker
                .store
                .receipt(&stored.bill, &completion, &signature, today)
                .map_err(store_problem)?;
            if let Some(paid_by) = &stored.settlement_id {
                if paid_by[..] != completion.settlement_id[..] {
                    return Err(Problem::new(
                        ProblemKind::Conflict,
                        format!("order {number} was paid by another settlement"),
                    ));
                }
                if let Some((receipt, signature)) = stored.receipt {
                    return Ok(ReceiptBody {
                        receipt: hex::encode(receipt),
                        signature: hex::encode(signature),
                    });
                }
            }
            let updated = db.execute(
                "UPDATE store_orders SET settlement_id = $2, completion = $3,
                     completion_signature = $4, receipt = $5, receipt_signature = $6, paid_on = $7
                 WHERE order_number = $1 AND settlement_id IS NULL",
                &[
                    (number as i64).into(),
                    completion.settlement_id[..].into(),
                    completion.encode().into(),
                    signature.0[..].into(),
                    receipt.encode().into(),
                    receipt_signature.0[..].into(),
                    today.0.into(),
                ],
            )?;
            if updated == 0 {
                // Another instance stored a receipt meanwhile: answer what it stored.
                let stored = read_order(db, number)?;
                return match (stored.settlement_id, stored.receipt) {
                    (Some(paid_by), Some((receipt, signature)))
                        if paid_by[..] == completion.settlement_id[..] =>
                    {
                        Ok(ReceiptBody {
                            receipt: hex::encode(receipt),
                            signature: hex::encode(signature),
                        })
                    }
                    _ => Err(Problem::new(
                        ProblemKind::Conflict,
                        format!("order {number} was paid by another settlement"),
                    )),
                };
            }
            Ok(ReceiptBody {
                receipt: hex::encode(receipt.encode()),
                signature: hex::encode(receipt_signature.0),
            })
        })
        .await?;
    Ok(json(&receipt))
}

/// Content delivery (ST20, Fig. 20): the order's content, to whoever shows its receipt's
/// signature; nothing before the order is paid.
async fn content(
    State(service): State<Arc<StoreService>>,
    Path(order): Path<String>,
    body: Bytes,
) -> Answer {
    let number = order_number(&order)?;
    let request: ContentRequestBody = parse(&body)?;
    let shown = hex_field("receipt_signature", &request.receipt_signature)?;
    let stored = service
        .pool
        .run(move |db: &mut Database| read_order(db, number))
        .await?;
    let Some((receipt, signature)) = stored.receipt else {
        return Err(Problem::new(
            ProblemKind::Conflict,
            format!("order {number} is not paid"),
        ));
    };
    use subtle::ConstantTimeEq;
    if !bool::from(signature.ct_eq(&shown)) {
        return Err(Problem::new(
            ProblemKind::SignatureFailure,
            "that is not this order's receipt",
        ));
    }
    Receipt::decode(&receipt)
        .map_err(|error| Problem::new(ProblemKind::Internal, error.to_string()))?;
    let mut file = Vec::new();
    let mut names = Vec::new();
    for entry in stored.skus.split(',') {
        let sku = entry.split(':').next().unwrap_or_default();
        if let Some((name, bytes)) = service.contents.content(sku) {
            names.push(name);
            file.extend_from_slice(&bytes);
        }
    }
    if names.is_empty() {
        return Err(Problem::new(
            ProblemKind::NotFound,
            format!("order {number} holds no downloadable content"),
        ));
    }
    let filename = if names.len() == 1 {
        names.remove(0)
    } else {
        format!("order-{number}.txt")
    };
    let mut response = (StatusCode::OK, file).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        filename.replace(['"', '\\', '\r', '\n'], "_")
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

async fn health(State(service): State<Arc<StoreService>>) -> Answer {
    crate::service::health(&service.pool).await
}
