//! PKCS#11 URIs (RFC 7512): which token and which objects a SAM is, and where its PIN
//! comes from.
//!
//! `pkcs11:token=valuecard;object=terminal-7?pin-source=file:///etc/valuecard/pin`
//!
//! Path attributes name the token (`token`, `serial`, `manufacturer`, `model`, `slot-id`)
//! and the SAM's objects (`object` is their label, `id` their CKA_ID). Query attributes say
//! where the PIN is (`pin-value` or `pin-source`) and which module to load
//! (`module-path`). Values are percent-encoded (RFC 7512 § 2.3). An attribute this program
//! does not know is refused rather than ignored, except the vendor-specific `x-` ones and the
//! library and slot descriptions, which only narrow a choice that the token attributes make.

use std::fmt::Write as _;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// The longest value of one attribute, after percent-decoding.
pub const VALUE_LEN_MAX: usize = 1024;

/// The longest URI accepted (a limit on everything we parse). Large enough that any URI
/// this module prints, every value at [`VALUE_LEN_MAX`] and every byte percent-encoded,
/// parses again: a stored URI must never become unreadable because printing encoded it.
pub const URI_LEN_MAX: usize = 32 * 1024;

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    #[error("a PKCS#11 URI starts with \"pkcs11:\"")]
    Scheme,
    #[error("the URI is longer than {URI_LEN_MAX} bytes")]
    TooLong,
    #[error("bad percent-encoding in the URI attribute {0:?}")]
    PercentEncoding(String),
    #[error("the URI attribute {0:?} is not UTF-8 text")]
    NotText(String),
    #[error("the URI attribute {0:?} appears twice")]
    Repeated(String),
    #[error("the URI attribute {0:?} is not one this program knows (RFC 7512)")]
    Unknown(String),
    #[error("the URI attribute {0:?} has no value")]
    Empty(String),
    #[error("the URI names no object: add ;object=LABEL")]
    NoObject,
    #[error("the URI gives both pin-value and pin-source")]
    TwoPins,
    #[error("slot-id must be a decimal number")]
    SlotId,
    #[error("the URI attribute {0:?} is longer than {VALUE_LEN_MAX} bytes")]
    ValueTooLong(String),
}

/// A parsed PKCS#11 URI. The PIN, if the URI carries one, is zeroized when dropped and
/// never printed (see [`Pkcs11Uri::without_pin`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub slot_id: Option<u64>,
    /// The label of the SAM's objects (its key pairs, secret keys and state).
    pub object: String,
    /// The CKA_ID of the SAM's objects, if the URI fixes one.
    pub id: Option<Vec<u8>>,
    pin_value: Option<Zeroizing<String>>,
    pub pin_source: Option<String>,
    pub module_path: Option<PathBuf>,
}

impl core::fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.without_pin())
    }
}

