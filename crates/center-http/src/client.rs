//! The device's link to the center over HTTPS: a blocking client that accepts only the
//! center's pinned certificate, signs every request with the device's SAM, accepts an answer
//! only with the center's signature bound to that request (see the crate documentation for
//! both schemes), and maps the center's problem documents back to [`CenterError`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use valuecard_center::auth::answer_signing_input;
use valuecard_center::PendingLoad;
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{
    CardCertificationRequest, CardIdAssignment, CardIdRequest, CardPersonalization, CenterError,
    CenterLink, LoadApproval, LoadOutcome, LoadRequest, LoadSettlement, SettlementChallengeRequest,
};
use valuecard_core::messages::purse::Challenge;
use valuecard_sam::Sam;

use crate::problem::{ProblemDocument, ProblemKind};
use crate::tls::CenterPin;
use crate::wire::{self, WireError};
use crate::{content_type, headers, paths};

/// How long one request may take, connection included, unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer the client reads.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// A [`CenterLink`] to the center's HTTP service.
pub struct HttpCenterLink {
    agent: ureq::Agent,
    /// The one certificate the center's service may present.
    pin: CenterPin,
    /// The center's root key, from the SAM's trust anchor: every answer is signed with it.
    center_key: PublicKey,
    /// `https://host:port`, without a trailing slash.
    origin: String,
    /// The path the service is mounted under (empty at the root), without a trailing slash.
    prefix: String,
    signer: Box<dyn RequestSigner>,
    device_id: DeviceId,
    next_sequence: u64,
}

impl core::fmt::Debug for HttpCenterLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpCenterLink")
            .field("center", &format_args!("{}{}", self.origin, self.prefix))
            .field("device_id", &self.device_id)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

/// What signs a device's requests to the center: the device's certified key and the
/// center's root key its answers are checked with.
pub trait RequestSigner: Send {
    fn device_id(&self) -> DeviceId;
    /// The center's root key (the device's trust anchor).
    fn center_key(&self) -> Result<PublicKey, CenterError>;
    /// Signs one request (over `valuecard_sam::request_signing_input`).
    fn sign_request(
        &mut self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, CenterError>;
}

/// A terminal's or dispenser's SAM as the signer of its requests.
struct SamSigner(Box<dyn Sam>);

impl RequestSigner for SamSigner {
    fn device_id(&self) -> DeviceId {
        self.0.device_id()
    }

    fn center_key(&self) -> Result<PublicKey, CenterError> {
        self.0
            .certificate()
            .map_err(|error| CenterError::Setup(format!("the device's SAM: {error}")))?;
        Ok(self
            .0
            .anchor()
            .map_err(|error| CenterError::Setup(format!("the device's SAM: {error}")))?
            .public_key)
    }

    fn sign_request(
        &mut self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, CenterError> {
        self.0
            .sign_device_request(method, path, sequence, body)
            .map_err(|error| CenterError::Setup(format!("the device's SAM cannot sign: {error}")))
    }
}

/// An agent that speaks only TLS to a server holding the pinned certificate's key: the
/// certificate is the only root, so no other certificate authority can vouch for anyone.
pub fn pinned_agent(timeout: Duration, pin: &CenterPin) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
            pin.ureq_certificate(),
        ])))
        .unversioned_rustls_crypto_provider(crate::tls::provider())
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .https_only(true)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .tls_config(tls)
        .build()
        .into()
}

/// Microseconds since the Unix epoch: where a device's sequence starts, so that a restarted
/// device still moves forward.
fn malformed_answer(what: &str, error: impl core::fmt::Display) -> CenterError {
    CenterError::Setup(format!(
        "the center's answer to {what} is malformed: {error}"
    ))
}

impl HttpCenterLink {
    /// A link to the service at `center_url` (`https://host:port`, optionally with a path
    /// prefix) that accepts only the certificate `pin`, signing with `sam`. The SAM must be
    /// installed: its trust anchor is the key the center's answers must verify under.
    pub fn new(center_url: &str, pin: &CenterPin, sam: Box<dyn Sam>) -> Result<Self, CenterError> {
        Self::with_signer(center_url, pin, Box::new(SamSigner(sam)))
    }

