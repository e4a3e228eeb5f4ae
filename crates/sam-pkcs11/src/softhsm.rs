//! Throw-away SoftHSM2 tokens, for the tests and for `valuecard bench sam`: a token
//! directory and `softhsm2.conf` of their own (never the machine's tokens), and fresh
//! tokens initialized in it.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` at `C_Initialize`, once per process, so a process chooses
//! its token directory once ([`use_directory_for_process`]) before its first SAM; a test
//! that drives the `valuecard` program instead hands the same variable to the child
//! ([`SoftHsmDirectory::init_token_with_util`] and [`SoftHsmDirectory::conf`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

use crate::context::{self, SOFTHSM2_MODULE_PATHS};
use crate::Pkcs11SamError;

/// Set by CI: a missing SoftHSM2 fails the tests instead of skipping them.
pub const REQUIRE_ENV: &str = "VALUECARD_REQUIRE_SOFTHSM";

/// The SO PIN of every throw-away token (they hold nothing worth protecting).
pub const THROWAWAY_SO_PIN: &str = "87654321";
/// The user PIN of every throw-away token.
pub const THROWAWAY_USER_PIN: &str = "1234";

/// SoftHSM2's module, if installed.
pub fn installed_module() -> Option<PathBuf> {
    SOFTHSM2_MODULE_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// SoftHSM2's module, or `None` after printing `SKIPPED: softhsm2 not installed`. With
/// [`REQUIRE_ENV`] set (CI), a missing SoftHSM2 is a failure with a clear message.
#[allow(clippy::panic)]
pub fn module_or_skip(test: &str) -> Option<PathBuf> {
    let module = installed_module();
    if module.is_none() {
        if std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1") {
            panic!(
                "{test}: softhsm2 is not installed but {REQUIRE_ENV}=1 requires it \
                 (apt-get install softhsm2; .ci/run installs it)"
            );
        }
        eprintln!("SKIPPED: softhsm2 not installed ({test})");
    }
    module
}

/// A token directory with its own `softhsm2.conf`.
#[derive(Debug, Clone)]
pub struct SoftHsmDirectory {
    root: PathBuf,
}

impl SoftHsmDirectory {
    /// Makes `root/tokens` and `root/softhsm2.conf` pointing at it.
    pub fn create(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("tokens"))?;
        let conf = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            root.join("tokens").display()
        );
        std::fs::write(root.join("softhsm2.conf"), conf)?;
        Ok(SoftHsmDirectory {
            root: root.to_owned(),
        })
    }

    /// The configuration file to give as `SOFTHSM2_CONF`.
    pub fn conf(&self) -> PathBuf {
        self.root.join("softhsm2.conf")
    }

    /// Initializes a token labelled `label` with `softhsm2-util`, in another process (for a
    /// test that then runs the `valuecard` program with `SOFTHSM2_CONF` = [`Self::conf`]).
    pub fn init_token_with_util(&self, label: &str) -> Result<(), String> {
        let output = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", self.conf())
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                THROWAWAY_SO_PIN,
                "--pin",
                THROWAWAY_USER_PIN,
            ])
            .output()
            .map_err(|e| format!("softhsm2-util: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "softhsm2-util --init-token failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

/// The token directory of this process, set once before its first `C_Initialize`.
static PROCESS_DIRECTORY: OnceLock<Result<SoftHsmDirectory, String>> = OnceLock::new();

/// Points this process's SoftHSM2 at `root` (made if missing) by setting `SOFTHSM2_CONF`.
/// Only the first call chooses; later calls get the same directory. Call it before any SAM
/// of the process opens a token.
pub fn use_directory_for_process(root: &Path) -> Result<SoftHsmDirectory, String> {
    PROCESS_DIRECTORY
        .get_or_init(|| {
            let directory = SoftHsmDirectory::create(root).map_err(|e| e.to_string())?;
            // Set before the module is initialized, while no thread of ours reads the
            // environment (the cell runs this once).
            std::env::set_var("SOFTHSM2_CONF", directory.conf());
            Ok(directory)
        })
        .clone()
}

static TOKEN_NUMBER: AtomicU32 = AtomicU32::new(0);

/// Initializes a fresh token in this process's SoftHSM2 (through the process's one
/// context) and returns its label. Its user PIN is [`THROWAWAY_USER_PIN`].
pub fn fresh_token(module: &Path, prefix: &str) -> Result<String, Pkcs11SamError> {
    // Token creation is serialized with every slot-list read: each takes the one free slot
    // SoftHSM2 offers, and a rescan beside it would abort the process.
    let _guard = crate::context::slot_list_lock();
    let context = context::context(module)?;
    let number = TOKEN_NUMBER.fetch_add(1, Ordering::Relaxed);
    // Token labels are at most 32 characters.
    let mut label = format!("{prefix}-{}-{number}", std::process::id());
    label.truncate(32);
    let slots = context
        .get_all_slots()
        .map_err(|e| Pkcs11SamError::token("C_GetSlotList", &e))?;
    let mut free = None;
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|e| Pkcs11SamError::token("C_GetTokenInfo", &e))?;
        if !info.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| Pkcs11SamError::Token("no free SoftHSM2 slot".into()))?;
    let so_pin = AuthPin::from(THROWAWAY_SO_PIN.to_owned());
    context
        .init_token(slot, &so_pin, &label)
        .map_err(|e| Pkcs11SamError::token("C_InitToken", &e))?;
    let session = context
        .open_rw_session(slot)
        .map_err(|e| Pkcs11SamError::token("C_OpenSession", &e))?;
    session
        .login(UserType::So, Some(&so_pin))
        .map_err(|e| Pkcs11SamError::token("C_Login (SO)", &e))?;
    session
        .init_pin(&AuthPin::from(THROWAWAY_USER_PIN.to_owned()))
        .map_err(|e| Pkcs11SamError::token("C_InitPIN", &e))?;
    session
        .logout()
        .map_err(|e| Pkcs11SamError::token("C_Logout", &e))?;
    Ok(label)
}
