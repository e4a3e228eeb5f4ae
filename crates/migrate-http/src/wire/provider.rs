//! The bodies of a provider's service: its area format, the key packages of a chip, and
//! the steps of a move's upload and download with the end of its copy. A move's identifier
//! travels in the path (`/v1/moves/{move_id}/...`), never in a body.

use serde::{Deserialize, Serialize};
use valuecard_core::cert::Certificate;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{tag, AreaFormat, KeyPackage, KeyState, MoveId};
use valuecard_core::tlv::{TlvReader, TlvWriter};
use valuecard_migrate::provider::Exchange;

use super::{card_id, certificate, hex_bytes, move_id, refuse, Body, WireError};

/// `GET /v1/format`: the provider's area format (`AreaFormat`'s encoding, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatBody {
    pub format: String,
}

impl Body for FormatBody {
    type Message = AreaFormat;

    fn encode(format: &AreaFormat) -> Self {
        FormatBody {
            format: hex::encode(format.encode()),
        }
    }

    fn decode(&self) -> Result<AreaFormat, WireError> {
        AreaFormat::decode(&hex_bytes("format", &self.format)?)
            .map_err(|error| refuse("format", error.to_string()))
    }
}

/// `POST /v1/key-packages`: the chip's certificate (its encoding, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPackagesRequestBody {
    pub card_certificate: String,
}

impl Body for KeyPackagesRequestBody {
    type Message = Certificate;

    fn encode(card_certificate: &Certificate) -> Self {
        KeyPackagesRequestBody {
            card_certificate: hex::encode(card_certificate.encode()),
        }
    }

    fn decode(&self) -> Result<Certificate, WireError> {
        certificate("card_certificate", &self.card_certificate)
    }
}

/// The answer to `POST /v1/key-packages`: the area's main and temporary key packages, each
/// the core's TLV encoding under the tag FORMAT AREA gives it, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPackagesBody {
    pub main_package: String,
    pub temporary_package: String,
}

fn package_hex(package: &KeyPackage, outer_tag: u32) -> String {
    let mut writer = TlvWriter::with_capacity(512);
    package.encode_into(&mut writer, outer_tag);
    hex::encode(writer.into_bytes())
}

fn package(
    field: &'static str,
    text: &str,
    outer_tag: u32,
    state: KeyState,
) -> Result<KeyPackage, WireError> {
    let bytes = hex_bytes(field, text)?;
    let mut reader = TlvReader::new(&bytes);
    let value = reader
        .expect(outer_tag)
        .map_err(|error| refuse(field, error.to_string()))?;
    let package =
        KeyPackage::decode_value(value).map_err(|error| refuse(field, error.to_string()))?;
    reader
        .finish()
        .map_err(|error| refuse(field, error.to_string()))?;
    if package.key_state != state {
        return Err(refuse(field, format!("not a {} key", state.name())));
    }
    Ok(package)
}

impl Body for KeyPackagesBody {
    type Message = (KeyPackage, KeyPackage);

    fn encode((main, temporary): &(KeyPackage, KeyPackage)) -> Self {
        KeyPackagesBody {
            main_package: package_hex(main, tag::MAIN_PACKAGE),
            temporary_package: package_hex(temporary, tag::TEMPORARY_PACKAGE),
        }
    }

    fn decode(&self) -> Result<(KeyPackage, KeyPackage), WireError> {
        let main = package(
            "main_package",
            &self.main_package,
            tag::MAIN_PACKAGE,
            KeyState::Main,
        )?;
        let temporary = package(
            "temporary_package",
            &self.temporary_package,
            tag::TEMPORARY_PACKAGE,
            KeyState::Temporary,
        )?;
        if main.service != temporary.service {
            return Err(refuse(
                "temporary_package",
                "for another service than the main package",
            ));
        }
        Ok((main, temporary))
    }
}

/// One step of a move's upload from the old chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    pub source: CardId,
    pub source_certificate: Certificate,
    /// The chip's answer to the last command; none to begin.
    pub response: Option<Vec<u8>>,
}

