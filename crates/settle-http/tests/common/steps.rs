//! One update driven by hand, request by request and command by command, so that a test can
//! stop between any two steps, ask a step again, or swap in altered or foreign bytes. The
//! holder's client (`Holder`) runs the same steps in one go; these helpers keep every
//! answer's bytes for the test to compare.

use serde::de::DeserializeOwned;
use serde::Serialize;
use valuecard_core::apdu::{Command, Response};
use valuecard_core::ids::CardId;
use valuecard_core::messages::online::{ins, OnlineFci, SettlementId, CLA_ONLINE, ONLINE_AID};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_reader::CardReader;
use valuecard_settle_http::holder::{read_card, Holder, HolderError, Order};
use valuecard_settle_http::wire::{
    AuthenticatedBody, CardAnswerBody, ChargeRequestBody, CreditCardBody, Embodiment,
    KeyInstallationBody, KeyRequestBody, OfferBody, OutcomeBody, PaymentRequestBody, SealedBody,
    StartedBody,
};
use valuecard_settle_http::{Problem, ProblemKind};

/// One online command to the card, its answer whatever the status.
pub fn online(reader: &mut dyn CardReader, instruction: u8, data: Vec<u8>) -> Response {
    reader
        .exchange(
            &Command::new(CLA_ONLINE, instruction, 0, 0)
                .with_data(data)
                .with_le(256),
        )
        .expect("the card answers")
}

/// One online command the card must accept; its answer's data.
pub fn online_ok(reader: &mut dyn CardReader, instruction: u8, data: Vec<u8>) -> Vec<u8> {
    let response = online(reader, instruction, data);
    assert_eq!(
        response.sw,
        StatusWord::SUCCESS,
        "instruction {instruction:02X}"
    );
    response.data
}

/// SELECT of the online application: a new card session starts from nothing.
pub fn select_online(reader: &mut dyn CardReader) -> OnlineFci {
    let response = reader
        .exchange(
            &Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(ONLINE_AID.to_vec())
                .with_le(256),
        )
        .expect("the card answers");
    assert_eq!(response.sw, StatusWord::SUCCESS, "SELECT");
    OnlineFci::decode(&response.data).expect("the FCI decodes")
}

/// Installs KC on the card if it has none, as the holder's client does before its first
/// update; leaves the online application selected and gives the card's ID.
pub fn install_key(holder: &Holder, reader: &mut dyn CardReader) -> CardId {
    let fci = select_online(reader);
    if fci.key_version.is_some() {
        return fci.card_id;
    }
    let certificate = read_card(reader)
        .unwrap()
        .certificate
        .expect("an issued card has a certificate");
    let installation: KeyInstallationBody = holder
        .settlement
        .post(
            "/v1/cards/key",
            &KeyRequestBody {
                card_certificate: hex::encode(certificate.encode()),
            },
        )
        .unwrap();
    select_online(reader);
    online_ok(
        reader,
        ins::INSTALL_KEY,
        hex::decode(installation.installation).unwrap(),
    );
    let fci = select_online(reader);
    assert!(fci.key_version.is_some(), "KC installed");
    fci.card_id
}

/// Decodes an answer's bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> T {
    serde_json::from_slice(bytes).expect("the answer decodes")
}

/// The problem a refused request answered, or a panic naming what came instead.
pub fn problem<T: core::fmt::Debug>(result: Result<T, HolderError>) -> Problem {
    match result {
        Err(HolderError::Service(problem)) => problem,
        other => panic!("expected a problem document, got {other:?}"),
    }
}

/// Asserts that `result` is a problem of `kind`.
pub fn assert_problem<T: core::fmt::Debug>(result: Result<T, HolderError>, kind: ProblemKind) {
    let problem = problem(result);
    assert_eq!(problem.kind, kind, "{problem:?}");
}

/// The hex ID of an update.
pub fn id_hex(id: &SettlementId) -> String {
    hex::encode(id)
}

/// One update at the settlement service, driven step by step.
#[derive(Debug, Clone)]
pub struct Manual {
    pub id: SettlementId,
    pub card_id: CardId,
    pub started: StartedBody,
}

impl Manual {
    /// `POST /v1/payments` for `order` (its bill and SIG1 as the store gave them).
    pub fn payment(
        holder: &Holder,
        reader: &mut dyn CardReader,
        order: &Order,
        embodiment: Embodiment,
    ) -> Result<Manual, HolderError> {
        Self::payment_of(
            holder,
            reader,
            &order.encoded,
            &order.signature.0,
            embodiment,
        )
    }

    /// `POST /v1/payments` with any bill bytes and signature, for forged bills.
    pub fn payment_of(
        holder: &Holder,
        reader: &mut dyn CardReader,
        bill: &[u8],
        signature: &[u8],
        embodiment: Embodiment,
    ) -> Result<Manual, HolderError> {
        let card_id = install_key(holder, reader);
        let request = PaymentRequestBody {
            bill: hex::encode(bill),
            bill_signature: hex::encode(signature),
            card_id: hex::encode(card_id.as_bytes()),
            embodiment,
        };
        Self::started(card_id, holder.settlement.post("/v1/payments", &request)?)
    }

