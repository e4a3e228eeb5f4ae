//! Raw HTTPS requests to either service, as a hostile or broken client would send them,
//! and what came back.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use valuecard_center_http::CenterPin;

/// An answer: its status, content type, `WWW-Authenticate`, and body as JSON (or
/// `Null` if it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub authenticate: Option<String>,
    pub body: serde_json::Value,
}

impl Answer {
    /// Asserts a problem document of `kind` with `status`; gives its detail.
    pub fn problem(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert_eq!(self.body["type"], kind, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        self.body["detail"].as_str().unwrap().to_owned()
    }
}

/// How a request's body is sent.
pub enum Payload<'a> {
    None,
    /// With its length declared.
    Bytes(&'a [u8]),
    /// Chunked, its length never declared.
    Chunked(&'a [u8]),
}

pub struct Raw {
    agent: ureq::Agent,
    origin: String,
}

impl Raw {
    pub fn new(url: &str, pin: &CenterPin) -> Self {
        Raw {
            agent: valuecard_center_http::client::pinned_agent(Duration::from_secs(30), pin),
            origin: url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn get(&self, path: &str, authorization: Option<&str>) -> Answer {
        let mut request = self.agent.get(&format!("{}{path}", self.origin));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        read(request.call().unwrap())
    }

    pub fn post(&self, path: &str, payload: Payload<'_>, authorization: Option<&str>) -> Answer {
        let mut request = self
            .agent
            .post(&format!("{}{path}", self.origin))
            .header("content-type", "application/json");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = match payload {
            Payload::None => request.send_empty(),
            Payload::Bytes(bytes) => request.send(bytes),
            Payload::Chunked(bytes) => {
                let mut reader = std::io::Cursor::new(bytes.to_vec());
                request.send(ureq::SendBody::from_reader(&mut reader))
            }
        };
        read(response.unwrap())
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        self.post(
            path,
            Payload::Bytes(&serde_json::to_vec(body).unwrap()),
            None,
        )
    }
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let authenticate = header("www-authenticate");
    let bytes = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .unwrap();
    Answer {
        status,
        content_type,
        authenticate,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}
