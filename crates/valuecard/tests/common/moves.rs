//! A value move site (seed 002) of separate programs: a center in `center/`, a move system in
//! `move/` (`migrate init`), its providers and move server run as processes, and the
//! holder's commands with the password in the environment.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{run, run_json, valuecard, Ran};

/// The holder's password at the move server in these tests.
pub const PASSWORD: &str = "correct horse battery";

/// The services `migrate init` sets up: the purse, passes and points.
pub const SERVICES: [&str; 3] = ["0001", "0102", "0203"];

/// A service running until dropped (killed).
pub struct Service {
    child: Child,
    name: &'static str,
    /// Where its standard error goes.
    errors: PathBuf,
}

impl Service {
    pub fn start(name: &'static str, mut command: Command, args: &[&str], log: &Path) -> Service {
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
        let child = command.spawn().unwrap();
        Service {
            child,
            name,
            errors: log.with_extension("err"),
        }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until `path` exists and a TCP connection to the URL it names succeeds.
    fn wait_endpoint(&mut self, path: &Path) -> String {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before listening: {}",
                    self.name,
                    std::fs::read_to_string(&self.errors).unwrap_or_default()
                );
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
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The site's directory and what every program of it runs with.
pub struct MoveSite {
    dir: tempfile::TempDir,
    /// Environment for every program (a token's configuration and PIN).
    pub env: Vec<(&'static str, String)>,
}

impl MoveSite {
    /// A center with one payment terminal that issued `cards` (image name, value).
    pub fn with_center(cards: &[(&str, &str)]) -> MoveSite {
        let site = MoveSite {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        };
        site.issue_cards(cards);
        site
    }

    /// An empty site: `env` is set first, then [`Self::issue_cards`].
    pub fn empty() -> MoveSite {
        MoveSite {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// `center init` and `card issue` of each (image name, value).
    pub fn issue_cards(&self, cards: &[(&str, &str)]) {
        let center = self.arg("center");
        self.json(&["center", "init", "--data", &center, "--terminals", "1"]);
        for (image, value) in cards {
            let out = self.arg(image);
            self.json(&[
                "card", "issue", "--data", &center, "--out", &out, "--value", value,
            ]);
        }
    }

    pub fn command(&self) -> Command {
        let mut command = valuecard();
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        command
    }

    /// `valuecard ARGS --json`, which must succeed.
    pub fn json(&self, args: &[&str]) -> Value {
        run_json(self.command().args(args).arg("--json"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `migrate init` of the move system in `move/`, certified by the site's center.
    pub fn init_moves(&self, extra: &[&str]) -> Value {
        let (center, data) = (self.arg("center"), self.arg("move"));
        self.json(
            &[
                &["migrate", "init", "--center", &center, "--data", &data][..],
                extra,
            ]
            .concat(),
        )
    }

    /// `valuecard ARGS` with the holder's password in the environment.
    pub fn holder(&self, args: &[&str], password: &str) -> Ran {
        run(self
            .command()
            .args(args)
            .env("VALUECARD_MOVE_PASSWORD", password))
    }

    /// `valuecard migrate --data MOVE --user USER ARGS --json` with `password`, started:
    /// its output is piped.
    pub fn spawn_migrate(&self, user: &str, args: &[&str], password: &str) -> Child {
        let data = self.arg("move");
        self.command()
            .args(["migrate", "--data", &data, "--user", user])
            .args(args)
            .arg("--json")
            .env("VALUECARD_MOVE_PASSWORD", password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// How many move copies the providers' transfer SAMs still hold (their SQLite books).
    pub fn copies_held(&self) -> i64 {
        use valuecard_center::sql::{Database, Executor};
        SERVICES
            .iter()
            .map(|service| {
                let path = self.path(&format!("move/provider-{service}.sqlite"));
                let mut db = Database::open_sqlite(&path).unwrap();
                db.query_one(
                    "SELECT COUNT(*) FROM provider_copies WHERE sealed_copy IS NOT NULL",
                    &[],
                )
                .unwrap()
                .int(0)
                .unwrap()
            })
            .sum()
    }

    /// `valuecard migrate --data MOVE --user USER ARGS --json` with `password`.
    pub fn migrate(&self, user: &str, args: &[&str], password: &str) -> Ran {
        self.migrate_command(&[], user, args, password)
    }

    /// `valuecard migrate SUBCOMMAND --data MOVE --user USER ARGS --json` with `password`.
    pub fn migrate_command(
        &self,
        subcommand: &[&str],
        user: &str,
        args: &[&str],
        password: &str,
    ) -> Ran {
        let data = self.arg("move");
        let all = [
            &["migrate"][..],
            subcommand,
            &["--data", &data, "--user", user],
            args,
            &["--json"],
        ]
        .concat();
        self.holder(&all, password)
    }

    /// The holder `user` created, with the card images `images` registered as their chips.
    pub fn holder_with_chips(&self, user: &str, images: &[&str]) {
        let created = self.migrate_command(&["user"], user, &[], PASSWORD);
        assert!(created.status.success(), "{}", created.stderr);
        for image in images {
            let card = self.arg(image);
            let registered =
                self.migrate_command(&["register"], user, &["--card", &card], PASSWORD);
            assert!(registered.status.success(), "{}", registered.stderr);
        }
    }

    /// The center's service, listening on a free port of 127.0.0.1; its URL is kept for
    /// [`Self::provider`].
    pub fn center_service(&self) -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let center = self.arg("center");
        let service = Service::start(
            "center",
            self.command(),
            &["center", "serve", "--data", &center, "--listen", &listen],
            &self.path("center.log"),
        );
        std::fs::write(self.path("center.url"), format!("https://{listen}")).unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the center did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        service
    }

    /// The provider of `service`; the purse's reports to the center's service if one was
    /// started.
    pub fn provider(&self, service: &'static str) -> Service {
        let center_cert = self.arg("center/center/service-certificate.pem");
        match std::fs::read_to_string(self.path("center.url")) {
            Ok(center_url) if service == "0001" => self.provider_with(
                service,
                &["--center", &center_url, "--center-cert", &center_cert],
            ),
            _ => self.provider_with(service, &[]),
        }
    }

    fn provider_with(&self, service: &'static str, extra: &[&str]) -> Service {
        let data = self.arg("move");
        let args = [
            &["provider", "serve", "--data", &data, "--service", service][..],
            extra,
        ]
        .concat();
        let mut running = Service::start(
            service,
            self.command(),
            &args,
            &self.path(&format!("{service}.log")),
        );
        running.wait_endpoint(&self.path(&format!("move/endpoints/provider-{service}.json")));
        running
    }

    /// Every provider (the purse's reporting to the center's service if one was started),
    /// then the move server.
    pub fn services(&self) -> Vec<Service> {
        let mut running: Vec<Service> = SERVICES
            .into_iter()
            .map(|service| self.provider(service))
            .collect();
        running.push(self.server());
        running
    }

    /// The move server, on any free port.
    pub fn server(&self) -> Service {
        let data = self.arg("move");
        let mut running = Service::start(
            "move server",
            self.command(),
            &["migrate", "serve", "--data", &data, "--port", "0"],
            &self.path("server.log"),
        );
        running.wait_endpoint(&self.path("move/endpoints/server.json"));
        running
    }

    /// `provider issue` of every service onto the card image `image`; each is registered
    /// with the running move server.
    pub fn issue_services(&self, image: &str) {
        let (data, card) = (self.arg("move"), self.arg(image));
        for service in SERVICES {
            let issued = self.json(&[
                "provider",
                "issue",
                "--data",
                &data,
                "--service",
                service,
                "--card",
                &card,
            ]);
            assert_eq!(issued["service"], service, "{issued}");
            assert_eq!(issued["registered_with_move_server"], true, "{issued}");
        }
    }

    /// `terminal purchase` at the center's terminal-1 with the card image `image`.
    pub fn purchase(&self, image: &str, amount: &str) -> Ran {
        let (center, card) = (self.arg("center"), self.arg(image));
        run(self.command().args([
            "terminal", "purchase", "--json", "--data", &center, "--card", &card, "--amount",
            amount,
        ]))
    }
}

/// The last session the client printed (the download when it ran both), which must have
/// succeeded.
pub fn session(ran: &Ran) -> Value {
    assert!(ran.status.success(), "{}{}", ran.stdout, ran.stderr);
    let sessions: Value = serde_json::from_str(&ran.stdout).unwrap();
    sessions["sessions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone()
}
