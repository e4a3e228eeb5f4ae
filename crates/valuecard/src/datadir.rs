//! The layout of a valuecard data directory, and opening each party from it.
//!
//! ```text
//! DIR/center/center.keys        the center's keys (owner-only)
//! DIR/center/center.sqlite      the center's database (unless it runs on PostgreSQL)
//! DIR/center/database           "postgresql" when it does (the URL is given each time)
//! DIR/center/service-certificate.pem   the HTTPS service's certificate (public)
//! DIR/center/service-key.pem    its private key (owner-only)
//! DIR/devices/NAME/role         "payment-terminal", "dispenser", "settlement-terminal",
//!                               "charge-machine" or "payment-machine" (memory cards, seed 001)
//! DIR/devices/NAME/sam.key      the device's software SAM image (owner-only), or
//! DIR/devices/NAME/sam.uri      the PKCS#11 URI of its SAM in a token (no PIN), with
//! DIR/devices/NAME/device-id    the device ID the token's SAM must have
//! DIR/devices/NAME/center-certificate.pem   the service certificate the device pins
//! DIR/devices/NAME/purchases.sqlite   a payment terminal's records
//! DIR/devices/NAME/transfers.sqlite   a settlement terminal's transfer reports and lists
//! DIR/devices/NAME/writes.sqlite      a charge or payment machine's log of memory-card
//!                                     writes (seed 001) and its lists
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use rand_core::OsRng;
use valuecard_center::keys::CenterKeys;
use valuecard_center::sql::Database;
use valuecard_center::Center;
use valuecard_center_http::{CenterPin, HttpCenterLink, ServiceIdentity};
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, AesKey};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::InstallationRequest;
use valuecard_core::messages::purse::ChipSerial;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_sam::Sam;
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::memcard::{ChargeMachine, PaymentMachine};
use valuecard_terminal::payment::PaymentTerminal;
use valuecard_terminal::store::SqliteStore;
use valuecard_terminal::transfer::SettlementTerminal;

use crate::device_sam::{DeviceSam, SamChoice};

pub type CliTerminal = PaymentTerminal<DeviceSam, SqliteStore>;
pub type CliDispenser = Dispenser<DeviceSam>;
pub type CliSettlement = SettlementTerminal<DeviceSam, SqliteStore>;
pub type CliChargeMachine = ChargeMachine<DeviceSam, SqliteStore>;
pub type CliPaymentMachine = PaymentMachine<DeviceSam, SqliteStore>;

pub fn center_dir(data: &Path) -> PathBuf {
    data.join("center")
}

pub fn device_dir(data: &Path, name: &str) -> PathBuf {
    data.join("devices").join(name)
}

/// How a command reaches the center: its HTTP service, or its database opened in this
/// process (the SQLite file in DIR, or PostgreSQL at `--database`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CenterArgs {
    /// Reach the center's HTTP service at this URL instead of opening its database.
    #[arg(long, value_name = "URL", conflicts_with = "database")]
    pub center: Option<String>,
    /// The center's records are in PostgreSQL at this URL (as given to `center init`).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
}

fn clock() -> Box<dyn Clock> {
    Box::new(SystemClock)
}

/// Marks a center whose records live in PostgreSQL, so that opening it without the URL
/// fails instead of starting an empty SQLite database beside its keys.
fn database_marker(data: &Path) -> PathBuf {
    center_dir(data).join("database")
}

fn connect_database(url: Option<&str>) -> Result<Option<Database>, String> {
    url.map(|url| {
        Database::connect_postgres(url).map_err(|error| {
            let text = error.to_string();
            // The one set-up step valuecard cannot do for the operator (it would need rights
            // on the server beyond its own database): say what to run.
            if text.contains("database") && text.contains("does not exist") {
                format!("{text} (create it first, e.g. `createdb NAME`; see docs/operations.md)")
            } else {
                text
            }
        })
    })
    .transpose()
}