    /// A link that signs with `signer`: a device that is not a terminal (the online
    /// settlement system's security server) signs with its own keys.
    pub fn with_signer(
        center_url: &str,
        pin: &CenterPin,
        signer: Box<dyn RequestSigner>,
    ) -> Result<Self, CenterError> {
        let uri: ureq::http::Uri = center_url
            .parse()
            .map_err(|error| CenterError::Setup(format!("{center_url:?} is not a URL: {error}")))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some(other) => {
                return Err(CenterError::Setup(format!(
                    "{center_url}: the center is reached over https:// only, not {other}://"
                )))
            }
            None => {
                return Err(CenterError::Setup(format!(
                    "{center_url:?} needs a scheme: https://HOST:PORT"
                )))
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| CenterError::Setup(format!("{center_url:?} names no host")))?;
        if uri.query().is_some() {
            return Err(CenterError::Setup(format!(
                "{center_url:?}: a center URL has no query"
            )));
        }
        let center_key = signer.center_key()?;
        let device_id = signer.device_id();
        Ok(HttpCenterLink {
            agent: pinned_agent(DEFAULT_TIMEOUT, pin),
            pin: pin.clone(),
            center_key,
            origin: format!("https://{authority}"),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            signer,
            device_id,
            next_sequence: crate::now_micros(),
        })
    }

    /// Sets how long one request may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = pinned_agent(timeout, &self.pin);
        self
    }

    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The sequence the next request will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The card's loads the center holds in flight, for settling from the card's evidence.
    pub fn pending_loads(&mut self, card_id: &CardId) -> Result<Vec<PendingLoad>, CenterError> {
        let answer: wire::PendingLoadsBody =
            self.call("GET", &paths::pending_loads(card_id), None)?;
        let loads = answer
            .decode()
            .map_err(|error| malformed_answer("pending loads", error))?;
        if loads.iter().any(|load| load.card_id != *card_id) {
            return Err(malformed_answer("pending loads", "another card's loads"));
        }
        Ok(loads)
    }

    /// Sends one signed request and decodes the answer. A refusal as a replay (another
    /// process of the same device moved its sequence past ours) changed nothing at the
    /// center: the request is signed again once, from the current time.
    pub(crate) fn call<A: DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&dyn ErasedBody>,
    ) -> Result<A, CenterError> {
        let body = match body {
            Some(body) => body.to_json()?,
            None => Vec::new(),
        };
        let path = format!("{}{path}", self.prefix);
        let mut retried = false;
        loop {
            match self.send(method, &path, &body)? {
                Ok(answer) => {
                    return serde_json::from_slice(&answer)
                        .map_err(|error| malformed_answer(&path, error))
                }
                Err(problem) if !retried && problem.kind() == Some(ProblemKind::Replayed) => {
                    retried = true;
                    self.next_sequence = self.next_sequence.max(crate::now_micros());
                }
                Err(problem) => return Err(problem.into_center_error(self.device_id)),
            }
        }
    }

    /// One signed exchange: the body of a 200 answer, or the center's problem document.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Result<Vec<u8>, ProblemDocument>, CenterError> {
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.saturating_add(1);
        let signature = self.sign_request(method, path, sequence, body)?;
        let url = format!("{}{path}", self.origin);
        let unreachable = |error: ureq::Error| CenterError::Unreachable(format!("{url}: {error}"));
        let accept = "application/json, application/problem+json";
        let mut response = match method {
            "GET" => self
                .agent
                .get(&url)
                .header("accept", accept)
                .header(headers::DEVICE, self.device_id.to_hex())
                .header(headers::SEQUENCE, sequence.to_string())
                .header(headers::SIGNATURE, hex::encode(signature.0))
                .call(),
            _ => self
                .agent
                .post(&url)
                .header("accept", accept)
                .header("content-type", content_type::JSON)
                .header(headers::DEVICE, self.device_id.to_hex())
                .header(headers::SEQUENCE, sequence.to_string())
                .header(headers::SIGNATURE, hex::encode(signature.0))
                .send(body),
        }
        .map_err(unreachable)?;
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let answer_signature = response
            .headers()
            .get(headers::ANSWER_SIGNATURE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let answer = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(unreachable)?;
        if status == 200 {
            self.check_answer(sequence, method, path, &answer, answer_signature.as_deref())?;
            return Ok(Ok(answer));
        }
        if kind.starts_with(content_type::PROBLEM) {
            if let Ok(problem) = serde_json::from_slice::<ProblemDocument>(&answer) {
                return Ok(Err(problem));
            }
        }
        if status >= 500 {
            Err(CenterError::Unreachable(format!("{url}: HTTP {status}")))
        } else {
            Err(CenterError::Setup(format!(
                "{url}: unexpected HTTP {status} from the center"
            )))
        }
    }
}

