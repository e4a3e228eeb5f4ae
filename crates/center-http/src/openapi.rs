//! The service's OpenAPI 3.1 document, served unsigned at `GET /openapi.json` and published
//! as `docs/openapi.json` (a test keeps the two equal).
//!
//! The operations, their bodies and their answers come from the routes themselves
//! ([`crate::routes`], which registers each handler with its description). What every signed
//! `/v1/` operation shares is added here, in one place, from the same code the service runs:
//! the three authentication headers, the answer's signature header, and the refusals, one
//! response per status with the problem types [`ProblemKind`] maps to it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    Components, ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
    Required,
};
use utoipa::{PartialSchema, ToSchema};

use crate::problem::{ProblemDocument, ProblemKind};
use crate::routes::tags;
use crate::{content_type, MAX_BODY_BYTES};

/// The authentication headers as the document names them (HTTP header names are not case
/// sensitive; [`crate::headers`] holds the lower-case names the service reads).
pub mod header_names {
    pub const DEVICE: &str = "Valuecard-Device";
    pub const SEQUENCE: &str = "Valuecard-Sequence";
    pub const SIGNATURE: &str = "Valuecard-Signature";
    pub const ANSWER_SIGNATURE: &str = "Valuecard-Answer-Signature";
}

const DESCRIPTION: &str = "\
The management center of valuecard as an HTTPS/JSON service for installed devices: \
dispensers (card issuance, loads, settlement), payment terminals (usage, blocking lists, \
time stamps, service records), settlement terminals (card-to-card transfers) and the charge \
and payment machines of memory cards (write records, float, restore evidence).

Every `/v1/` request is signed by the device's SAM: `Valuecard-Device` (the device ID, hex), \
`Valuecard-Sequence` (a decimal u64, strictly increasing per device) and `Valuecard-Signature` \
(hex Ed25519 over `\"valuecard/http/v1\" || method || 0x00 || path || 0x00 || sequence (8 bytes \
big-endian) || SHA-256(body)`). Every 200 answer carries `Valuecard-Answer-Signature`, the \
center's root-key signature over `\"valuecard/http/v1/answer\" || device ID || sequence || \
method || 0x00 || path || 0x00 || SHA-256(answer body)`.

Bodies are JSON (`application/json`, at most 256 KiB). Binary fields are hex; signed protocol \
objects travel as their canonical TLV encoding in hex. Amounts are integers in minor units; \
dates are `YYYY-MM-DD`. Every refusal is an RFC 9457 problem document \
(`application/problem+json`) whose `type` is `urn:valuecard:problem:` and a slug.";

/// The document, built from the routes.
pub fn document() -> OpenApi {
    let mut document = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("valuecard center")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION))
                .license(Some(
                    LicenseBuilder::new()
                        .name(env!("CARGO_PKG_LICENSE"))
                        .build(),
                ))
                .build(),
        )
        .tags(Some([
            tag(
                tags::DISPENSERS,
                "Card issuance, loads and their settlement",
            ),
            tag(
                tags::PAYMENT_TERMINALS,
                "Usage uploads, blocking lists, time stamps and service records",
            ),
            tag(tags::SETTLEMENT_TERMINALS, "Card-to-card transfers"),
            tag(
                tags::MEMCARD_MACHINES,
                "Memory cards: write records, float for charge machines, restore evidence",
            ),
            tag(
                tags::ONLINE_SETTLEMENT,
                "Online payments and charges reported by the settlement system",
            ),
            tag(
                tags::SERVICE_MOVES,
                "Purse moves from old chips to new ones, reported by the purse's transfer SAM",
            ),
            tag(tags::SERVICE, "Unsigned: health, metrics and this document"),
        ]))
        .build();
    document.merge(crate::routes::routes().into_openapi());
    complete(&mut document);
    document
}

/// The document as served: pretty JSON with a final newline, made once.
pub fn json() -> Result<&'static str, String> {
    static JSON: OnceLock<Result<String, String>> = OnceLock::new();
    JSON.get_or_init(|| {
        serde_json::to_string_pretty(&document())
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|error| error.to_string())
    })
    .as_deref()
    .map_err(Clone::clone)
}

