//! Which SAM a device has: the software SAM (an image file in the device's directory, the
//! default and the demo's) or a SAM in a PKCS#11 token (`--sam pkcs11:...`, RFC 7512).
//!
//! A device's kind is fixed when it is installed: `terminal install --sam pkcs11:...`
//! generates its keys in the token and records the URI (never its PIN) in
//! `DIR/devices/NAME/sam.uri`; every later command opens the token that file names. A
//! `--sam` given to a later command must name the same objects (it may carry the PIN or a
//! `pin-source`); it never switches a device to another SAM.
//!
//! The module comes from `--pkcs11-module`, else `VALUECARD_PKCS11_MODULE`, else the URI's
//! `module-path`, else SoftHSM2's if installed. The PIN comes from the URI (`pin-value` or
//! `pin-source`), else `VALUECARD_PKCS11_PIN`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rand_core::OsRng;
use valuecard_core::crypto::AesKey;
use valuecard_core::ids::DeviceId;
use valuecard_sam::{Sam, SoftwareSam};
use valuecard_sam_pkcs11::{Pkcs11Sam, TokenAddress};

/// The options every command that uses a device's SAM accepts (global: they may stand
/// before or after the subcommand).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SamArgs {
    /// The device's SAM: `software` (the default) or a PKCS#11 URI such as
    /// `pkcs11:token=valuecard;object=terminal-2?pin-source=/run/pin` (see docs/hsm.md). At
    /// `terminal install` it chooses where the new device's keys are generated; later it must
    /// name the SAM the device was installed with.
    #[arg(long, global = true, value_name = "software|pkcs11:URI")]
    pub sam: Option<String>,
    /// The PKCS#11 module (default: $VALUECARD_PKCS11_MODULE, the URI's module-path, or
    /// SoftHSM2's).
    #[arg(long, global = true, value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
}

static SAM_ARGS: OnceLock<SamArgs> = OnceLock::new();

/// Records the process's SAM options (once, from `main`).
pub fn set_process_args(args: SamArgs) {
    let _ = SAM_ARGS.set(args);
}

fn process_args() -> SamArgs {
    SAM_ARGS.get().cloned().unwrap_or_default()
}

/// The process's `--pkcs11-module`, if given.
pub fn pkcs11_module_option() -> Option<PathBuf> {
    process_args().pkcs11_module
}

/// Where a new device's keys go.
#[derive(Debug, Clone)]
pub enum SamChoice {
    Software,
    Pkcs11(Box<TokenAddress>),
}

impl SamChoice {
    /// `software`, or a PKCS#11 URI with the module option.
    pub fn parse(text: &str, module: Option<&Path>) -> Result<Self, String> {
        if text == "software" {
            return Ok(SamChoice::Software);
        }
        if !text.starts_with("pkcs11:") {
            return Err(format!(
                "--sam takes `software` or a PKCS#11 URI (pkcs11:token=...;object=...), not {text:?}"
            ));
        }
        TokenAddress::parse(text, module)
            .map(|address| SamChoice::Pkcs11(Box::new(address)))
            .map_err(|e| e.to_string())
    }

    /// For a command whose devices always get software SAMs (`center init`, `demo`): a
    /// token given with `--sam` is refused rather than silently ignored.
    pub fn refuse_token(command: &str, devices: &str) -> Result<(), String> {
        match Self::from_process_args()? {
            SamChoice::Software => Ok(()),
            SamChoice::Pkcs11(_) => Err(format!(
                "{command} gives {devices} software SAMs; install a device with its SAM in a \
                 token with `valuecard terminal install --sam pkcs11:...` (docs/hsm.md)"
            )),
        }
    }

    /// The choice the process's `--sam` makes (the software SAM without one).
    pub fn from_process_args() -> Result<Self, String> {
        let args = process_args();
        match &args.sam {
            None => Ok(SamChoice::Software),
            Some(text) => Self::parse(text, args.pkcs11_module.as_deref()),
        }
    }
}

/// A device's SAM, of whichever kind it was installed with. It is a [`Sam`]; box it for a
/// `Box<dyn Sam>`.
#[derive(Debug)]
pub enum DeviceSam {
    Software(Box<SoftwareSam>),
    Pkcs11(Box<Pkcs11Sam>),
}

/// The file that records a PKCS#11 device's URI.
pub const URI_FILE: &str = "sam.uri";
/// The file that holds a software device's SAM image.
pub const IMAGE_FILE: &str = "sam.key";
/// The device ID of a PKCS#11 device, to check that the token's SAM is this device's.
const DEVICE_ID_FILE: &str = "device-id";

impl DeviceSam {
    /// A new SAM of `choice` for `device_id`, with its transport key.
    pub fn manufacture(
        choice: &SamChoice,
        device_id: DeviceId,
        transport_key: AesKey,
    ) -> Result<Self, String> {
        match choice {
            SamChoice::Software => Ok(DeviceSam::Software(Box::new(SoftwareSam::manufacture(
                device_id,
                transport_key,
                &mut OsRng,
            )))),
            SamChoice::Pkcs11(address) => Pkcs11Sam::manufacture(address, device_id, transport_key)
                .map(|sam| DeviceSam::Pkcs11(Box::new(sam)))
                .map_err(|e| e.to_string()),
        }
    }