impl HttpCenterLink {
    /// The device's signature over one request: the one place this link asks for one.
    fn sign_request(
        &mut self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, CenterError> {
        self.signer.sign_request(method, path, sequence, body)
    }

    /// An answer is acted on only if the center signed it, for this device and this
    /// request: an answer altered on the way, or one the center gave to another request,
    /// is refused and nothing of it is used.
    fn check_answer(
        &self,
        sequence: u64,
        method: &str,
        path: &str,
        answer: &[u8],
        signature: Option<&str>,
    ) -> Result<(), CenterError> {
        let refused = |why: &str| {
            CenterError::Setup(format!(
                "the answer to {method} {path} (sequence {sequence}) is refused: {why}"
            ))
        };
        let signature = signature
            .and_then(|text| hex::decode(text).ok())
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or_else(|| refused("it carries no signature of the center"))?;
        let signed = answer_signing_input(&self.device_id, sequence, method, path, answer);
        self.center_key
            .verify(&signed, &signature)
            .map_err(|_| refused("the center's signature does not verify over it"))
    }
}

/// A request body, serialized on demand.
pub(crate) trait ErasedBody {
    fn to_json(&self) -> Result<Vec<u8>, CenterError>;
}

impl<T: Serialize> ErasedBody for T {
    fn to_json(&self) -> Result<Vec<u8>, CenterError> {
        serde_json::to_vec(self)
            .map_err(|error| CenterError::Setup(format!("cannot encode a request: {error}")))
    }
}

pub(crate) fn decoded<T>(what: &str, result: Result<T, WireError>) -> Result<T, CenterError> {
    result.map_err(|error| malformed_answer(what, error))
}

impl CenterLink for HttpCenterLink {
    fn assign_card_id(
        &mut self,
        request: &CardIdRequest,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        let body = wire::AssignBody::new(request, card_challenge);
        let answer: wire::AssignmentBody = self.call("POST", paths::ASSIGN, Some(&body))?;
        decoded(paths::ASSIGN, answer.decode())
    }

    fn resume_card_id(
        &mut self,
        request: &CardIdRequest,
        card_id: &CardId,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        let body = wire::ResumeBody::new(request, card_id, card_challenge);
        let answer: wire::AssignmentBody = self.call("POST", paths::RESUME, Some(&body))?;
        decoded(paths::RESUME, answer.decode())
    }

    fn certify_card(
        &mut self,
        request: &CardCertificationRequest,
    ) -> Result<CardPersonalization, CenterError> {
        let body = wire::CertifyBody::new(request);
        let answer: wire::PersonalizationBody = self.call("POST", paths::CERTIFY, Some(&body))?;
        decoded(paths::CERTIFY, answer.decode())
    }

    fn authorize_load(&mut self, request: &LoadRequest) -> Result<LoadApproval, CenterError> {
        let body = wire::AuthorizeBody::new(request);
        let answer: wire::ApprovalBody = self.call("POST", paths::AUTHORIZE, Some(&body))?;
        decoded(paths::AUTHORIZE, answer.decode())
    }