/// A new center with its keys in DIR/center and its records in SQLite there, or in the
/// PostgreSQL database at `database` (refused if that database already holds a center), and
/// the certificate of its HTTPS service for `tls_names`.
pub fn init_center_on(
    data: &Path,
    database: Option<&str>,
    tls_names: &[String],
    key_store: Option<&str>,
) -> Result<(Center, CenterPin), String> {
    let db = connect_database(database)?;
    if valuecard_center::key_path(&center_dir(data)).exists() {
        return Err(format!("{} already holds a center", data.display()));
    }
    // The root key first, in its token: a refused URI or PIN leaves no center behind.
    let root = key_store.map(crate::key_store::generate_root).transpose()?;
    create_private_dir(data)?;
    create_owned_dir(&center_dir(data))?;
    let center = Center::init_with_root(&center_dir(data), db, clock(), &mut OsRng, root)
        .map_err(|e| e.to_string())?;
    // Only once the center exists: a refused init leaves no device directory behind.
    create_owned_dir(&data.join("devices"))?;
    let identity = ServiceIdentity::generate(tls_names).map_err(|e| e.to_string())?;
    identity
        .save(&center_dir(data))
        .map_err(|e| e.to_string())?;
    if database.is_some() {
        std::fs::write(database_marker(data), "postgresql\n")
            .map_err(|e| format!("{}: {e}", database_marker(data).display()))?;
    }
    Ok((center, identity.pin()))
}

/// The center's HTTPS identity, for `center serve`.
pub fn service_identity(data: &Path) -> Result<ServiceIdentity, String> {
    ServiceIdentity::load(&center_dir(data))
        .map_err(|e| format!("{e} (the service certificate is made by `valuecard center init`)"))
}

/// Where a device keeps the certificate of the center's service that it pins.
fn pin_path(data: &Path, name: &str) -> PathBuf {
    device_dir(data, name).join("center-certificate.pem")
}

/// The pinned certificate of a device's center.
fn device_pin(data: &Path, name: &str) -> Result<CenterPin, String> {
    let path = pin_path(data, name);
    CenterPin::load(&path).map_err(|e| {
        format!(
            "{e}: device {name:?} holds no certificate of the center's service to trust \
             (devices installed by `valuecard center init` or `terminal install` get one)"
        )
    })
}

/// Opens the center in DIR/center, on PostgreSQL at `database` if it was set up there.
pub fn open_center_on(data: &Path, database: Option<&str>) -> Result<Center, String> {
    let dir = center_dir(data);
    if !valuecard_center::key_path(&dir).exists() {
        return Err(format!(
            "{} holds no center: run `valuecard center init --data {}` first",
            data.display(),
            data.display()
        ));
    }
    match (database_marker(data).exists(), database) {
        (true, None) => {
            return Err(format!(
                "the center in {} keeps its records in PostgreSQL: pass --database URL",
                data.display()
            ))
        }
        (false, Some(_)) => {
            return Err(format!(
                "the center in {} keeps its records in SQLite there, not in PostgreSQL",
                data.display()
            ))
        }
        _ => {}
    }
    Center::open_with(
        &dir,
        connect_database(database)?,
        clock(),
        &crate::key_store::open_root,
    )
    .map_err(|e| e.to_string())
}

/// A new chip's serial and its own transport key Ktemp, from the center's key file, for
/// manufacturing cards when the center itself is reached over HTTP (the factory is part of
/// the issuer's set-up).
pub fn manufacture_chip(data: &Path) -> Result<(ChipSerial, AesKey), String> {
    let path = valuecard_center::key_path(&center_dir(data));
    if !path.exists() {
        return Err(format!(
            "{} holds no center keys: cards are manufactured where the center was initialized",
            data.display()
        ));
    }
    let keys =
        CenterKeys::load_with(&path, &crate::key_store::open_root).map_err(|e| e.to_string())?;
    let serial = valuecard_center::keys::chip_serial(&mut OsRng);
    Ok((serial, keys.transport_key(&serial)))
}

/// The dispenser's link to the center's HTTP service, signing with the dispenser's SAM
/// (loaded a second time: the dispenser holds the first).
pub fn open_center_link(data: &Path, dispenser: &str, url: &str) -> Result<HttpCenterLink, String> {
    let sam = open_sam(data, dispenser, Role::Dispenser)?;
    HttpCenterLink::new(url, &device_pin(data, dispenser)?, Box::new(sam))
        .map_err(|e| e.to_string())
}