/// `POST /v1/moves/{move_id}/upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequestBody {
    pub source_card_id: String,
    pub source_certificate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

impl Body for UploadRequestBody {
    type Message = UploadRequest;

    fn encode(request: &UploadRequest) -> Self {
        UploadRequestBody {
            source_card_id: hex::encode(request.source.as_bytes()),
            source_certificate: hex::encode(request.source_certificate.encode()),
            response: request.response.as_ref().map(hex::encode),
        }
    }

    fn decode(&self) -> Result<UploadRequest, WireError> {
        Ok(UploadRequest {
            source: card_id("source_card_id", &self.source_card_id)?,
            source_certificate: certificate("source_certificate", &self.source_certificate)?,
            response: self
                .response
                .as_deref()
                .map(|text| hex_bytes("response", text))
                .transpose()?,
        })
    }
}

/// One step of a move's download into the new chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRequest {
    pub destination: CardId,
    /// The chip's answer to the last command; none to begin.
    pub response: Option<Vec<u8>>,
}

/// `POST /v1/moves/{move_id}/download`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequestBody {
    pub destination_card_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

impl Body for DownloadRequestBody {
    type Message = DownloadRequest;

    fn encode(request: &DownloadRequest) -> Self {
        DownloadRequestBody {
            destination_card_id: hex::encode(request.destination.as_bytes()),
            response: request.response.as_ref().map(hex::encode),
        }
    }

    fn decode(&self) -> Result<DownloadRequest, WireError> {
        Ok(DownloadRequest {
            destination: card_id("destination_card_id", &self.destination_card_id)?,
            response: self
                .response
                .as_deref()
                .map(|text| hex_bytes("response", text))
                .transpose()?,
        })
    }
}

/// What an exchange asks: a command for the chip, or nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeKind {
    Apdu,
    Done,
}

/// The answer to an upload or download step: `{"exchange": "apdu", "apdu": "<hex>"}`, the
/// next command for the chip, or `{"exchange": "done"}`, the end of this service's part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeBody {
    pub exchange: ExchangeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apdu: Option<String>,
}

impl Body for ExchangeBody {
    type Message = Exchange;

    fn encode(exchange: &Exchange) -> Self {
        match exchange {
            Exchange::Apdu(apdu) => ExchangeBody {
                exchange: ExchangeKind::Apdu,
                apdu: Some(hex::encode(apdu)),
            },
            Exchange::Done => ExchangeBody {
                exchange: ExchangeKind::Done,
                apdu: None,
            },
        }
    }

    fn decode(&self) -> Result<Exchange, WireError> {
        match (self.exchange, &self.apdu) {
            (ExchangeKind::Apdu, Some(apdu)) => {
                let apdu = hex_bytes("apdu", apdu)?;
                if apdu.len() < 4 {
                    return Err(refuse("apdu", "a command APDU has at least four bytes"));
                }
                Ok(Exchange::Apdu(apdu))
            }
            (ExchangeKind::Done, None) => Ok(Exchange::Done),
            _ => Err(refuse(
                "apdu",
                "present exactly when the exchange is an apdu",
            )),
        }
    }
}

/// How a copy ended: cleared after its download (S17), or discarded by a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyEnd {
    Cleared,
    Discarded,
}

/// The end of one move's copy at a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyEnded {
    pub move_id: MoveId,
    pub state: CopyEnd,
}

/// The answer to `POST /v1/moves/{move_id}/clear` and `/discard` (whose requests have no
/// body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyEndedBody {
    pub move_id: String,
    pub state: CopyEnd,
}

impl Body for CopyEndedBody {
    type Message = CopyEnded;

    fn encode(ended: &CopyEnded) -> Self {
        CopyEndedBody {
            move_id: hex::encode(ended.move_id),
            state: ended.state,
        }
    }

