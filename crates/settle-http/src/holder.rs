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

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use valuecard_center_http::CenterPin;
use valuecard_core::apdu::Command;
use valuecard_core::cert::Certificate;
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_core::ids::CardId;
use valuecard_core::messages::online::{
    ins, BalanceInfo, Bill, InitializeUpdateResponse, OnlineFci, Receipt, SettlementCompletion,
    SettlementId, SettlementPreview, CLA_ONLINE, ONLINE_AID,
};
use valuecard_core::messages::purse::{PurseStatus, SelectResponse, PURSE_AID};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};
use valuecard_settle::application::{ClientChecks, DocumentError};

use crate::service::Problem;
use crate::wire::{
    AuthenticatedBody, BillBody, CardAnswerBody, CardLogBody, CatalogBody, ChargeRequestBody,
    CompletionBody, ContentRequestBody, CreditCardBody, Embodiment, KeyInstallationBody,
    KeyRequestBody, OfferBody, OrderLineBody, OrderRequestBody, OutcomeBody, PaymentRequestBody,
    ReceiptBody, SealedBody, StartedBody, StoreInfoBody,
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

/// A service reached over HTTPS with its certificate pinned.
#[derive(Clone)]
pub struct ServiceClient {
    name: &'static str,
    agent: ureq::Agent,
    origin: String,
}

impl core::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ServiceClient({} at {})", self.name, self.origin)
    }
}

impl ServiceClient {
    pub fn new(name: &'static str, url: &str, pin: &CenterPin) -> Self {
        ServiceClient {
            name,
            agent: valuecard_center_http::client::pinned_agent(REQUEST_TIMEOUT, pin),
            origin: url.trim_end_matches('/').to_owned(),
        }
    }

    fn unreachable(&self, reason: impl core::fmt::Display) -> HolderError {
        HolderError::Unreachable {
            service: self.name,
            reason: reason.to_string(),
        }
    }

