//! The value move of seed 002 from the command line, each service its own process: the
//! center's service, three providers and the move server over HTTPS on 127.0.0.1. A chip
//! with three services is moved to a new chip in two sessions; on the way the holder meets a
//! wrong password, an unregistered chip and a provider that is down (run again once it is
//! back, the move goes on), and the move server is killed and restarted between the two
//! sessions. At the end the old chip is refused at a terminal, the new one pays, and the
//! center counts the value once, on the new card.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

/// A service running until dropped (killed, with its process group).
struct Service {
    child: Child,
    name: &'static str,
}

impl Service {
    fn start(name: &'static str, args: &[&str], log: &Path) -> Service {
        let mut command = valuecard();
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
        let child = command.spawn().unwrap();
        Service { child, name }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `path` exists and a TCP connection to the URL it names succeeds.
fn wait_endpoint(path: &Path, service: &mut Service) -> String {
    let started = Instant::now();
    loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            panic!("{} exited ({status}) before listening", service.name);
        }
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                let url = value["url"].as_str().unwrap().to_owned();
                let address = url.trim_start_matches("https://").to_owned();
                if std::net::TcpStream::connect(&address).is_ok() {
                    return url;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} did not listen",
            service.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `valuecard ARGS` with the holder's password in the environment.
    fn holder(&self, args: &[&str], password: &str) -> Ran {
        run(valuecard()
            .args(args)
            .env("VALUECARD_MOVE_PASSWORD", password)
            .stdin(Stdio::null()))
    }

    fn provider(&self, service: &'static str) -> Service {
        let data = self.arg("move");
        let mut args = vec!["provider", "serve", "--data", &data, "--service", service];
        let center_cert = self.arg("center/center/service-certificate.pem");
        let center_url;
        if service == "0001" {
            center_url = std::fs::read_to_string(self.path("center.url")).unwrap();
            args.extend(["--center", &center_url, "--center-cert", &center_cert]);
        }
        let mut running = Service::start(service, &args, &self.path(&format!("{service}.log")));
        wait_endpoint(
            &self.path(&format!("move/endpoints/provider-{service}.json")),
            &mut running,
        );
        running
    }

    fn server(&self) -> Service {
        let data = self.arg("move");
        let mut running = Service::start(
            "move server",
            &["migrate", "serve", "--data", &data, "--port", "0"],
            &self.path("server.log"),
        );
        wait_endpoint(&self.path("move/endpoints/server.json"), &mut running);
        running
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_chip_moves_to_a_new_chip_through_the_services_run_as_programs() {
    let site = Site {
        dir: tempfile::tempdir().unwrap(),
    };
    let center = site.arg("center");
    json_args(&["center", "init", "--data", &center, "--terminals", "1"]);
    for (image, value) in [
        ("old.img", "50.00"),
        ("new.img", "7.00"),
        ("stray.img", "3.00"),
    ] {
        json_args(&[
            "card",
            "issue",
            "--data",
            &center,
            "--out",
            &site.arg(image),
            "--value",
            value,
        ]);
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _center_service = Service::start(
        "center",
        &["center", "serve", "--data", &center, "--listen", &listen],
        &site.path("center.log"),
    );
    std::fs::write(site.path("center.url"), format!("https://{listen}")).unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the center did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let data = site.arg("move");
    let init = json_args(&["migrate", "init", "--center", &center, "--data", &data]);
    assert_eq!(init["services"].as_array().unwrap().len(), 3, "{init}");
    let _purse = site.provider("0001");
    let tickets = site.provider("0102");
    let _points = site.provider("0203");
    let server = site.server();

    for service in ["0001", "0102", "0203"] {
        let issued = json_args(&[
            "provider",
            "issue",
            "--data",
            &data,
            "--service",
            service,
            "--card",
            &site.arg("old.img"),
        ]);
        assert_eq!(issued["service"], service, "{issued}");
        assert_eq!(issued["registered_with_move_server"], true, "{issued}");
    }
    let user = ["--data", data.as_str(), "--user", "hanako"];
    let created = site.holder(
        &[&["migrate", "user"][..], &user, &["--json"]].concat(),
        PASSWORD,
    );
    assert!(created.status.success(), "{}", created.stderr);
    for image in ["old.img", "new.img"] {
        let card = site.arg(image);
        let registered = site.holder(
            &[
                &["migrate", "register"][..],
                &user,
                &["--card", &card, "--json"],
            ]
            .concat(),
            PASSWORD,
        );
        assert!(registered.status.success(), "{}", registered.stderr);
    }
    let upload = |password: &str, image: &str| {
        let card = site.arg(image);
        site.holder(
            &[&["migrate"][..], &user, &["--card", &card, "--json"]].concat(),
            password,
        )
    };

    // A wrong password, an unregistered chip: clear words, a failure status, nothing moved.
    let wrong = upload("not the password", "old.img");
    assert!(!wrong.status.success());
    assert!(
        wrong.stderr.contains("wrong user ID or password"),
        "{}",
        wrong.stderr
    );
    let stray = upload(PASSWORD, "stray.img");
    assert!(!stray.status.success());
    assert!(stray.stderr.contains("not registered"), "{}", stray.stderr);

    // The passes' provider down: the holder is told which, and that nothing was lost.
    tickets.kill();
    let down = upload(PASSWORD, "old.img");
    assert!(!down.status.success());
    assert!(
        down.stderr.contains("service 0102 is unavailable")
            && down.stderr.contains("run the same command again"),
        "{}",
        down.stderr
    );
    // Back on its address: the same command carries the move on.
    let _tickets = site.provider("0102");
    let uploaded = upload(PASSWORD, "old.img");
    assert!(uploaded.status.success(), "{}", uploaded.stderr);
    let sessions: Value = serde_json::from_str(&uploaded.stdout).unwrap();
    assert_eq!(sessions["sessions"][0]["state"], "uploaded", "{sessions}");

    // The old chip is on temporary keys: the terminal cannot sell to it.
    let refused = run(&mut site_terminal(&center, "old.img", "1.00", &site));
    assert!(!refused.status.success(), "{}", refused.stdout);

    // The move server killed and started again on its database: the download carries on.
    server.kill();
    let _server = site.server();
    let card = site.arg("new.img");
    let done = site.holder(
        &[&["migrate"][..], &user, &["--to-card", &card, "--json"]].concat(),
        PASSWORD,
    );
    assert!(done.status.success(), "{}", done.stderr);
    let sessions: Value = serde_json::from_str(&done.stdout).unwrap();
    let session = &sessions["sessions"][0];
    assert_eq!(session["state"], "done", "{sessions}");
    assert!(session["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|service| service["state"] == "cleared"));

    // The new chip pays with the moved value; the old one is still refused.
    let paid = run(&mut site_terminal(&center, "new.img", "2.50", &site));
    assert!(paid.status.success(), "{}", paid.stderr);
    let receipt: Value = serde_json::from_str(&paid.stdout).unwrap();
    assert_eq!(receipt["balance_after"], 5_000 + 700 - 250, "{receipt}");
    assert!(!run(&mut site_terminal(&center, "old.img", "1.00", &site))
        .status
        .success());

    // The purse's provider reported the move to the center's service.
    let started = Instant::now();
    loop {
        let status = json_args(&["center", "status", "--data", &center]);
        if status["moves"]["moves"] == 1 {
            assert_eq!(status["moves"]["moved"], 5_000, "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the center never recorded the move: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `terminal purchase` at terminal-1 of the center in `center` with the card `image`.
fn site_terminal(center: &str, image: &str, amount: &str, site: &Site) -> Command {
    let mut command = valuecard();
    command.args([
        "terminal",
        "purchase",
        "--json",
        "--data",
        center,
        "--card",
        &site.arg(image),
        "--amount",
        amount,
    ]);
    command
}