/// A payment terminal's link to the center's HTTP service (its SAM loaded a second time).
pub fn open_terminal_link(
    data: &Path,
    terminal: &str,
    url: &str,
) -> Result<HttpCenterLink, String> {
    open_device_link(data, terminal, Role::PaymentTerminal, url)
}

/// A device's link to the center's HTTP service, signing with its SAM (loaded a second
/// time: the device holds the first).
pub fn open_device_link(
    data: &Path,
    name: &str,
    role: Role,
    url: &str,
) -> Result<HttpCenterLink, String> {
    let sam = open_sam(data, name, role)?;
    HttpCenterLink::new(url, &device_pin(data, name)?, Box::new(sam)).map_err(|e| e.to_string())
}

/// Stores the terminal's SAM image again (after its time stamp advanced); a SAM in a token
/// stored its state there already.
pub fn save_terminal_sam(data: &Path, name: &str, terminal: &CliTerminal) -> Result<(), String> {
    save_device_sam(data, name, terminal.sam())
}

/// Stores what a device's SAM changed (a software SAM's image; nothing for a token's).
pub fn save_device_sam(data: &Path, name: &str, sam: &DeviceSam) -> Result<(), String> {
    valid_name(name)?;
    sam.save(&device_dir(data, name), write_private)
}

fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a device name: use letters, digits, '-' and '_' (at most 64)"
        ))
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Dispenser => "dispenser",
        Role::SettlementTerminal => "settlement-terminal",
        Role::ChargeMachine => "charge-machine",
        Role::PaymentMachine => "payment-machine",
        _ => "payment-terminal",
    }
}

/// Whether the installed device `name` is a settlement terminal (false for any other
/// device, and for a name no device has: the caller's own open reports that).
pub fn is_settlement_terminal(data: &Path, name: &str) -> bool {
    valid_name(name).is_ok()
        && std::fs::read_to_string(device_dir(data, name).join("role"))
            .is_ok_and(|role| role.trim() == role_name(Role::SettlementTerminal))
}

/// Whether the installed device `name` has `role`.
pub fn is_device_of_role(data: &Path, name: &str, role: Role) -> bool {
    valid_name(name).is_ok()
        && std::fs::read_to_string(device_dir(data, name).join("role"))
            .is_ok_and(|stored| stored.trim() == role_name(role))
}