    /// Opens the SAM of the device in `dir` (which holds `sam.uri` or `sam.key`).
    pub fn open(dir: &Path, name: &str) -> Result<Self, String> {
        let args = process_args();
        let uri_path = dir.join(URI_FILE);
        if uri_path.exists() {
            let recorded = std::fs::read_to_string(&uri_path)
                .map_err(|e| format!("{}: {e}", uri_path.display()))?;
            let recorded = TokenAddress::parse(recorded.trim(), args.pkcs11_module.as_deref())
                .map_err(|e| format!("{}: {e}", uri_path.display()))?;
            let address = match &args.sam {
                Some(given) => {
                    let given = TokenAddress::parse(given, args.pkcs11_module.as_deref())
                        .map_err(|e| format!("--sam: {e}"))?;
                    if !given.uri.same_objects(&recorded.uri) {
                        return Err(format!(
                            "device {name:?}'s SAM is {}, not {}",
                            recorded.uri.without_pin(),
                            given.uri.without_pin()
                        ));
                    }
                    given
                }
                None => recorded,
            };
            let device_id = read_device_id(dir)?;
            return Pkcs11Sam::open_for(&address, device_id)
                .map(|sam| DeviceSam::Pkcs11(Box::new(sam)))
                .map_err(|e| format!("device {name:?}: {e}"));
        }
        if let Some(given) = args.sam.as_deref().filter(|given| *given != "software") {
            return Err(format!(
                "device {name:?} has a software SAM, not {given:?} (a device keeps the SAM it was installed with)"
            ));
        }
        let image =
            std::fs::read(dir.join(IMAGE_FILE)).map_err(|e| format!("{}: {e}", dir.display()))?;
        SoftwareSam::from_image(&image)
            .map(|sam| DeviceSam::Software(Box::new(sam)))
            .map_err(|e| format!("device {name:?}: {e}"))
    }

    /// What the device's directory must hold to open this SAM again: the image of a
    /// software SAM (its keys: owner-only), or the URI (without PIN) and device ID of a
    /// token's. `write_private` writes a file atomically and owner-only.
    pub fn record(
        &self,
        dir: &Path,
        write_private: impl Fn(&Path, &[u8]) -> Result<(), String>,
        uri: Option<&TokenAddress>,
    ) -> Result<(), String> {
        match (self, uri) {
            (DeviceSam::Software(sam), _) => write_private(&dir.join(IMAGE_FILE), &sam.to_image()),
            (DeviceSam::Pkcs11(sam), Some(address)) => {
                write_private(
                    &dir.join(URI_FILE),
                    format!("{}\n", address.uri.without_pin()).as_bytes(),
                )?;
                write_private(
                    &dir.join(DEVICE_ID_FILE),
                    format!("{}\n", sam.device_id()).as_bytes(),
                )
            }
            (DeviceSam::Pkcs11(_), None) => Err("a PKCS#11 SAM needs its URI recorded".into()),
        }
    }

    /// Stores what changed since the SAM was opened: a software SAM's image (its stamp chain
    /// and sequence moved); nothing for a token's, whose state is written in the token at
    /// every change.
    pub fn save(
        &self,
        dir: &Path,
        write_private: impl Fn(&Path, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        match self {
            DeviceSam::Software(sam) => write_private(&dir.join(IMAGE_FILE), &sam.to_image()),
            DeviceSam::Pkcs11(_) => Ok(()),
        }
    }

    fn inner(&self) -> &dyn Sam {
        match self {
            DeviceSam::Software(sam) => sam.as_ref(),
            DeviceSam::Pkcs11(sam) => sam.as_ref(),
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Sam {
        match self {
            DeviceSam::Software(sam) => sam.as_mut(),
            DeviceSam::Pkcs11(sam) => sam.as_mut(),
        }
    }
}

fn read_device_id(dir: &Path) -> Result<DeviceId, String> {
    let path = dir.join(DEVICE_ID_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes = hex::decode(text.trim()).map_err(|_| format!("{}: not hex", path.display()))?;
    DeviceId::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

valuecard_sam::delegate_sam!(impl[] for DeviceSam, DeviceSam::inner, DeviceSam::inner_mut);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sam_choice_is_software_or_a_pkcs11_uri() {
        assert!(matches!(
            SamChoice::parse("software", None),
            Ok(SamChoice::Software)
        ));
        let Ok(SamChoice::Pkcs11(address)) = SamChoice::parse(
            "pkcs11:token=t;object=o?pin-value=1",
            Some(Path::new("/m.so")),
        ) else {
            panic!("a PKCS#11 URI is a token choice");
        };
        assert_eq!(address.uri.object, "o");
        assert_eq!(address.module.as_deref(), Some(Path::new("/m.so")));
        for refused in ["", "hsm", "pkcs11:token=t", "pkcs11:object=o;bogus=1"] {
            assert!(SamChoice::parse(refused, None).is_err(), "{refused:?}");
        }
    }
}