impl Pkcs11Uri {
    /// Parses `text` (RFC 7512 § 2.3). The URI must name an object.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        if text.len() > URI_LEN_MAX {
            return Err(UriError::TooLong);
        }
        let rest = text.strip_prefix("pkcs11:").ok_or(UriError::Scheme)?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri {
            token: None,
            manufacturer: None,
            model: None,
            serial: None,
            slot_id: None,
            object: String::new(),
            id: None,
            pin_value: None,
            pin_source: None,
            module_path: None,
        };
        let mut object = None;
        let mut seen = Vec::new();
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = split_attribute(attribute, &mut seen)?;
            match name {
                "token" => uri.token = Some(text_value(name, value)?),
                "manufacturer" => uri.manufacturer = Some(text_value(name, value)?),
                "model" => uri.model = Some(text_value(name, value)?),
                "serial" => uri.serial = Some(text_value(name, value)?),
                "object" => object = Some(text_value(name, value)?),
                "id" => uri.id = Some(percent_decode(name, value)?),
                "slot-id" => {
                    let digits = text_value(name, value)?;
                    if !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(UriError::SlotId);
                    }
                    uri.slot_id = Some(digits.parse().map_err(|_| UriError::SlotId)?);
                }
                // Only private keys, public keys, secret keys and data make up a SAM; the
                // type attribute narrows nothing further for us.
                "type" => {
                    text_value(name, value)?;
                }
                "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {
                    text_value(name, value)?;
                }
                other if other.starts_with("x-") => {}
                other => return Err(UriError::Unknown(other.to_owned())),
            }
        }
        for attribute in query.unwrap_or("").split('&').filter(|a| !a.is_empty()) {
            let (name, value) = split_attribute(attribute, &mut seen)?;
            match name {
                "pin-value" => uri.pin_value = Some(Zeroizing::new(text_value(name, value)?)),
                "pin-source" => uri.pin_source = Some(text_value(name, value)?),
                "module-path" => uri.module_path = Some(PathBuf::from(text_value(name, value)?)),
                "module-name" => {
                    text_value(name, value)?;
                }
                other if other.starts_with("x-") => {}
                other => return Err(UriError::Unknown(other.to_owned())),
            }
        }
        if uri.pin_value.is_some() && uri.pin_source.is_some() {
            return Err(UriError::TwoPins);
        }
        uri.object = object.ok_or(UriError::NoObject)?;
        Ok(uri)
    }

    /// The PIN the URI carries in `pin-value`, if any.
    pub fn pin_value(&self) -> Option<&str> {
        self.pin_value.as_deref().map(String::as_str)
    }

    /// The URI as text without `pin-value` (a `pin-source` stays: it names a file, not
    /// the PIN). This is what is stored and printed.
    pub fn without_pin(&self) -> String {
        let mut out = String::from("pkcs11:");
        let mut path = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(value) = value {
                path.push(format!("{name}={}", percent_encode(value.as_bytes())));
            }
        }
        if let Some(slot) = self.slot_id {
            path.push(format!("slot-id={slot}"));
        }
        path.push(format!("object={}", percent_encode(self.object.as_bytes())));
        if let Some(id) = &self.id {
            path.push(format!("id={}", percent_encode_all(id)));
        }
        out.push_str(&path.join(";"));
        let mut query = Vec::new();
        if let Some(source) = &self.pin_source {
            query.push(format!("pin-source={}", percent_encode(source.as_bytes())));
        }
        if let Some(module) = &self.module_path {
            let module = module.to_string_lossy();
            query.push(format!("module-path={}", percent_encode(module.as_bytes())));
        }
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        out
    }

    /// Whether `other` names the same token and the same objects (PINs and module aside).
    pub fn same_objects(&self, other: &Pkcs11Uri) -> bool {
        self.token == other.token
            && self.serial == other.serial
            && self.slot_id == other.slot_id
            && self.object == other.object
            && self.id == other.id
    }
}

fn split_attribute<'a>(
    attribute: &'a str,
    seen: &mut Vec<&'a str>,
) -> Result<(&'a str, &'a str), UriError> {
    let (name, value) = attribute
        .split_once('=')
        .ok_or_else(|| UriError::Empty(attribute.to_owned()))?;
    if seen.contains(&name) {
        return Err(UriError::Repeated(name.to_owned()));
    }
    seen.push(name);
    Ok((name, value))
}

fn text_value(name: &str, value: &str) -> Result<String, UriError> {
    let bytes = percent_decode(name, value)?;
    if bytes.is_empty() {
        return Err(UriError::Empty(name.to_owned()));
    }
    String::from_utf8(bytes).map_err(|_| UriError::NotText(name.to_owned()))
}

fn percent_decode(name: &str, value: &str) -> Result<Vec<u8>, UriError> {
    let bad = || UriError::PercentEncoding(name.to_owned());
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            // Exactly two hex digits: `from_str_radix` alone would also take "%+F".
            let hex = bytes.get(index + 1..index + 3).ok_or_else(bad)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad());
            }
            let hex = core::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
        if out.len() > VALUE_LEN_MAX {
            return Err(UriError::ValueTooLong(name.to_owned()));
        }
    }
    Ok(out)
}

