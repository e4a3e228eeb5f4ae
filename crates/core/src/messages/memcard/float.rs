//! The center's float grants to charge machines (area 23A of the seed).

use super::*;
/// The center's grant of float to a charge machine (the amount area 23A of the seed): what
/// the machine's SAM may charge onto cards beyond what it holds. Signed with the center's
/// root key; a SAM takes each grant once, in increasing `grant_number` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatGrant {
    pub machine: DeviceId,
    pub grant_number: u32,
    pub amount: Amount,
    pub date: Date,
    pub signature: Signature,
}

/// The context label of a float grant.
pub const FLOAT_CONTEXT: &[u8] = b"valuecard/memcard/float/v1";

impl FloatGrant {
    /// `"valuecard/memcard/float/v1" || machine || grant number (4 bytes) || amount (8) ||
    /// date (4)`, all big-endian.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(FLOAT_CONTEXT.len() + 24);
        m.extend_from_slice(FLOAT_CONTEXT);
        m.extend_from_slice(self.machine.as_bytes());
        m.extend_from_slice(&self.grant_number.to_be_bytes());
        m.extend_from_slice(&self.amount.to_be_bytes());
        m.extend_from_slice(&self.date.0.to_be_bytes());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(120);
        w.nested(tag::FLOAT_GRANT, |g| {
            g.put(tag::WRITER, self.machine.as_bytes())
                .put_u32(tag::SEQUENCE, self.grant_number)
                .put_u64(tag::BALANCE_AFTER, self.amount.minor())
                .put_u32(tag::DATE, self.date.0)
                .put(tag::SIGNATURE, &self.signature.0);
        });
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = TlvReader::new(bytes);
        let value = outer.expect(tag::FLOAT_GRANT)?;
        outer.finish()?;
        let mut r = TlvReader::new(value);
        let machine =
            DeviceId::from_slice(r.expect(tag::WRITER)?).map_err(|_| DecodeError::Field {
                field: "machine",
                reason: "wrong length",
            })?;
        let grant_number = be_u32(tag::SEQUENCE, r.expect(tag::SEQUENCE)?)?;
        let amount = balance(&mut r, tag::BALANCE_AFTER)?;
        let date = Date(be_u32(tag::DATE, r.expect(tag::DATE)?)?);
        let signature = Signature(r.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?);
        r.finish()?;
        if amount == Amount::ZERO {
            return Err(DecodeError::Field {
                field: "amount",
                reason: "a float grant moves value",
            });
        }
        Ok(FloatGrant {
            machine,
            grant_number,
            amount,
            date,
            signature,
        })
    }
}