/// Creates a directory, and its missing parents, that only its owner may enter: the center's
/// records and the devices' SAM images and purchase records live below it. A directory that
/// already exists keeps its mode (the data directory may be one the user made).
fn create_private_dir(path: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates a directory valuecard owns (`center`, `devices`, a device's) owner-only, and
/// makes it so if it existed.
fn create_owned_dir(path: &Path) -> Result<(), String> {
    create_private_dir(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Writes a file readable by its owner only, atomically (temporary file, then rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&temporary)
        .map_err(|e| format!("{}: {e}", temporary.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Manufactures a SAM for a new device (in software, or with its keys generated in a
/// PKCS#11 token), installs it at the center (Figs. 4A and 8), and records it under
/// `DIR/devices/NAME`.
pub fn install_device(
    data: &Path,
    center: &mut Center,
    name: &str,
    role: Role,
    choice: &SamChoice,
) -> Result<DeviceId, String> {
    valid_name(name)?;
    let dir = device_dir(data, name);
    if dir.exists() {
        return Err(format!(
            "a device named {name:?} already exists in {}",
            data.display()
        ));
    }
    let device_id = center.allocate_device_id().map_err(|e| e.to_string())?;
    let mut sam = DeviceSam::manufacture(
        choice,
        device_id,
        center.transport_key_for_device(&device_id),
    )?;
    let challenge = random_array(&mut OsRng);
    let request = InstallationRequest {
        device_id,
        signing_key: sam.signing_key(),
        sealing_key: sam.sealing_key(),
        challenge,
    };
    let installation = center
        .install_device(&request, role)
        .map_err(|e| e.to_string())?;
    sam.install(&installation, &challenge, role, center.today())
        .map_err(|e| e.to_string())?;
    create_owned_dir(&dir)?;
    let address = match choice {
        SamChoice::Pkcs11(address) => Some(address.as_ref()),
        SamChoice::Software => None,
    };
    sam.record(&dir, write_private, address)?;
    // The device trusts exactly the center's service certificate (a center made before the
    // service had one gives none; its devices then cannot reach it over HTTPS).
    let certificate = center_dir(data).join(valuecard_center_http::tls::CERTIFICATE_FILE);
    if certificate.exists() {
        CenterPin::load(&certificate)
            .and_then(|pin| pin.save(&pin_path(data, name)))
            .map_err(|e| e.to_string())?;
    }
    std::fs::write(dir.join("role"), role_name(role))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(device_id)
}

/// Opens the SAM of the installed device `name`, which must have `role`: its software SAM or
/// its SAM in a token, whichever it was installed with. Every device command opens its SAM
/// here (box it for a `Box<dyn Sam>`).
pub fn open_sam(data: &Path, name: &str, role: Role) -> Result<DeviceSam, String> {
    valid_name(name)?;
    let dir = device_dir(data, name);
    let stored_role = std::fs::read_to_string(dir.join("role")).map_err(|_| {
        format!(
            "no device named {name:?} in {} (see `valuecard terminal install`)",
            data.display()
        )
    })?;
    if stored_role.trim() != role_name(role) {
        return Err(format!(
            "device {name:?} is a {}, not a {}",
            stored_role.trim(),
            role_name(role)
        ));
    }
    DeviceSam::open(&dir, name)
}

pub fn open_terminal(data: &Path, name: &str) -> Result<CliTerminal, String> {
    let sam = open_sam(data, name, Role::PaymentTerminal)?;
    let store = SqliteStore::open(&device_dir(data, name).join("purchases.sqlite"))
        .map_err(|e| e.to_string())?;
    PaymentTerminal::new(sam, store, clock(), OsRng).map_err(|e| e.to_string())
}

/// A settlement terminal (seed 000) with its transfer reports and lists in
/// `transfers.sqlite`.
pub fn open_settlement(data: &Path, name: &str) -> Result<CliSettlement, String> {
    let sam = open_sam(data, name, Role::SettlementTerminal)?;
    let store = SqliteStore::open(&device_dir(data, name).join("transfers.sqlite"))
        .map_err(|e| e.to_string())?;
    SettlementTerminal::new(sam, store, clock(), OsRng).map_err(|e| e.to_string())
}

/// A charge machine (seed 001) with its log of memory-card writes in `writes.sqlite`.
pub fn open_charge_machine(data: &Path, name: &str) -> Result<CliChargeMachine, String> {
    let sam = open_sam(data, name, Role::ChargeMachine)?;
    ChargeMachine::new(sam, open_machine_log(data, name)?, clock()).map_err(|e| e.to_string())
}

/// A payment machine (seed 001) with its log of memory-card writes in `writes.sqlite`.
pub fn open_payment_machine(data: &Path, name: &str) -> Result<CliPaymentMachine, String> {
    let sam = open_sam(data, name, Role::PaymentMachine)?;
    PaymentMachine::new(sam, open_machine_log(data, name)?, clock()).map_err(|e| e.to_string())
}

fn open_machine_log(data: &Path, name: &str) -> Result<SqliteStore, String> {
    SqliteStore::open(&device_dir(data, name).join("writes.sqlite")).map_err(|e| e.to_string())
}

/// Stores a machine's SAM image again: its float and write sequence changed. Called after
/// the SAM signed and before the card is written, so a crash never leaves a signed write
/// whose float the stored SAM still holds.
pub fn save_machine_sam(data: &Path, name: &str, sam: &DeviceSam) -> Result<(), String> {
    save_device_sam(data, name, sam)
}

pub fn open_dispenser(data: &Path, name: &str) -> Result<CliDispenser, String> {
    let sam = open_sam(data, name, Role::Dispenser)?;
    Dispenser::new(sam, clock(), OsRng).map_err(|e| e.to_string())
}

/// Every installed device: (name, role).
pub fn devices(data: &Path) -> Result<Vec<(String, String)>, String> {
    let dir = data.join("devices");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(role) = std::fs::read_to_string(entry.path().join("role")) {
                out.push((name, role.trim().to_owned()));
            }
        }
    }
    out.sort();
    Ok(out)
}