/// RFC 7512 § 2.3: unreserved characters and a few path characters stay, the rest is
/// percent-encoded.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~:[]@!$'()*+,=/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// An `id` is bytes: every byte percent-encoded, as RFC 7512's examples write it.
fn percent_encode_all(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "%{byte:02X}");
        out
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_token_object_id_and_pin_source() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=value%20card;object=terminal-1;id=%01%02%ff?pin-source=file:///run/pin",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("value card"));
        assert_eq!(uri.object, "terminal-1");
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 2, 0xFF][..]));
        assert_eq!(uri.pin_source.as_deref(), Some("file:///run/pin"));
        assert_eq!(uri.pin_value(), None);
    }

    #[test]
    fn pin_value_is_read_but_never_printed() {
        let uri = Pkcs11Uri::parse("pkcs11:token=t;object=o?pin-value=12%334").unwrap();
        assert_eq!(uri.pin_value(), Some("1234"));
        assert_eq!(uri.without_pin(), "pkcs11:token=t;object=o");
        assert!(!format!("{uri:?}").contains("1234"));
    }

    #[test]
    fn printed_uri_parses_back_to_the_same_objects() {
        let text = "pkcs11:token=a%3Bb;serial=42;slot-id=7;object=x%2Fy;id=%00%10?pin-source=%2Fetc%2Fpin&module-path=/usr/lib/m.so";
        let uri = Pkcs11Uri::parse(text).unwrap();
        let again = Pkcs11Uri::parse(&uri.without_pin()).unwrap();
        assert_eq!(uri, again);
        assert_eq!(again.token.as_deref(), Some("a;b"));
        assert_eq!(again.object, "x/y");
        assert_eq!(again.slot_id, Some(7));
        assert_eq!(
            again.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/m.so"))
        );
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for (text, error) in [
            ("token=t;object=o", UriError::Scheme),
            ("pkcs11:token=t", UriError::NoObject),
            (
                "pkcs11:object=a;object=b",
                UriError::Repeated("object".into()),
            ),
            (
                "pkcs11:object=%4",
                UriError::PercentEncoding("object".into()),
            ),
            (
                "pkcs11:object=%zz",
                UriError::PercentEncoding("object".into()),
            ),
            ("pkcs11:object=%ff", UriError::NotText("object".into())),
            ("pkcs11:object=", UriError::Empty("object".into())),
            ("pkcs11:object", UriError::Empty("object".into())),
            (
                "pkcs11:object=o;colour=red",
                UriError::Unknown("colour".into()),
            ),
            (
                "pkcs11:object=o?pin-value=1&pin-source=f",
                UriError::TwoPins,
            ),
            ("pkcs11:object=o;slot-id=x", UriError::SlotId),
            ("pkcs11:object=o;slot-id=+7", UriError::SlotId),
            (
                "pkcs11:object=%+F",
                UriError::PercentEncoding("object".into()),
            ),
        ] {
            assert_eq!(Pkcs11Uri::parse(text), Err(error), "{text}");
        }
        assert_eq!(
            Pkcs11Uri::parse(&format!("pkcs11:object={}", "a".repeat(URI_LEN_MAX))),
            Err(UriError::TooLong)
        );
    }

    #[test]
    fn a_uri_at_every_limit_prints_a_uri_that_parses_again() {
        // Printing percent-encodes: a value of spaces comes out three times as long as a
        // value the input gave unencoded, and must still be under the limit.
        let long = " ".repeat(VALUE_LEN_MAX);
        let text = format!(
            "pkcs11:token={long};manufacturer={long};model={long};serial={long};slot-id=1;\
             object={long};id={long}?pin-source={long}&module-path={long}"
        );
        assert!(text.len() <= URI_LEN_MAX);
        let uri = Pkcs11Uri::parse(&text).unwrap();
        let printed = uri.without_pin();
        assert!(printed.len() > text.len());
        assert_eq!(Pkcs11Uri::parse(&printed).unwrap(), uri);

        let over = format!("pkcs11:object={}", "a".repeat(VALUE_LEN_MAX + 1));
        assert_eq!(
            Pkcs11Uri::parse(&over),
            Err(UriError::ValueTooLong("object".into()))
        );
    }

    #[test]
    fn vendor_and_descriptive_attributes_are_accepted() {
        let uri =
            Pkcs11Uri::parse("pkcs11:library-manufacturer=SoftHSM;type=private;x-mine=1;object=o")
                .unwrap();
        assert_eq!(uri.object, "o");
    }
}