fn tag(name: &str, description: &str) -> utoipa::openapi::tag::Tag {
    TagBuilder::new()
        .name(name)
        .description(Some(description))
        .build()
}

fn hex_string(digits: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^[0-9a-fA-F]{{{digits}}}$")))
}

/// The headers every signed request carries.
fn authentication_headers() -> Vec<utoipa::openapi::path::Parameter> {
    let header = |name: &str, description: &str, schema: ObjectBuilder| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(description))
            .schema(Some(schema))
            .build()
    };
    vec![
        header(
            header_names::DEVICE,
            "The signing device's ID, 16 hex digits.",
            hex_string(16),
        ),
        header(
            header_names::SEQUENCE,
            "A decimal u64, strictly increasing per device, at most one hour (in \
             microseconds) ahead of the later of the device's last sequence and the center's \
             clock.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]{1,20}$")),
        ),
        header(
            header_names::SIGNATURE,
            "The device SAM's Ed25519 signature over the request, 128 hex digits.",
            hex_string(128),
        ),
    ]
}

/// The component name of the refusal response for `status`: its reason phrase without spaces.
fn refusal_name(status: axum::http::StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("Refusal")
        .replace([' ', '-'], "")
}

/// The refusals a signed request can meet, by status, each with the problem types it stands
/// for. An unknown path (404 `not-found`), a wrong method (405) and `/health`'s 503 are not
/// answers of an operation.
fn refusals() -> BTreeMap<u16, Vec<ProblemKind>> {
    let mut refusals: BTreeMap<u16, Vec<ProblemKind>> = BTreeMap::new();
    for kind in ProblemKind::ALL {
        if matches!(
            kind,
            ProblemKind::NotFound | ProblemKind::MethodNotAllowed | ProblemKind::Unavailable
        ) {
            continue;
        }
        refusals
            .entry(kind.status().as_u16())
            .or_default()
            .push(kind);
    }
    refusals
}

fn refusal_response(kinds: &[ProblemKind]) -> utoipa::openapi::Response {
    let types = kinds
        .iter()
        .map(|kind| format!("`{}` ({})", kind.slug(), kind.title()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = ResponseBuilder::new()
        .description(format!("A problem document of type {types}."))
        .content(
            content_type::PROBLEM,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ProblemDocument::name())))
                .build(),
        );
    if kinds.iter().any(|kind| kind.status().as_u16() == 401) {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some("`Valuecard-Signature realm=\"valuecard\"`"))
                .build(),
        );
    }
    response.build()
}

/// Adds what every signed operation shares.
fn complete(document: &mut OpenApi) {
    let refusals = refusals();
    let components = document.components.get_or_insert_with(Components::new);
    components.schemas.insert(
        ProblemDocument::name().into_owned(),
        ProblemDocument::schema(),
    );
    for (&status, kinds) in &refusals {
        let Ok(status) = axum::http::StatusCode::from_u16(status) else {
            continue;
        };
        components
            .responses
            .insert(refusal_name(status), RefOr::T(refusal_response(kinds)));
    }
    let answer_signature = HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9a-f]{128}$")),
        )
        .description(Some(
            "The center's root-key Ed25519 signature over the answer, bound to the request; \
             a device acts on no answer whose signature does not verify.",
        ))
        .build();
    for (path, item) in document.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let operations: [&mut Option<Operation>; 8] = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            parameters.splice(0..0, authentication_headers());
            if let Some(body) = operation.request_body.as_mut() {
                let note = format!("At most {MAX_BODY_BYTES} bytes.");
                body.description = Some(match body.description.take() {
                    Some(text) => format!("{text} {note}"),
                    None => note,
                });
            }
            let responses = &mut operation.responses.responses;
            if let Some(RefOr::T(answer)) = responses.get_mut("200") {
                answer.headers.insert(
                    header_names::ANSWER_SIGNATURE.into(),
                    answer_signature.clone(),
                );
            }
            for &status in refusals.keys() {
                let Ok(status) = axum::http::StatusCode::from_u16(status) else {
                    continue;
                };
                responses.insert(
                    status.as_u16().to_string(),
                    RefOr::Ref(Ref::from_response_name(refusal_name(status))),
                );
            }
        }
    }
}