    fn decode(&self) -> Result<CopyEnded, WireError> {
        Ok(CopyEnded {
            move_id: move_id("move_id", &self.move_id)?,
            state: self.state,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand_core::OsRng;
    use valuecard_card::testing;
    use valuecard_core::messages::services::{ServiceCode, ServiceKind};

    use super::super::tests::round_trip;
    use super::*;

    const TICKETS: ServiceCode = ServiceCode(0x0102);

    fn packages() -> (KeyPackage, KeyPackage) {
        (
            testing::key_package(2, TICKETS, KeyState::Main, 2, &mut OsRng),
            testing::key_package(2, TICKETS, KeyState::Temporary, 2, &mut OsRng),
        )
    }

    #[test]
    fn every_provider_body_round_trips() {
        round_trip::<FormatBody>(testing::area_format(TICKETS, ServiceKind::Tickets, 2));
        round_trip::<KeyPackagesRequestBody>(testing::card_certificate(2));
        round_trip::<KeyPackagesBody>(packages());
        for response in [None, Some(vec![0x90, 0x00])] {
            round_trip::<UploadRequestBody>(UploadRequest {
                source: testing::card_id(1),
                source_certificate: testing::card_certificate(1),
                response: response.clone(),
            });
            round_trip::<DownloadRequestBody>(DownloadRequest {
                destination: testing::card_id(2),
                response,
            });
        }
        round_trip::<ExchangeBody>(Exchange::Apdu(vec![0x80, 0x50, 0, 0, 1, 9]));
        round_trip::<ExchangeBody>(Exchange::Done);
        for state in [CopyEnd::Cleared, CopyEnd::Discarded] {
            round_trip::<CopyEndedBody>(CopyEnded {
                move_id: [7; 16],
                state,
            });
        }
    }

    #[test]
    fn the_exchange_is_tagged() {
        assert_eq!(
            ExchangeBody::to_json(&Exchange::Done),
            br#"{"exchange":"done"}"#
        );
        assert_eq!(
            ExchangeBody::to_json(&Exchange::Apdu(vec![0, 0xA4, 4, 0])),
            br#"{"exchange":"apdu","apdu":"00a40400"}"#
        );
        assert!(ExchangeBody::from_json(br#"{"exchange":"done","apdu":"00"}"#).is_err());
        assert!(ExchangeBody::from_json(br#"{"exchange":"apdu","apdu":"00a4"}"#).is_err());
        assert!(ExchangeBody::from_json(br#"{"exchange":"later"}"#).is_err());
        assert!(ExchangeBody::from_json(br#"{"exchange":"apdu"}"#).is_err());
    }

    #[test]
    fn swapped_or_mixed_key_packages_are_refused() {
        let (main, temporary) = packages();
        let mut body = KeyPackagesBody::encode(&(main.clone(), temporary.clone()));
        core::mem::swap(&mut body.main_package, &mut body.temporary_package);
        assert!(body.decode().is_err());

        let other =
            testing::key_package(2, ServiceCode(0x0203), KeyState::Temporary, 3, &mut OsRng);
        let body = KeyPackagesBody::encode(&(main.clone(), other));
        assert_eq!(body.decode().unwrap_err().field, "temporary_package");

        let mut body = KeyPackagesBody::encode(&(main, temporary));
        body.main_package.push_str("00");
        assert_eq!(body.decode().unwrap_err().field, "main_package");
    }

    #[test]
    fn malformed_fields_are_named() {
        let request = UploadRequestBody::encode(&UploadRequest {
            source: testing::card_id(1),
            source_certificate: testing::card_certificate(1),
            response: None,
        });
        let mut bad = request.clone();
        bad.source_card_id = "0011".into();
        assert_eq!(bad.decode().unwrap_err().field, "source_card_id");
        let mut bad = request.clone();
        bad.source_certificate = "zz".into();
        assert_eq!(bad.decode().unwrap_err().field, "source_certificate");
        let mut bad = request;
        bad.response = Some("9".into());
        assert_eq!(bad.decode().unwrap_err().field, "response");
        let format = FormatBody {
            format: "a303810101".into(),
        };
        assert_eq!(format.decode().unwrap_err().field, "format");
    }
}
