//! PC/SC readers for the terminal commands, when this build has the `pcsc` feature.

use std::process::ExitCode;

use valuecard_reader::CardReader;

#[cfg(not(feature = "pcsc"))]
const NOT_BUILT: &str =
    "this valuecard was built without PC/SC support: rebuild with `--features pcsc` \
                         (needs libpcsclite), or use --card FILE to work on a card image directly";

#[cfg(not(feature = "pcsc"))]
pub fn open(_reader: Option<&str>, _wait_seconds: u64) -> Result<Box<dyn CardReader>, String> {
    Err(NOT_BUILT.to_owned())
}

#[cfg(not(feature = "pcsc"))]
pub fn list_readers(_json: bool) -> Result<ExitCode, String> {
    Err(NOT_BUILT.to_owned())
}
