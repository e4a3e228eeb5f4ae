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

#[cfg(feature = "pcsc")]
pub fn open(reader: Option<&str>, wait_seconds: u64) -> Result<Box<dyn CardReader>, String> {
    let reader = valuecard_reader::pcsc_reader::PcscReader::open(
        reader,
        std::time::Duration::from_secs(wait_seconds),
    )
    .map_err(|error| format!("PC/SC: {error}"))?;
    Ok(Box::new(reader))
}

#[cfg(feature = "pcsc")]
pub fn list_readers(json: bool) -> Result<ExitCode, String> {
    let readers = valuecard_reader::pcsc_reader::PcscReader::list()
        .map_err(|error| format!("PC/SC: {error}"))?;
    if json {
        let list: Vec<_> = readers
            .iter()
            .enumerate()
            .map(|(index, name)| serde_json::json!({"index": index, "name": name}))
            .collect();
        println!("{}", serde_json::json!({ "readers": list }));
    } else if readers.is_empty() {
        println!("no PC/SC readers");
    } else {
        for (index, name) in readers.iter().enumerate() {
            println!("{index}: {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
