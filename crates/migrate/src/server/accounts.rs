//! The move server's users and their chips (S1, S9): a user ID with a password stored as an
//! Argon2id hash (PHC string, its own random salt), and the serial numbers of the chips the
//! user registered, which is also the reference table of S2 ("serial number → services").

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::CryptoRngCore;
use valuecard_center::sql::{Database, Executor, Value};
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::ServiceCode;

use super::MoveError;

/// The longest user ID and password accepted.
pub const USER_ID_MAX: usize = 64;
pub const PASSWORD_MAX: usize = 256;

/// The hash verified when there is no such user: Argon2id with the defaults new hashes use.
const ABSENT: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$\
                      AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// A user who proved the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

fn check_user_id(user_id: &str) -> Result<(), MoveError> {
    let fine = !user_id.is_empty()
        && user_id.len() <= USER_ID_MAX
        && user_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if fine {
        Ok(())
    } else {
        Err(MoveError::Invalid(
            "a user ID is 1 to 64 letters, digits and . - _ @".into(),
        ))
    }
}

/// Creates a user; refused if the ID is taken.
pub fn create_user(
    db: &mut Database,
    user_id: &str,
    password: &str,
    now: i64,
    rng: &mut impl CryptoRngCore,
) -> Result<(), MoveError> {
    check_user_id(user_id)?;
    if password.len() < 8 || password.len() > PASSWORD_MAX {
        return Err(MoveError::Invalid("a password is 8 to 256 bytes".into()));
    }
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| MoveError::Invalid("salt".into()))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|_| MoveError::Invalid("the password cannot be hashed".into()))?
        .to_string();
    let inserted = db.transaction(|tx| {
        let taken = tx
            .query_optional(
                "SELECT 1 FROM migrate_users WHERE user_id = $1",
                &[user_id.into()],
            )?
            .is_some();
        if taken {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO migrate_users (user_id, password_hash, created_on) VALUES ($1, $2, $3)",
            &[user_id.into(), Value::Text(hash.clone()), now.into()],
        )?;
        Ok(true)
    })?;
    if inserted {
        Ok(())
    } else {
        Err(MoveError::UserExists)
    }
}

/// S1 / S9: the user ID and password. An unknown user and a wrong password give the same
/// answer, after the same work.
pub fn authenticate(db: &mut Database, user_id: &str, password: &str) -> Result<User, MoveError> {
    let stored = if check_user_id(user_id).is_ok() && password.len() <= PASSWORD_MAX {
        db.query_optional(
            "SELECT password_hash FROM migrate_users WHERE user_id = $1",
            &[user_id.into()],
        )?
        .map(|row| row.text(0))
        .transpose()?
    } else {
        None
    };
    // Without a user, a fixed hash is verified anyway, so both refusals cost the same.
    let text = stored.as_deref().unwrap_or(ABSENT);
    let verified = PasswordHash::new(text)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false);
    if verified && stored.is_some() {
        Ok(User(user_id.to_owned()))
    } else {
        Err(MoveError::WrongPassword)
    }
}

/// Registers a chip's serial number (its card ID) to a user.
pub fn register_chip(db: &mut Database, user: &str, card_id: &CardId) -> Result<(), MoveError> {
    let registered = db.transaction(|tx| {
        let owner = tx
            .query_optional(
                "SELECT user_id FROM migrate_chips WHERE card_id = $1",
                &[card_id.as_bytes().to_vec().into()],
            )?
            .map(|row| row.text(0))
            .transpose()?;
        match owner {
            Some(owner) => Ok(owner == user),
            None => {
                tx.execute(
                    "INSERT INTO migrate_chips (card_id, user_id) VALUES ($1, $2)",
                    &[card_id.as_bytes().to_vec().into(), user.into()],
                )?;
                Ok(true)
            }
        }
    })?;
    if registered {
        Ok(())
    } else {
        Err(MoveError::NotYourChip)
    }
}

/// S2's reference table: records that the chip with serial number `card_id` was issued
/// `service` (by its issuer, at issuance). A service registered again changes nothing.
pub fn register_chip_service(
    db: &mut Database,
    card_id: &CardId,
    service: ServiceCode,
) -> Result<(), MoveError> {
    db.execute(
        "INSERT INTO migrate_chip_services (card_id, service, registered_on) VALUES ($1, $2, $3)
         ON CONFLICT (card_id, service) DO NOTHING",
        &[
            card_id.as_bytes().to_vec().into(),
            i64::from(service.0).into(),
            crate::now().into(),
        ],
    )?;
    Ok(())
}

/// The services registered for the chip with serial number `card_id`, in order (empty when
/// its issuers registered none: the chip's own list is then all there is).
pub fn chip_services(
    db: &mut dyn Executor,
    card_id: &CardId,
) -> Result<Vec<ServiceCode>, MoveError> {
    let rows = db.query(
        "SELECT service FROM migrate_chip_services WHERE card_id = $1 ORDER BY service",
        &[card_id.as_bytes().to_vec().into()],
    )?;
    rows.iter()
        .map(|row| {
            u16::try_from(row.int(0)?)
                .map(ServiceCode)
                .map_err(|_| MoveError::Invalid("a stored service code is out of range".into()))
        })
        .collect()
}

/// The chip's owner, if it is registered.
pub fn chip_owner(db: &mut dyn Executor, card_id: &CardId) -> Result<Option<String>, MoveError> {
    Ok(db
        .query_optional(
            "SELECT user_id FROM migrate_chips WHERE card_id = $1",
            &[card_id.as_bytes().to_vec().into()],
        )?
        .map(|row| row.text(0))
        .transpose()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown user costs a full verification only if the stand-in hash parses with the
    /// parameters real hashes get.
    #[test]
    fn the_stand_in_hash_is_a_real_one_with_the_default_parameters() {
        let absent = PasswordHash::new(ABSENT).unwrap();
        let mut salt = [7u8; 16];
        salt[0] = 1;
        let salt = SaltString::encode_b64(&salt).unwrap();
        let real = Argon2::default()
            .hash_password(b"a password", &salt)
            .unwrap();
        assert_eq!(absent.algorithm, real.algorithm);
        assert_eq!(absent.params, real.params);
        assert!(Argon2::default()
            .verify_password(b"a password", &absent)
            .is_err());
    }
}