    fn answer(
        &self,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Vec<u8>, HolderError> {
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(4 * 1024 * 1024)
            .read_to_vec()
            .map_err(|error| self.unreachable(error))?;
        if status == 200 {
            return Ok(body);
        }
        match serde_json::from_slice::<Problem>(&body) {
            Ok(problem) => Err(HolderError::Service(problem)),
            Err(_) => Err(HolderError::Malformed {
                service: self.name,
                reason: format!("status {status} without a problem document"),
            }),
        }
    }

    fn decode<A: DeserializeOwned>(&self, body: &[u8]) -> Result<A, HolderError> {
        serde_json::from_slice(body).map_err(|error| HolderError::Malformed {
            service: self.name,
            reason: error.to_string(),
        })
    }

    /// `POST path` with `body`, the answer's bytes.
    pub fn post_raw<B: Serialize>(&self, path: &str, body: &B) -> Result<Vec<u8>, HolderError> {
        let bytes = serde_json::to_vec(body).map_err(|error| self.unreachable(error))?;
        let response = self
            .agent
            .post(&format!("{}{path}", self.origin))
            .header("content-type", crate::service::JSON)
            .send(&bytes[..])
            .map_err(|error| self.unreachable(error))?;
        self.answer(response)
    }

    pub fn post<B: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, HolderError> {
        let bytes = self.post_raw(path, body)?;
        self.decode(&bytes)
    }

    pub fn get<A: DeserializeOwned>(
        &self,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<A, HolderError> {
        let mut request = self.agent.get(&format!("{}{path}", self.origin));
        if let Some(token) = bearer {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let response = request.call().map_err(|error| self.unreachable(error))?;
        let bytes = self.answer(response)?;
        self.decode(&bytes)
    }
}

/// An order with the bill the store signed, as the client keeps it.
#[derive(Debug, Clone)]
pub struct Order {
    pub view: BillBody,
    pub bill: Bill,
    pub encoded: Vec<u8>,
    pub signature: Signature,
}

/// A payment sealed for the card and not yet applied: what the holder confirms (ST15).
#[derive(Debug, Clone)]
pub struct PreparedPayment {
    pub settlement_id: SettlementId,
    pub card_id: CardId,
    pub order_number: u64,
    pub total: Amount,
    pub balance: Amount,
    pub spendable: Amount,
    pub balance_after: Amount,
    pub embodiment: Embodiment,
    /// SETTLE's command data.
    update: Vec<u8>,
    /// A token to read the card's log.
    pub log_token: String,
}

/// A paid order: the completion SIG3 and, once the store gave it, the receipt SIG4.
#[derive(Debug, Clone)]
pub struct Paid {
    pub settlement_id: SettlementId,
    pub order_number: u64,
    pub amount: Amount,
    pub balance_after: Amount,
    pub completion: SettlementCompletion,
    pub receipt: Receipt,
    pub receipt_signature: Signature,
}

/// A charge authorized and sealed for the card, not yet applied.
#[derive(Debug, Clone)]
pub struct PreparedCharge {
    pub settlement_id: SettlementId,
    pub card_id: CardId,
    pub amount: Amount,
    pub authorization: String,
    pub balance: Amount,
    pub balance_after: Amount,
    update: Vec<u8>,
    pub log_token: String,
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

fn exchange(
    reader: &mut dyn CardReader,
    command: &'static str,
    apdu: &Command,
) -> Result<Vec<u8>, HolderError> {
    let response = reader.exchange(apdu).map_err(|error| match error {
        ReaderError::MalformedResponse(_) => HolderError::CardAnswer {
            command,
            reason: error.to_string(),
        },
        other => HolderError::CardMissing(other),
    })?;
    if response.sw != StatusWord::SUCCESS {
        return Err(HolderError::CardRefused {
            command,
            status: response.sw,
        });
    }
    Ok(response.data)
}

fn online(
    reader: &mut dyn CardReader,
    command: &'static str,
    instruction: u8,
    p1: u8,
    data: Vec<u8>,
) -> Result<Vec<u8>, HolderError> {
    exchange(
        reader,
        command,
        &Command::new(CLA_ONLINE, instruction, p1, 0)
            .with_data(data)
            .with_le(256),
    )
}

fn card_answer<T>(
    command: &'static str,
    decoded: Result<T, valuecard_core::messages::DecodeError>,
) -> Result<T, HolderError> {
    decoded.map_err(|error| HolderError::CardAnswer {
        command,
        reason: error.to_string(),
    })
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

/// What the purse application shows: the card's certificate and its balance (ST104).
#[derive(Debug, Clone)]
pub struct CardView {
    pub card_id: CardId,
    pub certificate: Option<Certificate>,
    pub status: PurseStatus,
}

/// Reads the purse application: the card's ID, certificate and balance, in the clear.
pub fn read_card(reader: &mut dyn CardReader) -> Result<CardView, HolderError> {
    let select = exchange(
        reader,
        "SELECT",
        &Command::new(0x00, 0xA4, 0x04, 0x00)
            .with_data(PURSE_AID.to_vec())
            .with_le(256),
    )?;
    let selected = card_answer("SELECT", SelectResponse::decode(&select))?;
    let status = exchange(
        reader,
        "READ PURSE",
        &Command::new(
            valuecard_core::messages::purse::CLA_PROPRIETARY,
            valuecard_core::messages::purse::ins::READ_PURSE,
            0,
            0,
        )
        .with_le(256),
    )?;
    let status = card_answer("READ PURSE", PurseStatus::decode(&status))?;
    Ok(CardView {
        card_id: status.card_id,
        certificate: selected.certificate,
        status,
    })
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

    /// Selects the online application, installing KC first if the card has none.
    fn select_online(&self, reader: &mut dyn CardReader) -> Result<OnlineFci, HolderError> {
        let select = |reader: &mut dyn CardReader| -> Result<OnlineFci, HolderError> {
            let data = exchange(
                reader,
                "SELECT",
                &Command::new(0x00, 0xA4, 0x04, 0x00)
                    .with_data(ONLINE_AID.to_vec())
                    .with_le(256),
            )?;
            card_answer("SELECT", OnlineFci::decode(&data))
        };
        let fci = select(reader)?;
        if fci.key_version.is_some() {
            return Ok(fci);
        }
        let card = read_card(reader)?;
        let certificate = card.certificate.ok_or(HolderError::CardRefused {
            command: "SELECT",
            status: StatusWord(0x6985),
        })?;
        let installation: KeyInstallationBody = self.settlement.post(
            "/v1/cards/key",
            &KeyRequestBody {
                card_certificate: hex::encode(certificate.encode()),
            },
        )?;
        let data = hex_of(
            "the settlement service",
            "installation",
            &installation.installation,
        )?;
        select(reader)?;
        online(reader, "INSTALL KEY", ins::INSTALL_KEY, 0, data)?;
        select(reader)
    }

    /// ST10-ST13: INITIALIZE UPDATE, EXTERNAL AUTHENTICATE and BRC through the card; gives
    /// the card's sealed BI and the log token.
    fn authenticate(
        &self,
        reader: &mut dyn CardReader,
        base: &str,
        started: &StartedBody,
    ) -> Result<(Vec<u8>, String), HolderError> {
        let service = "the settlement service";
        let initialize = hex_of(service, "initialize_update", &started.initialize_update)?;
        let answer = online(
            reader,
            "INITIALIZE UPDATE",
            ins::INITIALIZE_UPDATE,
            0,
            initialize,
        )?;
        card_answer(
            "INITIALIZE UPDATE",
            InitializeUpdateResponse::decode(&answer),
        )?;
        let authenticated: AuthenticatedBody = self.settlement.post(
            &format!("{base}/authenticate"),
            &CardAnswerBody {
                card_answer: hex::encode(answer),
            },
        )?;
        let external = hex_of(
            service,
            "external_authenticate",
            &authenticated.external_authenticate,
        )?;
        online(
            reader,
            "EXTERNAL AUTHENTICATE",
            ins::EXTERNAL_AUTHENTICATE,
            0,
            external,
        )?;
        let brc = hex_of(service, "balance_request", &authenticated.balance_request)?;
        let sealed_info = online(reader, "READ BALANCE", ins::READ_BALANCE, 0, brc)?;
        Ok((sealed_info, authenticated.log_token))
    }

    /// ST8-ST14 for a payment or a charge: starts the update (an earlier update of the card
    /// left unresolved is resolved with the card first), authenticates with the card, and
    /// gives the offer with the sealed update and the log token.
    fn start_and_offer<B: Serialize>(
        &self,
        reader: &mut dyn CardReader,
        path: &str,
        request: &B,
    ) -> Result<(SettlementId, OfferBody, Vec<u8>, String), HolderError> {
        let started: StartedBody = match self.settlement.post(path, request) {
            Err(HolderError::Service(problem)) if open_update(&problem).is_some() => {
                let open = open_update(&problem).unwrap_or_default();
                self.resolve(reader, &settlement_id_of(&open)?)?;
                self.select_online(reader)?;
                self.settlement.post(path, request)?
            }
            other => other?,
        };
        let settlement_id = settlement_id_of(&started.settlement_id)?;
        let base = format!("/v1/updates/{}", started.settlement_id);
        let (sealed_info, log_token) = self.authenticate(reader, &base, &started)?;
        let offer: OfferBody = self.settlement.post(
            &format!("{base}/offer"),
            &SealedBody {
                sealed: hex::encode(sealed_info),
            },
        )?;
        let update = hex_of("the settlement service", "update", &offer.update)?;
        Ok((settlement_id, offer, update, log_token))
    }

    /// ST7-ST15: the payment of `order` prepared up to the offer the holder confirms. An
    /// earlier update of the card left unresolved is resolved first.
    pub fn prepare_payment(
        &self,
        reader: &mut dyn CardReader,
        order: &Order,
        embodiment: Embodiment,
    ) -> Result<PreparedPayment, HolderError> {
        let fci = self.select_online(reader)?;
        // ST104-ST105: the sealed embodiment shows the balance read from the card itself.
        let local = match embodiment {
            Embodiment::Sealed => Some(read_card(reader)?.status),
            Embodiment::Signed => None,
        };
        if local.is_some() {
            self.select_online(reader)?;
        }
        let request = PaymentRequestBody {
            bill: hex::encode(&order.encoded),
            bill_signature: hex::encode(order.signature.0),
            card_id: hex::encode(fci.card_id.as_bytes()),
            embodiment,
        };
        let (settlement_id, offer, update, log_token) =
            self.start_and_offer(reader, "/v1/payments", &request)?;
        let service = "the settlement service";
        let (balance, spendable, balance_after) = match embodiment {
            Embodiment::Signed => {
                // ST15: SIG2 over the bill this client got from the store, BI and the SPC.
                let info = self.checks.offer(
                    &settlement_id,
                    &order.bill,
                    &hex_of(
                        service,
                        "balance_info",
                        offer.balance_info.as_deref().unwrap_or_default(),
                    )?,
                    &update,
                    &signature_of(service, "signature", offer.signature.as_deref())?,
                )?;
                check_info(&info, &fci.card_id, &settlement_id)?;
                let after = info.balance.checked_sub(order.bill.total).map_err(|_| {
                    HolderError::OfferMismatch("the bill is above the balance".into())
                })?;
                (info.balance, info.spendable, after)
            }
            Embodiment::Sealed => {
                // ST109: the card opens the offer itself; the holder sees what the card will do.
                let preview = card_answer(
                    "PREVIEW",
                    SettlementPreview::decode(&online(
                        reader,
                        "PREVIEW",
                        ins::PREVIEW,
                        0,
                        update.clone(),
                    )?),
                )?;
                if preview.settlement_id != settlement_id
                    || preview.amount != order.bill.total
                    || preview.party != order.bill.member_store.unwrap_or(order.bill.store)
                {
                    return Err(HolderError::OfferMismatch(format!(
                        "the card shows {} to {}, the bill says {} to {}",
                        preview.amount,
                        preview.party,
                        order.bill.total,
                        order.bill.member_store.unwrap_or(order.bill.store)
                    )));
                }
                let spendable = local.map_or(preview.balance_before, |status| status.balance);
                (preview.balance_before, spendable, preview.balance_after)
            }
        };
        Ok(PreparedPayment {
            settlement_id,
            card_id: fci.card_id,
            order_number: order.bill.order_number,
            total: order.bill.total,
            balance,
            spendable,
            balance_after,
            embodiment,
            update,
            log_token,
        })
    }

    /// ST16-ST20: SETTLE on the card, the PCN to the settlement system, the completion SIG3
    /// and the receipt SIG4 checked (the receipt asked of the store if the settlement system
    /// could not get it).
    pub fn confirm_payment(
        &self,
        reader: &mut dyn CardReader,
        order: &Order,
        prepared: &PreparedPayment,
    ) -> Result<Paid, HolderError> {
        let pcn = online(reader, "SETTLE", ins::SETTLE, 0, prepared.update.clone())?;
        let outcome: OutcomeBody = self.settlement.post(
            &format!(
                "/v1/updates/{}/complete",
                hex::encode(prepared.settlement_id)
            ),
            &SealedBody {
                sealed: hex::encode(pcn),
            },
        )?;
        self.paid(order, &outcome)
    }

    /// The documents of a completed payment, checked.
    pub fn paid(&self, order: &Order, outcome: &OutcomeBody) -> Result<Paid, HolderError> {
        let service = "the settlement service";
        let settlement_id = settlement_id_of(&outcome.settlement_id)?;
        let completion = SettlementCompletion::decode(&hex_of(
            service,
            "completion",
            outcome.completion.as_deref().unwrap_or_default(),
        )?)
        .map_err(|error| HolderError::Malformed {
            service,
            reason: format!("completion: {error}"),
        })?;
        let completion_signature = signature_of(
            service,
            "completion_signature",
            outcome.completion_signature.as_deref(),
        )?;
        self.checks.completion(
            &settlement_id,
            &order.bill,
            &completion,
            &completion_signature,
        )?;
        let store_key = self.store_key(&order.bill)?;
        let (receipt, receipt_signature) = match (&outcome.receipt, &outcome.receipt_signature) {
            (Some(receipt), Some(signature)) => (
                Receipt::decode(&hex_of(service, "receipt", receipt)?).map_err(|error| {
                    HolderError::Malformed {
                        service,
                        reason: format!("receipt: {error}"),
                    }
                })?,
                signature_of(service, "receipt_signature", Some(signature))?,
            ),
            _ => {
                let answer: ReceiptBody = self.store.post(
                    &format!("/v1/orders/{}/completion", order.bill.order_number),
                    &CompletionBody {
                        completion: hex::encode(completion.encode()),
                        signature: hex::encode(completion_signature.0),
                    },
                )?;
                (
                    Receipt::decode(&hex_of("the store", "receipt", &answer.receipt)?).map_err(
                        |error| HolderError::Malformed {
                            service: "the store",
                            reason: format!("receipt: {error}"),
                        },
                    )?,
                    signature_of("the store", "signature", Some(&answer.signature))?,
                )
            }
        };
        self.checks
            .receipt(&store_key, &completion, &receipt, &receipt_signature)?;
        Ok(Paid {
            settlement_id,
            order_number: order.bill.order_number,
            amount: completion.amount,
            balance_after: Amount::new(outcome.balance_after.unwrap_or_default())
                .unwrap_or(Amount::ZERO),
            completion,
            receipt,
            receipt_signature,
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

    /// Figs. 25-29: the charge authorized against the credit card and sealed for the card,
    /// SIG5 checked; not yet applied.
    pub fn prepare_charge(
        &self,
        reader: &mut dyn CardReader,
        amount: Amount,
        credit_card: CreditCardBody,
    ) -> Result<PreparedCharge, HolderError> {
        let fci = self.select_online(reader)?;
        let request = ChargeRequestBody {
            card_id: hex::encode(fci.card_id.as_bytes()),
            amount: amount.minor(),
            credit_card,
        };
        let (settlement_id, offer, update, log_token) =
            self.start_and_offer(reader, "/v1/charges", &request)?;
        let service = "the settlement service";
        let authorization = offer.authorization.clone().unwrap_or_default();
        self.checks.charge(
            &settlement_id,
            &fci.card_id,
            amount,
            &authorization,
            &update,
            &signature_of(service, "signature", offer.signature.as_deref())?,
        )?;
        let info = BalanceInfo::decode(&hex_of(
            service,
            "balance_info",
            offer.balance_info.as_deref().unwrap_or_default(),
        )?)
        .map_err(|error| HolderError::Malformed {
            service,
            reason: format!("balance_info: {error}"),
        })?;
        check_info(&info, &fci.card_id, &settlement_id)?;
        let balance_after = info
            .balance
            .checked_add(amount)
            .map_err(|_| HolderError::OfferMismatch("past the largest balance".into()))?;
        Ok(PreparedCharge {
            settlement_id,
            card_id: fci.card_id,
            amount,
            authorization,
            balance: info.balance,
            balance_after,
            update,
            log_token,
        })
    }

    /// Figs. 30-32: CHARGE on the card, the completion to the settlement system.
    pub fn confirm_charge(
        &self,
        reader: &mut dyn CardReader,
        prepared: &PreparedCharge,
    ) -> Result<Resolution, HolderError> {
        let pcn = online(reader, "CHARGE", ins::CHARGE, 0, prepared.update.clone())?;
        let outcome: OutcomeBody = self.settlement.post(
            &format!(
                "/v1/updates/{}/complete",
                hex::encode(prepared.settlement_id)
            ),
            &SealedBody {
                sealed: hex::encode(pcn),
            },
        )?;
        resolution(&outcome)
    }

    /// Resolves the update `settlement_id` with the card (a new session: GET COMPLETION):
    /// completed if the card applied it, voided otherwise; also how a holder cancels an
    /// offer at ST15.
    pub fn resolve(
        &self,
        reader: &mut dyn CardReader,
        settlement_id: &SettlementId,
    ) -> Result<(Resolution, OutcomeBody), HolderError> {
        let base = format!("/v1/updates/{}/recover", hex::encode(settlement_id));
        let begun = self.settlement.post_raw(&base, &serde_json::json!({}))?;
        if let Ok(outcome) = serde_json::from_slice::<OutcomeBody>(&begun) {
            return Ok((resolution(&outcome)?, outcome));
        }
        let started: StartedBody = self.settlement.decode(&begun)?;
        self.select_online(reader)?;
        let (sealed_info, _) = self.authenticate(reader, &base, &started)?;
        let query: SealedBody = self.settlement.post(
            &format!("{base}/query"),
            &SealedBody {
                sealed: hex::encode(sealed_info),
            },
        )?;
        let status = online(
            reader,
            "GET COMPLETION",
            ins::GET_COMPLETION,
            0,
            hex_of("the settlement service", "sealed", &query.sealed)?,
        )?;
        let outcome: OutcomeBody = self.settlement.post(
            &format!("{base}/resolve"),
            &SealedBody {
                sealed: hex::encode(status),
            },
        )?;
        Ok((resolution(&outcome)?, outcome))
    }

    /// The card's log at the information server.
    pub fn card_log(&self, card_id: &CardId, token: &str) -> Result<CardLogBody, HolderError> {
        self.settlement.get(
            &format!("/v1/cards/{}/log", hex::encode(card_id.as_bytes())),
            Some(token),
        )
    }
}

/// BI must be this card's, for this settlement.
fn check_info(
    info: &BalanceInfo,
    card_id: &CardId,
    settlement_id: &SettlementId,
) -> Result<(), HolderError> {
    if info.card_id != *card_id || info.settlement_id != *settlement_id {
        return Err(HolderError::OfferMismatch(
            "the balance is another card's or another settlement's".into(),
        ));
    }
    Ok(())
}

fn resolution(outcome: &OutcomeBody) -> Result<Resolution, HolderError> {
    match outcome.outcome.as_str() {
        "completed" => Ok(Resolution::Completed {
            balance_after: Amount::new(outcome.balance_after.unwrap_or_default())
                .unwrap_or(Amount::ZERO),
        }),
        "voided" => Ok(Resolution::Voided),
        other => Err(HolderError::Malformed {
            service: "the settlement service",
            reason: format!("outcome {other:?}"),
        }),
    }
}

/// The unresolved update a 409 names, if that is what it says.
fn open_update(problem: &Problem) -> Option<String> {
    if problem.kind != crate::service::ProblemKind::Conflict {
        return None;
    }
    let rest = problem.detail.strip_prefix("update ")?;
    let id = rest.split_whitespace().next()?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}
