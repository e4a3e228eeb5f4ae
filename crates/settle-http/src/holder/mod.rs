//! The holder's side of seed 004: the client on the holder's own computer that drives the
//! card in its reader and talks to the store and the settlement system over HTTPS (each
//! service's certificate pinned). Every step is a method, so that a screen can stand
//! between them: the order and its bill (ST2-ST6), the payment prepared up to the offer the
//! holder confirms (ST7-ST15), the card updated and the documents checked (ST16-ST20), the
//! content downloaded; a charge authorized and written to the card (Figs. 24-32); and an
//! update whose end is unknown resolved with the card.
//!
//! The client trusts no server's word about money: SIG2 is checked against the bill the
//! client itself got from the store, before the card is touched; in the sealed embodiment
//! the card itself opens the offer (PREVIEW); SIG3, SIG4 and SIG5 are checked before a
//! result is shown or a charge goes to the card.
//!
//! `client.rs` is the HTTPS client of a service, `card.rs` the card's commands,
//! `session.rs` the steps every update shares (the online application selected and KC
//! installed, mutual authentication, the offer, the update applied, an update resolved
//! with the card), `payment.rs` and `charge.rs` the two kinds of update.

mod card;
mod charge;
mod client;
mod payment;
mod session;

pub use card::{read_card, CardView};
pub use charge::PreparedCharge;
pub use client::ServiceClient;
pub use payment::{Paid, PreparedPayment};

use std::time::Duration;

use valuecard_center_http::CenterPin;
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_core::ids::CardId;
use valuecard_core::messages::online::{Bill, SettlementId};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_reader::ReaderError;
use valuecard_settle::application::{ClientChecks, DocumentError};

use crate::service::Problem;
use crate::wire::{
    BillBody, CardLogBody, CatalogBody, ContentRequestBody, OrderLineBody, OrderRequestBody,
    OutcomeBody, StoreInfoBody, UpdateOutcome,
};

/// How long one request to a service may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a step of the holder's client failed; each says what a person can do about it.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("no card in the reader: {0}")]
    CardMissing(ReaderError),
    #[error("the card refused {command}: {status}")]
    CardRefused {
        command: &'static str,
        status: StatusWord,
    },
    #[error("the card's answer to {command} does not decode: {reason}")]
    CardAnswer {
        command: &'static str,
        reason: String,
    },
    /// A service answered with a problem document.
    #[error("{0}")]
    Service(Problem),
    #[error("{service} cannot be reached: {reason}")]
    Unreachable {
        service: &'static str,
        reason: String,
    },
    #[error("{service}'s answer is malformed: {reason}")]
    Malformed {
        service: &'static str,
        reason: String,
    },
    /// A signed document did not check out: nothing goes to the card.
    #[error("{0}")]
    Document(#[from] DocumentError),
    #[error("the offer the card opened is not the bill's: {0}")]
    OfferMismatch(String),
}

/// An order with the bill the store signed, as the client keeps it.
#[derive(Debug, Clone)]
pub struct Order {
    pub view: BillBody,
    pub bill: Bill,
    pub encoded: Vec<u8>,
    pub signature: Signature,
}

/// How an update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Completed { balance_after: Amount },
    Voided,
}

/// The holder's client of one store and one settlement system.
#[derive(Debug, Clone)]
pub struct Holder {
    pub store: ServiceClient,
    pub settlement: ServiceClient,
    checks: ClientChecks,
    /// Store keys the information server gave, asked once per store.
    store_keys: std::sync::Arc<
        std::sync::Mutex<std::collections::BTreeMap<valuecard_core::ids::DeviceId, PublicKey>>,
    >,
}

impl Holder {
    /// A client of the store at `store_url` and the settlement system at `settlement_url`,
    /// checking the settlement system's documents under `application_key`.
    pub fn new(
        store_url: &str,
        store_pin: &CenterPin,
        settlement_url: &str,
        settlement_pin: &CenterPin,
        application_key: PublicKey,
    ) -> Self {
        Holder {
            store: ServiceClient::new("the store", store_url, store_pin),
            settlement: ServiceClient::new(
                "the settlement service",
                settlement_url,
                settlement_pin,
            ),
            checks: ClientChecks { application_key },
            store_keys: Default::default(),
        }
    }

    pub fn catalog(&self) -> Result<CatalogBody, HolderError> {
        self.store.get("/v1/catalog", None)
    }

    fn lines(order: &[(String, u32)]) -> OrderRequestBody {
        OrderRequestBody {
            lines: order
                .iter()
                .map(|(sku, quantity)| OrderLineBody {
                    sku: sku.clone(),
                    quantity: *quantity,
                })
                .collect(),
        }
    }