    fn settlement_challenge(
        &mut self,
        request: &SettlementChallengeRequest,
    ) -> Result<Challenge, CenterError> {
        let body = wire::SettlementChallengeBody::new(request);
        let answer: wire::ChallengeBody =
            self.call("POST", paths::SETTLEMENT_CHALLENGE, Some(&body))?;
        if answer.load_number != request.load_number {
            return Err(malformed_answer(
                paths::SETTLEMENT_CHALLENGE,
                format!(
                    "a challenge for load {}, asked {}",
                    answer.load_number, request.load_number
                ),
            ));
        }
        decoded(paths::SETTLEMENT_CHALLENGE, answer.decode())
    }

    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<LoadOutcome, CenterError> {
        let body = wire::SettleBody::new(settlement);
        let answer: wire::SettledBody = self.call("POST", paths::SETTLE, Some(&body))?;
        let outcome = LoadOutcome::parse(&answer.outcome);
        match outcome {
            Some(outcome) if answer.load_number == settlement.load_number => Ok(outcome),
            _ => Err(malformed_answer(
                paths::SETTLE,
                format!(
                    "load {} {}, asked {}",
                    answer.load_number, answer.outcome, settlement.load_number
                ),
            )),
        }
    }
}

/// Usage items per HTTP upload: enough signatures for an efficient batch at the center, and
/// one body still under the service's size limit (`tests/pool.rs` checks a full request).
pub const USAGE_ITEMS_PER_REQUEST: usize = 160;

impl valuecard_core::messages::center::TerminalLink for HttpCenterLink {
    fn upload_usage(
        &mut self,
        upload: &valuecard_core::messages::center::UsageUpload,
    ) -> Result<valuecard_core::messages::center::UploadReceipt, CenterError> {
        let mut total = valuecard_core::messages::center::UploadReceipt::default();
        // An empty upload still asks the center (it answers whether this terminal may upload).
        let empty: [valuecard_core::messages::center::UsageItem; 0] = [];
        let chunks: Vec<&[valuecard_core::messages::center::UsageItem]> = if upload.items.is_empty()
        {
            vec![&empty[..]]
        } else {
            upload.items.chunks(USAGE_ITEMS_PER_REQUEST).collect()
        };
        for chunk in chunks {
            let part = valuecard_core::messages::center::UsageUpload {
                terminal_id: upload.terminal_id,
                items: chunk.to_vec(),
            };
            let body = crate::terminal_wire::UsageUploadBody::new(&part);
            let answer: crate::terminal_wire::UploadReceiptBody =
                self.call("POST", paths::USAGE, Some(&body))?;
            let receipt = decoded(paths::USAGE, answer.decode())?;
            total.absorb(receipt);
        }
        Ok(total)
    }

    fn list_delta(
        &mut self,
        terminal_id: DeviceId,
        since: u64,
    ) -> Result<valuecard_core::messages::center::ListDelta, CenterError> {
        let body = crate::terminal_wire::ListRequestBody {
            terminal_id: hex::encode(terminal_id.as_bytes()),
            since,
        };
        let answer: crate::terminal_wire::ListDeltaBody =
            self.call("POST", paths::LISTS, Some(&body))?;
        decoded(paths::LISTS, answer.decode())
    }

