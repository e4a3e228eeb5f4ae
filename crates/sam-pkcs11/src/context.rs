//! The process's one PKCS#11 context: the module loaded and `C_Initialize` called once, for
//! every SAM, test thread and benchmark of the process. A second `C_Initialize` in one
//! process fails (`CKR_CRYPTOKI_ALREADY_INITIALIZED`) or, with some modules, crashes; so the
//! context lives in a process-wide cell and is never finalized (the operating system ends it
//! with the process).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};

use crate::Pkcs11SamError;

/// The environment variable naming the PKCS#11 module, when no option does.
pub const MODULE_ENV: &str = "VALUECARD_PKCS11_MODULE";

/// Where Debian puts SoftHSM2's module (package `softhsm2`), the default when present.
pub const SOFTHSM2_MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

/// The module to load: the one named by an option, else by [`MODULE_ENV`], else by the
/// URI's `module-path`, else SoftHSM2's if it is installed.
pub fn module_path(
    option: Option<&Path>,
    uri_module: Option<&Path>,
) -> Result<PathBuf, Pkcs11SamError> {
    if let Some(path) = option {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os(MODULE_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = uri_module {
        return Ok(path.to_owned());
    }
    SOFTHSM2_MODULE_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .ok_or(Pkcs11SamError::NoModule)
}

/// Held while the slot list is read or a token is initialized. SoftHSM2 rescans its token
/// directory on every C_GetSlotList and adds what it finds to its slot table without a lock
/// of its own: two threads rescanning at once abort the process (its assertion in
/// `SlotManager::insertToken`). Every slot-list read of this crate goes through this lock.
pub(crate) static SLOT_LIST: Mutex<()> = Mutex::new(());

/// Takes [`SLOT_LIST`] (a poisoned lock guards nothing broken: it holds no data).
pub(crate) fn slot_list_lock() -> std::sync::MutexGuard<'static, ()> {
    SLOT_LIST
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The loaded module and the path it came from.
static CONTEXT: Mutex<Option<(PathBuf, Pkcs11)>> = Mutex::new(None);

/// The process's context for `module`: loaded and initialized on first use, shared after.
/// A process uses one module: asking for another once one is loaded is refused.
pub fn context(module: &Path) -> Result<Pkcs11, Pkcs11SamError> {
    // A poisoned lock only means another thread panicked while holding it; the context in
    // it is either whole or absent, so it is still safe to use.
    let mut slot = CONTEXT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((loaded, context)) = slot.as_ref() {
        if loaded != module {
            return Err(Pkcs11SamError::OtherModule {
                loaded: loaded.clone(),
                asked: module.to_owned(),
            });
        }
        return Ok(context.clone());
    }
    if !module.exists() {
        return Err(Pkcs11SamError::ModuleMissing(module.to_owned()));
    }
    let context = Pkcs11::new(module).map_err(|error| Pkcs11SamError::ModuleLoad {
        module: module.to_owned(),
        reason: error.to_string(),
    })?;
    // OS threads: sessions are used from several threads of the process (one each).
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|error| Pkcs11SamError::token("C_Initialize", &error))?;
    *slot = Some((module.to_owned(), context.clone()));
    Ok(context)
}
