//! Headless Chromium driven over WebDriver, for tests that use a page as a person would:
//! click, type, press keys, read what the page shows and save a screenshot of it.
//!
//! chromedriver listens on a loopback port and speaks plain HTTP, so the client needs no TLS.
//! chromedriver runs in a process group of its own with the browser it starts, and the whole
//! group is killed when the [`Browser`] is dropped, so a failing test leaves no browser behind.
//!
//! Every command has a time limit: a browser that stops answering fails the test with the
//! command's name instead of hanging it.

use std::fmt::Debug;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long one WebDriver command may take, browser start included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The tallest a screenshot of a long page is made.
const SCREENSHOT_HEIGHT_MAX: u64 = 4_000;
/// How long chromedriver may take to listen on its port.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times chromedriver is started before a test gives up on the browser.
const DRIVER_START_ATTEMPTS: usize = 3;

/// The browser and its driver, found on `PATH`.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

impl Tools {
    /// Chromium and chromedriver, or what is missing (Debian: `chromium chromium-driver`).
    pub fn find() -> Result<Self, String> {
        let chromium = on_path(&["chromium", "chromium-browser"]);
        let chromedriver = on_path(&["chromedriver"]);
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Ok(Tools {
                chromium,
                chromedriver,
            }),
            (chromium, chromedriver) => {
                let missing: Vec<&str> = [("chromium", chromium), ("chromedriver", chromedriver)]
                    .into_iter()
                    .filter(|(_, found)| found.is_none())
                    .map(|(name, _)| name)
                    .collect();
                Err(format!(
                    "{} not found on PATH (Debian packages chromium chromium-driver)",
                    missing.join(" and ")
                ))
            }
        }
    }
}

/// A free loopback port: bound, read, released, for a child process to take.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap()
}

/// Runs a WebDriver command with [`COMMAND_TIMEOUT`]; a failure names the command.
pub async fn within<T, E: Debug>(what: &str, command: impl Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{what}: {error:?}"),
        Err(_) => panic!("{what}: the browser did not answer within {COMMAND_TIMEOUT:?}"),
    }
}

/// chromedriver and, in its process group, the browser it started; killed together on drop.
struct Driver {
    child: Child,
    log: PathBuf,
}

impl Driver {
    /// Starts chromedriver on `port` and waits until it listens there; a driver that exits
    /// first or does not listen in time is an error carrying its log.
    fn spawn(tools: &Tools, port: u16, log: PathBuf) -> Result<Self, String> {
        let mut command = Command::new(&tools.chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("{}: {error}", tools.chromedriver.display()));
        let mut driver = Driver { child, log };
        driver.wait_listening(port)?;
        Ok(driver)
    }

    /// Waits until chromedriver accepts connections on `port`.
    fn wait_listening(&mut self, port: u16) -> Result<(), String> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(exit) = self.exited() {
                return Err(format!(
                    "chromedriver exited ({exit}) before listening on port {port}; its log:\n{}",
                    self.log_text()
                ));
            }
            if started.elapsed() >= DRIVER_START_TIMEOUT {
                return Err(format!(
                    "chromedriver did not listen on port {port} within {DRIVER_START_TIMEOUT:?}; its log:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// How chromedriver ended, if it has.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The negative id names the process group: chromedriver and every browser process.
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What chromedriver is asked for: headless Chromium (as root, hence no sandbox) with a
/// fresh profile, nothing fetched from the network on its own, and a fixed window size.
fn capabilities(
    tools: &Tools,
    profile: &Path,
    width: u32,
    height: u32,
) -> serde_json::Map<String, Value> {
    let options = json!({
        "binary": tools.chromium,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--force-device-scale-factor=1",
            "--lang=en-US",
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.join("chromium").display()),
        ],
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), options);
    capabilities
}

/// One headless Chromium session behind its own chromedriver.
pub struct Browser {
    client: Client,
    // Dropped in this order: the processes first, then their files.
    driver: Driver,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session in a `width`×`height` window.
    ///
    /// The port is free when chosen but released before chromedriver binds it, so another
    /// process may take it in between, and chromedriver then exits or the session is refused.
    /// That start is thrown away and another made on a new port; the test fails only when
    /// [`DRIVER_START_ATTEMPTS`] starts in a row fail, with what each of them left.
    pub async fn start(tools: &Tools, width: u32, height: u32) -> Self {
        let mut failures = Vec::new();
        for _ in 0..DRIVER_START_ATTEMPTS {
            match Self::start_once(tools, width, height).await {
                Ok(browser) => return browser,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "opening a Chromium session failed {DRIVER_START_ATTEMPTS} times:\n{}",
            failures.join("\n---\n")
        )
    }

    async fn start_once(tools: &Tools, width: u32, height: u32) -> Result<Self, String> {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut driver = Driver::spawn(tools, port, profile.path().join("chromedriver.log"))?;
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities(tools, profile.path(), width, height));
        let url = format!("http://127.0.0.1:{port}");
        let session = builder.connect(&url);
        match tokio::time::timeout(COMMAND_TIMEOUT, session).await {
            Ok(Ok(client)) => Ok(Browser {
                client,
                driver,
                profile,
            }),
            outcome => Err(format!(
                "opening a session on port {port}: {:?}; chromedriver {}; its log:\n{}",
                outcome.map(|result| result.err()),
                match driver.exited() {
                    Some(exit) => format!("exited ({exit})"),
                    None => "still running".to_owned(),
                },
                driver.log_text()
            )),
        }
    }

    /// The session, for [`Page`]s; clones share it.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Ends the session (the browser quits) and then chromedriver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.client.clone().close()).await;
        drop(self.driver);
        drop(self.profile);
    }
}

/// A page in the session: commands by element id, keys, scripts and numbered screenshots.
pub struct Page {
    client: Client,
    screenshots: PathBuf,
    prefix: String,
    shots: u32,
}

impl Page {
    /// Screenshots go to `screenshots`, named `{prefix}{NN}-{step}.png` in the order taken.
    pub fn new(client: Client, screenshots: &Path, prefix: &str) -> Self {
        std::fs::create_dir_all(screenshots).unwrap();
        Page {
            client,
            screenshots: screenshots.to_path_buf(),
            prefix: prefix.to_owned(),
            shots: 0,
        }
    }

