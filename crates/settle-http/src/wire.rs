//! The JSON bodies of both services, shared by the services and their client. Binary
//! documents travel as hex of their one encoding (`valuecard_core::messages::online`); the
//! readable fields beside them (titles, totals) are for screens only and are never trusted
//! over the signed document.

use serde::{Deserialize, Serialize};

// ---- The store ----

/// One catalog item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogItemBody {
    pub sku: String,
    pub title: String,
    /// Minor units.
    pub price: u64,
    /// Hex device ID of the member store selling it.
    pub member_store_id: String,
    pub member_store: String,
}

/// `GET /v1/catalog`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogBody {
    pub store_id: String,
    pub store_name: String,
    pub items: Vec<CatalogItemBody>,
}

/// One line of an order as the holder chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLineBody {
    pub sku: String,
    pub quantity: u32,
}

/// `POST /v1/estimate` and `POST /v1/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequestBody {
    pub lines: Vec<OrderLineBody>,
}

/// A bill's line, for the screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillLineBody {
    pub title: String,
    pub quantity: u32,
    pub unit_price: u64,
    pub line_total: u64,
}

/// The answer to `POST /v1/estimate` (no order number, no signature) and to
/// `POST /v1/orders` (the bill signed SIG1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillBody {
    pub order_number: Option<u64>,
    pub member_store: String,
    pub lines: Vec<BillLineBody>,
    pub total: u64,
    pub expires: String,
    /// The bill's encoding (hex), for the settlement system: present on an order.
    pub bill: Option<String>,
    /// SIG1 (hex).
    pub signature: Option<String>,
}

/// `POST /v1/orders/{order}/completion`: the application server's completion ACN and SIG3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionBody {
    pub completion: String,
    pub signature: String,
}

/// The store's receipt and SIG4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub receipt: String,
    pub signature: String,
}

/// `POST /v1/orders/{order}/content`: the receipt's signature entitles its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRequestBody {
    pub receipt_signature: String,
}

// ---- The settlement system ----

/// `POST /v1/cards/key`: the card's certificate, for INSTALL KEY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequestBody {
    pub card_certificate: String,
}

/// The INSTALL KEY command data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInstallationBody {
    pub installation: String,
    pub key_version: u32,
}

/// Which embodiment a payment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Embodiment {
    /// ST1-ST20: the offer comes with BI in the clear and SIG2.
    Signed,
    /// ST101-ST112: the holder's balance is read from the card, the offer is only sealed
    /// under KSES, and the card itself shows it (PREVIEW).
    Sealed,
}

/// `POST /v1/payments` (ST8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequestBody {
    pub bill: String,
    pub bill_signature: String,
    pub card_id: String,
    pub embodiment: Embodiment,
}

/// `POST /v1/charges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequestBody {
    pub card_id: String,
    pub amount: u64,
    pub credit_card: CreditCardBody,
}

/// The credit card a charge is paid with; only its last four digits are kept.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditCardBody {
    pub number: String,
    /// `MM/YY`.
    pub expiry: String,
    pub holder_name: String,
}

impl core::fmt::Debug for CreditCardBody {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let digits: String = self.number.chars().filter(char::is_ascii_digit).collect();
        let last = digits.get(digits.len().saturating_sub(4)..).unwrap_or("");
        write!(f, "CreditCard(…{last})")
    }
}

/// The start of an update: its ID and INITIALIZE UPDATE for the card (ST10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartedBody {
    pub settlement_id: String,
    pub initialize_update: String,
    /// A charge's authorization code.
    pub authorization: Option<String>,
}

/// The card's answer to INITIALIZE UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardAnswerBody {
    pub card_answer: String,
}

/// EXTERNAL AUTHENTICATE and the sealed BRC for the card (ST11-ST12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatedBody {
    pub external_authenticate: String,
    pub balance_request: String,
    /// Reads this card's log at the information server: given only once the card proved
    /// KC.
    pub log_token: String,
}

/// The card's sealed BI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBody {
    pub sealed: String,
}

/// The update sealed for the card (ST14, or the charge's value update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferBody {
    /// SETTLE or CHARGE command data.
    pub update: String,
    /// BI in the clear (hex), under SIG2 or SIG5; absent in the sealed embodiment.
    pub balance_info: Option<String>,
    /// SIG2 (payment, signed embodiment) or SIG5 (charge).
    pub signature: Option<String>,
    pub authorization: Option<String>,
}

/// How an update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOutcome {
    /// The card applied it.
    Completed,
    /// It can never apply.
    Voided,
}

/// How an update ended, with its documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBody {
    pub outcome: UpdateOutcome,
    pub settlement_id: String,
    pub amount: u64,
    pub balance_after: Option<u64>,
    /// A payment's ACN (hex) and SIG3.
    pub completion: Option<String>,
    pub completion_signature: Option<String>,
    /// The store's receipt and SIG4, when the store answered.
    pub receipt: Option<String>,
    pub receipt_signature: Option<String>,
}

/// `GET /v1/updates/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStatusBody {
    pub settlement_id: String,
    pub kind: String,
    pub step: String,
    pub amount: u64,
    pub card_id: String,
}

/// `GET /v1/stores/{id}`: the information server's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreInfoBody {
    pub store_id: String,
    pub name: String,
    pub public_key: String,
}

/// One entry of a card's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntryBody {
    pub settlement_id: String,
    pub kind: String,
    pub amount: u64,
    pub balance_after: u64,
    pub counter: u32,
    pub date: String,
    pub party: String,
}

/// `GET /v1/cards/{card}/log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardLogBody {
    pub card_id: String,
    pub entries: Vec<LogEntryBody>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    pub status: String,
    pub database: String,
}