    fn report_stamp(
        &mut self,
        terminal_id: DeviceId,
        stamp: &valuecard_core::messages::purse::TerminalStamp,
    ) -> Result<u32, CenterError> {
        let body = crate::terminal_wire::StampBody::new(terminal_id, stamp);
        let answer: crate::terminal_wire::StampBody =
            self.call("POST", paths::STAMPS, Some(&body))?;
        Ok(answer.count)
    }
}

impl valuecard_core::messages::transfer::TransferLink for HttpCenterLink {
    /// In parts of [`crate::transfer_wire::TRANSFER_REPORTS_PER_REQUEST`]; the receipts add
    /// up. A part that fails stops the upload: the parts before it are stored, and sending
    /// the whole again makes them duplicates.
    fn upload_transfers(
        &mut self,
        upload: &valuecard_core::messages::transfer::TransferUpload,
    ) -> Result<valuecard_core::messages::center::UploadReceipt, CenterError> {
        use valuecard_core::messages::transfer::{TransferReport, TransferUpload};
        let mut total = valuecard_core::messages::center::UploadReceipt::default();
        // An empty upload still asks the center (it answers whether this terminal may upload).
        let empty: [TransferReport; 0] = [];
        let chunks: Vec<&[TransferReport]> = if upload.reports.is_empty() {
            vec![&empty[..]]
        } else {
            upload
                .reports
                .chunks(crate::transfer_wire::TRANSFER_REPORTS_PER_REQUEST)
                .collect()
        };
        for chunk in chunks {
            let part = TransferUpload {
                terminal_id: upload.terminal_id,
                reports: chunk.to_vec(),
            };
            let body = crate::transfer_wire::TransferUploadBody::new(&part);
            let answer: crate::terminal_wire::UploadReceiptBody =
                self.call("POST", paths::TRANSFERS, Some(&body))?;
            let receipt = decoded(paths::TRANSFERS, answer.decode())?;
            total.absorb(receipt);
        }
        Ok(total)
    }

    fn release_transfer(
        &mut self,
        terminal_id: DeviceId,
        source: valuecard_core::ids::CardId,
        pending: &valuecard_core::messages::transfer::PendingTransfer,
    ) -> Result<valuecard_core::messages::transfer::TransferRelease, CenterError> {
        let body = crate::transfer_wire::ReleaseRequestBody::new(terminal_id, source, pending);
        let answer: crate::transfer_wire::ReleaseBody =
            self.call("POST", paths::TRANSFER_RELEASE, Some(&body))?;
        decoded(paths::TRANSFER_RELEASE, answer.decode())
    }
}

impl valuecard_core::messages::credit::ServiceLink for HttpCenterLink {
    fn upload_service_records(
        &mut self,
        upload: &valuecard_core::messages::credit::ServiceUpload,
    ) -> Result<valuecard_core::messages::credit::ServiceReceipt, CenterError> {
        let mut total = valuecard_core::messages::credit::ServiceReceipt::default();
        let empty: [valuecard_core::messages::credit::ServiceRecord; 0] = [];
        let chunks: Vec<&[valuecard_core::messages::credit::ServiceRecord]> =
            if upload.records.is_empty() {
                vec![&empty[..]]
            } else {
                upload.records.chunks(USAGE_ITEMS_PER_REQUEST * 4).collect()
            };
        for chunk in chunks {
            let part = valuecard_core::messages::credit::ServiceUpload {
                terminal_id: upload.terminal_id,
                records: chunk.to_vec(),
            };
            let body = crate::terminal_wire::ServiceUploadBody::new(&part);
            let answer: crate::terminal_wire::ServiceReceiptBody =
                self.call("POST", paths::SERVICES, Some(&body))?;
            let receipt = answer.decode();
            total.stored += receipt.stored;
            total.duplicates += receipt.duplicates;
            total.refused.extend(receipt.refused);
        }
        Ok(total)
    }
}

/// A machine's records in parts of [`crate::memcard_wire::WRITE_RECORDS_PER_REQUEST`]; an
/// empty upload is one empty part, so that it still asks the center (whose answer says
/// whether this machine may send).
fn memcard_parts(
    upload: &valuecard_core::messages::memcard::WriteUpload,
) -> Vec<valuecard_core::messages::memcard::WriteUpload> {
    use valuecard_core::messages::memcard::WriteUpload;
    if upload.records.is_empty() {
        return vec![upload.clone()];
    }
    upload
        .records
        .chunks(crate::memcard_wire::WRITE_RECORDS_PER_REQUEST)
        .map(|chunk| WriteUpload {
            machine: upload.machine,
            records: chunk.to_vec(),
        })
        .collect()
}

impl valuecard_core::messages::memcard::MemcardLink for HttpCenterLink {
    /// In parts of [`crate::memcard_wire::WRITE_RECORDS_PER_REQUEST`]; the receipts add up.
    /// A part that fails stops the upload: the parts before it are stored, and sending the
    /// whole again makes them duplicates.
    fn upload_writes(
        &mut self,
        upload: &valuecard_core::messages::memcard::WriteUpload,
    ) -> Result<valuecard_core::messages::memcard::WriteReceipt, CenterError> {
        use valuecard_core::messages::memcard::WriteReceipt;
        let mut total = WriteReceipt::default();
        for part in memcard_parts(upload) {
            let body = crate::memcard_wire::WriteUploadBody::new(&part);
            let answer: crate::memcard_wire::WriteReceiptBody =
                self.call("POST", paths::MEMCARD_WRITES, Some(&body))?;
            let receipt = answer.decode();
            total.stored += receipt.stored;
            total.duplicates += receipt.duplicates;
            total.refused.extend(receipt.refused);
        }
        Ok(total)
    }