    /// ST2-ST3: what the order would cost.
    pub fn estimate(&self, order: &[(String, u32)]) -> Result<BillBody, HolderError> {
        self.store.post("/v1/estimate", &Self::lines(order))
    }

    /// ST4-ST5: the order and its bill SIG1 (checked later by the settlement system, whose
    /// registry has the store's key; the client keeps the bill to check SIG2 against).
    pub fn order(&self, order: &[(String, u32)]) -> Result<Order, HolderError> {
        let view: BillBody = self.store.post("/v1/orders", &Self::lines(order))?;
        let service = "the store";
        let encoded = hex_of(service, "bill", view.bill.as_deref().unwrap_or_default())?;
        let bill = Bill::decode(&encoded).map_err(|error| HolderError::Malformed {
            service,
            reason: format!("bill: {error}"),
        })?;
        let signature = signature_of(service, "signature", view.signature.as_deref())?;
        Ok(Order {
            view,
            bill,
            encoded,
            signature,
        })
    }

    /// The store's key as the settlement system's information server registered it.
    fn store_key(&self, bill: &Bill) -> Result<PublicKey, HolderError> {
        let known = |keys: &std::sync::Mutex<std::collections::BTreeMap<_, PublicKey>>| {
            keys.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&bill.store)
                .copied()
        };
        if let Some(key) = known(&self.store_keys) {
            return Ok(key);
        }
        let info: StoreInfoBody = self.settlement.get(
            &format!("/v1/stores/{}", hex::encode(bill.store.as_bytes())),
            None,
        )?;
        let bytes = hex_of("the settlement service", "public_key", &info.public_key)?;
        let key = PublicKey::from_bytes(&bytes).map_err(|_| HolderError::Malformed {
            service: "the settlement service",
            reason: "public_key: not a key".into(),
        })?;
        self.store_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(bill.store, key);
        Ok(key)
    }

    /// Fig. 20: the order's content, for the receipt.
    pub fn download(&self, paid: &Paid) -> Result<Vec<u8>, HolderError> {
        self.store.post_raw(
            &format!("/v1/orders/{}/content", paid.order_number),
            &ContentRequestBody {
                receipt_signature: hex::encode(paid.receipt_signature.0),
            },
        )
    }

    /// The card's log at the information server.
    pub fn card_log(&self, card_id: &CardId, token: &str) -> Result<CardLogBody, HolderError> {
        self.settlement.get(
            &format!("/v1/cards/{}/log", hex::encode(card_id.as_bytes())),
            Some(token),
        )
    }
}

fn hex_of(service: &'static str, field: &str, text: &str) -> Result<Vec<u8>, HolderError> {
    hex::decode(text).map_err(|error| HolderError::Malformed {
        service,
        reason: format!("{field}: {error}"),
    })
}

fn signature_of(
    service: &'static str,
    field: &str,
    text: Option<&str>,
) -> Result<Signature, HolderError> {
    let bytes = hex_of(service, field, text.unwrap_or_default())?;
    Signature::from_slice(&bytes).map_err(|_| HolderError::Malformed {
        service,
        reason: format!("{field}: not a signature"),
    })
}

fn settlement_id_of(text: &str) -> Result<SettlementId, HolderError> {
    SettlementId::try_from(hex_of("the settlement service", "settlement_id", text)?.as_slice())
        .map_err(|_| HolderError::Malformed {
            service: "the settlement service",
            reason: "settlement_id: wrong length".into(),
        })
}

fn resolution(outcome: &OutcomeBody) -> Result<Resolution, HolderError> {
    match outcome.outcome {
        UpdateOutcome::Completed => Ok(Resolution::Completed {
            balance_after: balance_after(outcome)?,
        }),
        UpdateOutcome::Voided => Ok(Resolution::Voided),
    }
}

/// A completed update's balance after, as the card's completion gave it.
fn balance_after(outcome: &OutcomeBody) -> Result<Amount, HolderError> {
    outcome
        .balance_after
        .and_then(|minor| Amount::new(minor).ok())
        .ok_or_else(|| HolderError::Malformed {
            service: "the settlement service",
            reason: "a completed update without the balance after it".into(),
        })
}

/// The unresolved update a 409 names, if it names one.
fn open_update(problem: &Problem) -> Option<String> {
    (problem.kind == crate::service::ProblemKind::Conflict)
        .then(|| problem.open_update.clone())
        .flatten()
}