    pub async fn goto(&self, url: &str) {
        within(&format!("opening {url}"), self.client.goto(url)).await;
    }

    /// Resizes the window so that the page's viewport is `width`×`height` CSS pixels.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        let (mut outer_width, mut outer_height) = (width, height);
        for _ in 0..3 {
            within(
                "resizing the window",
                self.client.set_window_size(outer_width, outer_height),
            )
            .await;
            let inner = self
                .script("return [window.innerWidth, window.innerHeight];")
                .await;
            let (inner_width, inner_height) = (number(&inner[0]), number(&inner[1]));
            if (inner_width, inner_height) == (u64::from(width), u64::from(height)) {
                return;
            }
            // The window's frame, if any, is outside the viewport: grow by the difference.
            outer_width = (u64::from(outer_width) + u64::from(width))
                .saturating_sub(inner_width)
                .try_into()
                .unwrap();
            outer_height = (u64::from(outer_height) + u64::from(height))
                .saturating_sub(inner_height)
                .try_into()
                .unwrap();
        }
        let inner = self
            .script("return [window.innerWidth, window.innerHeight];")
            .await;
        panic!("the viewport is {inner} instead of [{width}, {height}]");
    }

    /// Runs `body` as a function in the page and returns what it returns.
    pub async fn script(&self, body: &str) -> Value {
        within(
            &format!("running `{body}`"),
            self.client.execute(body, Vec::new()),
        )
        .await
    }

    /// Runs `body` as a function with `args`.
    pub async fn script_with(&self, body: &str, args: Vec<Value>) -> Value {
        within(
            &format!("running `{body}`"),
            self.client.execute(body, args),
        )
        .await
    }

    /// Runs `body`, which reports its result by calling `done(value)`, and waits for it.
    pub async fn script_async(&self, body: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1];\n{body}");
        within(
            &format!("running `{body}`"),
            self.client.execute_async(&script, Vec::new()),
        )
        .await
    }

    /// Clicks the element with this id, as a mouse would.
    pub async fn click(&self, id: &str) {
        let element = within(&format!("finding #{id}"), self.client.find(Locator::Id(id))).await;
        within(&format!("clicking #{id}"), element.click()).await;
    }

    /// Empties the field with this id and types `text` into it, key by key.
    pub async fn type_into(&self, id: &str, text: &str) {
        let element = within(&format!("finding #{id}"), self.client.find(Locator::Id(id))).await;
        within(&format!("clearing #{id}"), element.clear()).await;
        within(&format!("typing into #{id}"), element.send_keys(text)).await;
    }

    /// The text of the first element that matches the CSS `selector`, with its white space
    /// collapsed as a reader sees it.
    pub async fn text(&self, selector: &str) -> String {
        let value = self
            .script_with(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(selector)],
            )
            .await;
        match value {
            Value::String(text) => text.split_whitespace().collect::<Vec<_>>().join(" "),
            _ => panic!("nothing on the page matches {selector}"),
        }
    }

    /// Presses and releases `key` on whatever has the keyboard focus.
    pub async fn press(&self, key: Key) {
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key.into() })
            .then(KeyAction::Up { value: key.into() });
        within(
            &format!("pressing {key:?}"),
            self.client.perform_actions(keys),
        )
        .await;
    }

    /// The id of the focused element ("" when it has none).
    pub async fn focused_id(&self) -> String {
        let value = self
            .script("return document.activeElement ? document.activeElement.id : '';")
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Presses Tab until the element with this id has the focus, at most `presses_max` times.
    pub async fn tab_to(&self, id: &str, presses_max: u32) {
        let mut path = vec![self.focused_id().await];
        for _ in 0..presses_max {
            self.press(Key::Tab).await;
            let focused = self.focused_id().await;
            if focused == id {
                return;
            }
            path.push(focused);
        }
        panic!("#{id} was not reached with {presses_max} presses of Tab; the focus went {path:?}");
    }

    /// Saves a PNG of the whole page as the next numbered screenshot; returns its path. The
    /// window is made as tall as the page for it (up to [`SCREENSHOT_HEIGHT_MAX`]), then put
    /// back.
    pub async fn screenshot(&mut self, step: &str) -> PathBuf {
        self.shots += 1;
        let (width, height) =
            within("reading the window size", self.client.get_window_size()).await;
        let heights = self
            .script("return [window.innerHeight, document.scrollingElement.scrollHeight];")
            .await;
        let below = number(&heights[1]).saturating_sub(number(&heights[0]));
        let tall = (height + below).min(SCREENSHOT_HEIGHT_MAX);
        if tall > height {
            self.resize(width, tall).await;
        }
        let png = within(&format!("screenshot {step}"), self.client.screenshot()).await;
        if tall > height {
            self.resize(width, height).await;
        }
        let path = self
            .screenshots
            .join(format!("{}{:02}-{step}.png", self.prefix, self.shots));
        std::fs::write(&path, png).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        path
    }

    async fn resize(&self, width: u64, height: u64) {
        let size = |n: u64| u32::try_from(n).unwrap();
        within(
            "resizing the window",
            self.client.set_window_size(size(width), size(height)),
        )
        .await;
    }
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a whole number: {value}"))
}