    /// The grant is checked before it is handed on: for this machine, no more than asked,
    /// and signed by the center's root key over its own fields.
    fn request_float(
        &mut self,
        machine: DeviceId,
        amount: valuecard_core::money::Amount,
    ) -> Result<valuecard_core::messages::memcard::FloatGrant, CenterError> {
        let body = crate::memcard_wire::FloatRequestBody::new(machine, amount);
        let answer: crate::memcard_wire::FloatGrantBody =
            self.call("POST", paths::MEMCARD_FLOAT, Some(&body))?;
        let grant = decoded(paths::MEMCARD_FLOAT, answer.decode())?;
        if grant.machine != machine || grant.amount > amount {
            return Err(malformed_answer(
                paths::MEMCARD_FLOAT,
                format!(
                    "a grant of {} for {}, asked {amount} for {machine}",
                    grant.amount, grant.machine
                ),
            ));
        }
        self.center_key
            .verify(&grant.signed_message(), &grant.signature)
            .map_err(|_| malformed_answer(paths::MEMCARD_FLOAT, "the grant's signature"))?;
        Ok(grant)
    }

    /// In parts, as [`Self::upload_writes`]; a part that fails stops the report, and
    /// reporting the whole again is idempotent.
    fn report_pending(
        &mut self,
        upload: &valuecard_core::messages::memcard::WriteUpload,
    ) -> Result<valuecard_core::messages::memcard::PendingReceipt, CenterError> {
        use valuecard_core::messages::memcard::PendingReceipt;
        let mut total = PendingReceipt::default();
        for part in memcard_parts(upload) {
            let body = crate::memcard_wire::WriteUploadBody::new(&part);
            let answer: crate::memcard_wire::PendingReceiptBody =
                self.call("POST", paths::MEMCARD_PENDING, Some(&body))?;
            let receipt = decoded(paths::MEMCARD_PENDING, answer.decode())?;
            let sent = |sequence: &u32| part.records.iter().any(|r| r.sequence == *sequence);
            if !receipt.landed.iter().chain(&receipt.superseded).all(sent) {
                return Err(malformed_answer(
                    paths::MEMCARD_PENDING,
                    "a sequence this report did not carry",
                ));
            }
            total.held += receipt.held;
            total.landed.extend(receipt.landed);
            total.superseded.extend(receipt.superseded);
            total.refused.extend(receipt.refused);
        }
        Ok(total)
    }

    fn latest_state(
        &mut self,
        card: &CardId,
    ) -> Result<Option<valuecard_core::messages::memcard::RestoreEvidence>, CenterError> {
        let path = paths::memcard_latest(card);
        let answer: crate::memcard_wire::LatestStateBody = self.call("GET", &path, None)?;
        let (answered, evidence) = decoded(&path, answer.decode())?;
        let other_card = evidence
            .as_ref()
            .is_some_and(|evidence| evidence.record.written.card_id != *card);
        if answered != *card || other_card {
            return Err(malformed_answer(&path, "another card's state"));
        }
        Ok(evidence)
    }
}