    /// `POST /v1/charges`.
    pub fn charge(
        holder: &Holder,
        reader: &mut dyn CardReader,
        amount: Amount,
        credit_card: CreditCardBody,
    ) -> Result<Manual, HolderError> {
        let card_id = install_key(holder, reader);
        let request = ChargeRequestBody {
            card_id: hex::encode(card_id.as_bytes()),
            amount: amount.minor(),
            credit_card,
        };
        Self::started(card_id, holder.settlement.post("/v1/charges", &request)?)
    }

    fn started(card_id: CardId, started: StartedBody) -> Result<Manual, HolderError> {
        let id = SettlementId::try_from(hex::decode(&started.settlement_id).unwrap().as_slice())
            .expect("a settlement ID");
        Ok(Manual {
            id,
            card_id,
            started,
        })
    }

    fn path(&self, step: &str) -> String {
        format!("/v1/updates/{}/{step}", id_hex(&self.id))
    }

    /// INITIALIZE UPDATE on the card: its answer.
    pub fn initialize(&self, reader: &mut dyn CardReader) -> Vec<u8> {
        online_ok(
            reader,
            ins::INITIALIZE_UPDATE,
            hex::decode(&self.started.initialize_update).unwrap(),
        )
    }

    /// `POST …/authenticate` with the card's answer: the answer's bytes.
    pub fn authenticate(&self, holder: &Holder, answer: &[u8]) -> Result<Vec<u8>, HolderError> {
        self.post(holder, "authenticate", &answer_body(answer))
    }

    /// `POST …/offer` with the card's sealed BI: the answer's bytes.
    pub fn offer(&self, holder: &Holder, sealed_info: &[u8]) -> Result<Vec<u8>, HolderError> {
        self.post(holder, "offer", &sealed(sealed_info))
    }

    /// `POST …/complete` with the card's PCN: the answer's bytes.
    pub fn complete(&self, holder: &Holder, pcn: &[u8]) -> Result<Vec<u8>, HolderError> {
        self.post(holder, "complete", &sealed(pcn))
    }

    fn post<B: Serialize>(
        &self,
        holder: &Holder,
        step: &str,
        body: &B,
    ) -> Result<Vec<u8>, HolderError> {
        holder.settlement.post_raw(&self.path(step), body)
    }

    /// INITIALIZE UPDATE and `…/authenticate`.
    pub fn authenticated(&self, holder: &Holder, reader: &mut dyn CardReader) -> AuthenticatedBody {
        let answer = self.initialize(reader);
        decode(&self.authenticate(holder, &answer).unwrap())
    }

    /// Up to the offer: the card's sealed BI sent, the offer answered.
    pub fn offered(&self, holder: &Holder, reader: &mut dyn CardReader) -> OfferBody {
        let authenticated = self.authenticated(holder, reader);
        let sealed_info = read_balance(reader, &authenticated);
        decode(&self.offer(holder, &sealed_info).unwrap())
    }

    /// SETTLE (a payment) or CHARGE (a charge) of the offer on the card: the PCN.
    pub fn apply(&self, reader: &mut dyn CardReader, offer: &OfferBody) -> Vec<u8> {
        online_ok(
            reader,
            self.instruction(),
            hex::decode(&offer.update).unwrap(),
        )
    }

    /// SETTLE or CHARGE, whichever this update is.
    pub fn instruction(&self) -> u8 {
        if self.started.authorization.is_some() {
            ins::CHARGE
        } else {
            ins::SETTLE
        }
    }

    /// Every step to the end: the outcome.
    pub fn run(&self, holder: &Holder, reader: &mut dyn CardReader) -> OutcomeBody {
        let offer = self.offered(holder, reader);
        let pcn = self.apply(reader, &offer);
        decode(&self.complete(holder, &pcn).unwrap())
    }
}

/// EXTERNAL AUTHENTICATE and READ BALANCE on the card: its sealed BI.
pub fn read_balance(reader: &mut dyn CardReader, authenticated: &AuthenticatedBody) -> Vec<u8> {
    online_ok(
        reader,
        ins::EXTERNAL_AUTHENTICATE,
        hex::decode(&authenticated.external_authenticate).unwrap(),
    );
    online_ok(
        reader,
        ins::READ_BALANCE,
        hex::decode(&authenticated.balance_request).unwrap(),
    )
}

fn answer_body(answer: &[u8]) -> CardAnswerBody {
    CardAnswerBody {
        card_answer: hex::encode(answer),
    }
}

fn sealed(bytes: &[u8]) -> SealedBody {
    SealedBody {
        sealed: hex::encode(bytes),
    }
}
