//! The center's set-up and service as an operator runs them: `center init` refuses a
//! PostgreSQL database that already holds a center, and `center serve` speaks HTTPS with the
//! certificate that `center init` made and the devices it installed pin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};

use rand_core::RngCore;

use common::{skip_note, text, valuecard};

/// A URL for a fresh, empty schema of the test server, or `None` (SKIPPED) without one.
fn fresh_postgres(test: &str) -> Option<String> {
    let url = std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            skip_note!("SKIPPED: {test}: PostgreSQL not reachable at {url:?}: {error}");
            return None;
        }
    };
    let schema = format!("valuecard_cli_test_{:016x}", rand_core::OsRng.next_u64());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    Some(format!("{url} options='-c search_path={schema}'"))
}

#[test]
fn center_init_refuses_a_database_that_already_holds_a_center() {
    let Some(database) =
        fresh_postgres("center_init_refuses_a_database_that_already_holds_a_center")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    let init = |data: &std::path::Path| {
        valuecard()
            .args([
                "center",
                "init",
                "--json",
                "--database",
                &database,
                "--data",
            ])
            .arg(data)
            .output()
            .unwrap()
    };
    let made = init(&first);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let center: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let center_id = center["center"].as_str().unwrap().to_owned();

    // A second center on the same database is refused, says which center is there, and
    // leaves no half-made center behind.
    let refused = init(&second);
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    assert!(
        message.contains("already holds center") && message.contains(&center_id),
        "{message}"
    );
    assert!(!second.join("center").join("center.keys").exists());
    assert!(!second.join("devices").exists());

    // The first center is untouched: its status still shows it, with its one dispenser, one
    // payment terminal and one settlement terminal.
    let status = valuecard()
        .args([
            "center",
            "status",
            "--json",
            "--database",
            &database,
            "--data",
        ])
        .arg(&first)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["center"].as_str(), Some(center_id.as_str()));
    assert_eq!(status["devices"].as_array().unwrap().len(), 3);
}

/// `center serve` on a free port; the first line it prints names its URL.
struct Service {
    child: std::process::Child,
    url: String,
}

impl Service {
    fn start(data: &std::path::Path) -> Self {
        Self::start_with(data, &[], Stdio::null())
    }

    fn start_with(data: &std::path::Path, args: &[&str], stderr: Stdio) -> Self {
        let mut child = valuecard()
            .args(["center", "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("https://"))
            .unwrap_or_else(|| panic!("no https:// URL in {line:?}"))
            .to_owned();
        Service { child, url }
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn center_serve_speaks_https_to_the_devices_it_installed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let made = valuecard()
        .args(["center", "init", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let center: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let fingerprint = center["service_certificate_sha256"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 64);
    // The service key is the center's alone; the devices hold the certificate.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = data.join("center").join("service-key.pem");
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(data
        .join("devices")
        .join("dispenser-1")
        .join("center-certificate.pem")
        .exists());

    let service = Service::start(&data);
    assert!(service.url.starts_with("https://127.0.0.1:"));
    let issue = |url: &str, out: &str| {
        valuecard()
            .args([
                "card", "issue", "--value", "10.00", "--center", url, "--data",
            ])
            .arg(&data)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap()
    };
    let issued = issue(&service.url, "card-1.img");
    assert!(issued.status.success(), "{}", text(&issued.stderr));

    // Plain HTTP is not spoken: the client refuses the URL, and the service refuses the
    // connection.
    let plain = service.url.replacen("https://", "http://", 1);
    let refused = issue(&plain, "card-2.img");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("https:// only"),
        "{}",
        text(&refused.stderr)
    );
    let address = service.url.trim_start_matches("https://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    assert!(
        !text(&answer).contains("HTTP/1.1 200"),
        "plain HTTP was answered: {}",
        text(&answer)
    );

    // A device that pins another certificate refuses this service.
    let pin = data
        .join("devices")
        .join("dispenser-1")
        .join("center-certificate.pem");
    let other = tempfile::tempdir().unwrap();
    let other_data = other.path().join("data");
    let made = valuecard()
        .args(["center", "init", "--data"])
        .arg(&other_data)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    std::fs::copy(
        other_data.join("center").join("service-certificate.pem"),
        &pin,
    )
    .unwrap();
    let refused = issue(&service.url, "card-3.img");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr)
            .to_ascii_lowercase()
            .contains("certificate"),
        "{}",
        text(&refused.stderr)
    );

    assert!(service.stop().success());
}

/// `--log-format json`: every log line is one JSON object, and each request is logged with
/// its endpoint, status and time.
#[test]
fn center_serve_logs_json_lines_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let made = valuecard()
        .args(["center", "init", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let log = dir.path().join("serve.log");
    let service = Service::start_with(
        &data,
        &["--log-format", "json"],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let issued = valuecard()
        .args([
            "card",
            "issue",
            "--value",
            "10.00",
            "--center",
            &service.url,
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("card.img"))
        .output()
        .unwrap();
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    assert!(service.stop().success());
    let written = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    let requests: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["message"] == "request")
        .collect();
    assert!(!requests.is_empty(), "{written}");
    for request in requests {
        assert_eq!(request["level"], "INFO", "{request}");
        assert!(
            request["endpoint"].as_str().unwrap().starts_with("/v1/"),
            "{request}"
        );
        assert_eq!(request["status"], 200, "{request}");
        assert!(request["micros"].is_u64(), "{request}");
    }
}
