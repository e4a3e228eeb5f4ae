//! The holder's wallet page in headless Chromium, used as a person would use it: content
//! bought from a member store of the mall, the card topped up with a credit card, a declined
//! credit card, an order the card cannot pay, and the page on a phone-sized screen with the
//! keyboard alone. Each test runs its own `valuecard online try` and ends it with SIGTERM; the
//! center's reconciliation must then count exactly what was done in the browser.
//!
//! The page is only ever waited on through `body.dataset.screen` and `body.dataset.busy`, with
//! a time limit and a message naming the step. A screenshot of every screen visited is saved
//! as `<target>/wallet-screenshots/NN-step.png` (`phone-NN-step.png` for the phone).
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium chromium-driver`). Without them the
//! tests print `SKIPPED:` and pass, unless `VALUECARD_REQUIRE_BROWSER=1`, where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use serde_json::Value;

use common::skip_note;
use webdriver::{Browser, Page, Tools};

/// How long the page may take to reach a screen and settle (busy false).
const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long `online try` may take to listen, and to report and exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The card image `online try` issues holds 50.00.
const ISSUED_MINOR: u64 = 5_000;
const DESKTOP: (u32, u32) = (1280, 1000);
const PHONE: (u32, u32) = (360, 640);

/// The browser's tools, or `None` after a `SKIPPED:` line; a failure when CI requires them.
fn tools_or_skip(test: &str) -> Option<Tools> {
    match Tools::find() {
        Ok(tools) => Some(tools),
        Err(missing) => {
            assert!(
                std::env::var("VALUECARD_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "{test}: {missing}, and VALUECARD_REQUIRE_BROWSER=1 requires them"
            );
            skip_note!("SKIPPED: {test}: {missing}");
            None
        }
    }
}

/// The folder for screenshots: the binary is `<target>/<profile>/valuecard`, so this is
/// `target/` of the workspace, or CARGO_TARGET_DIR when it is set.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_valuecard"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("wallet-screenshots")
}

/// `valuecard online try --json` in a temporary data directory.
struct OnlineTry {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    wallet_url: String,
    _data: tempfile::TempDir,
}

impl OnlineTry {
    fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let stderr = data.path().join("online-try.stderr");
        let mut child = common::valuecard()
            .args(["online", "try", "--port", "0", "--json", "--data"])
            .arg(data.path().join("online"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut online = OnlineTry {
            child,
            lines,
            stderr,
            wallet_url: String::new(),
            _data: data,
        };
        let addresses = online.next_json(START_TIMEOUT, "with its addresses");
        online.wallet_url = addresses["wallet_url"]
            .as_str()
            .unwrap_or_else(|| panic!("no wallet_url in {addresses}"))
            .to_owned();
        online
    }

    fn next_json(&self, timeout: Duration, what: &str) -> Value {
        let line = self.lines.recv_timeout(timeout).unwrap_or_else(|error| {
            panic!(
                "`valuecard online try` printed no line {what} within {timeout:?} ({error}); its stderr:\n{}",
                self.stderr_text()
            )
        });
        serde_json::from_str(&line).unwrap_or_else(|error| {
            panic!("`valuecard online try` printed {line:?} {what}, not JSON: {error}")
        })
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, as a person's Ctrl-C: the center's reconciliation, after a successful exit.
    fn stop(&mut self) -> Value {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}: {sent}", self.child.id());
        let summary = self.next_json(STOP_TIMEOUT, "after SIGTERM");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < STOP_TIMEOUT,
                "`valuecard online try` did not exit within {STOP_TIMEOUT:?} of SIGTERM"
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        assert!(
            status.success(),
            "`valuecard online try` exited with {status} after {summary}; its stderr:\n{}",
            self.stderr_text()
        );
        summary
    }
}

impl Drop for OnlineTry {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `scenario` on a page of a fresh browser; the browser quits whether it passes or not.
fn in_browser<T, F>(
    tools: &Tools,
    window: (u32, u32),
    prefix: &str,
    scenario: impl FnOnce(Wallet) -> F,
) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = Browser::start(tools, window.0, window.1).await;
        let page = Page::new(browser.client(), &screenshot_dir(), prefix);
        let outcome = tokio::spawn(scenario(Wallet { page })).await;
        browser.close().await;
        match outcome {
            Ok(value) => value,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("the scenario did not finish: {error}"),
            },
        }
    })
}

/// An amount as the page shows it.
fn money(minor: u64) -> String {
    format!("{}.{:02} EUR", minor / 100, minor % 100)
}

/// What the page says it is doing.
#[derive(Debug)]
struct Shown {
    screen: String,
    busy: String,
    error_kind: String,
    error: String,
}

/// The wallet's page: its screens, its header balance and its layout.
struct Wallet {
    page: Page,
}

impl Wallet {
    async fn shown(&self) -> Shown {
        let state = self
            .page
            .script(
                "const b = document.body.dataset;
                 const text = (id) => document.getElementById(id).textContent.trim();
                 return [b.screen || '', b.busy || '', b.errorKind || '',
                         text('error-title') + ': ' + text('error-detail')];",
            )
            .await;
        let field = |n: usize| state[n].as_str().unwrap_or_default().to_owned();
        Shown {
            screen: field(0),
            busy: field(1),
            error_kind: field(2),
            error: field(3),
        }
    }

    /// Waits until the page shows `screen` and is not busy; fails at once on the error
    /// screen when another was expected.
    async fn wait_screen(&self, screen: &str, step: &str) {
        let started = Instant::now();
        loop {
            let shown = self.shown().await;
            if shown.busy == "false" && shown.screen == screen {
                return;
            }
            assert!(
                !(shown.busy == "false" && shown.screen == "error" && screen != "error"),
                "{step}: expected the {screen} screen, the page shows the error screen, kind {:?}: {}",
                shown.error_kind,
                shown.error
            );
            assert!(
                started.elapsed() < SCREEN_TIMEOUT,
                "{step}: the page did not show the {screen} screen and settle within {SCREEN_TIMEOUT:?}; it shows {shown:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Clicks `id` and waits for `screen`.
    async fn click_to(&self, id: &str, screen: &str) {
        self.page.click(id).await;
        self.wait_screen(screen, &format!("after clicking #{id}"))
            .await;
    }

    async fn text(&self, selector: &str) -> String {
        self.page.text(selector).await
    }

    /// Waits until the header shows `balance` (it may be read again in the background).
    async fn wait_header_balance(&self, balance_minor: u64, step: &str) {
        let expected = money(balance_minor);
        let started = Instant::now();
        loop {
            let shown = self
                .page
                .script("const e = document.getElementById('card-balance'); return e ? e.textContent : '';")
                .await;
            if shown.as_str() == Some(expected.as_str()) {
                return;
            }
            assert!(
                started.elapsed() < SCREEN_TIMEOUT,
                "{step}: the header shows the balance {shown} instead of {expected}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The card read again (the header's Refresh), then its balance checked.
    async fn refresh_and_check_balance(&self, balance_minor: u64, step: &str) {
        let screen = self.shown().await.screen;
        self.page.click("refresh").await;
        self.wait_screen(&screen, step).await;
        self.wait_header_balance(balance_minor, step).await;
    }

    async fn screenshot(&mut self, step: &str) {
        self.page.screenshot(step).await;
    }

    /// Nothing wider than the window: the page never scrolls sideways.
    async fn assert_fits(&self, step: &str) {
        let measured = self
            .page
            .script(
                "const width = window.innerWidth;
                 const wide = [...document.querySelectorAll('body *')].filter((e) => {
                   const r = e.getBoundingClientRect();
                   return r.width > 0 && r.right > width + 0.5;
                 }).slice(0, 8).map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                   + ' ' + String(e.className) + ' right=' + Math.round(e.getBoundingClientRect().right));
                 return [width, document.scrollingElement.scrollWidth, wide];",
            )
            .await;
        let (width, scroll_width) = (&measured[0], &measured[1]);
        assert!(
            scroll_width.as_u64() <= width.as_u64(),
            "{step}: the page scrolls sideways: {scroll_width} wide in a {width} window; too wide: {}",
            measured[2]
        );
    }

    /// Focuses `id` the way a script or a skip link would.
    async fn focus(&self, id: &str) {
        self.page
            .script_with(
                "document.getElementById(arguments[0]).focus();",
                vec![Value::from(id)],
            )
            .await;
        assert_eq!(
            self.page.focused_id().await,
            id,
            "#{id} cannot take the focus"
        );
    }
}

/// What a scenario did to the card, for the center's reconciliation.
#[derive(Debug, Default, Clone, Copy)]
struct Done {
    spent_minor: u64,
    charged_minor: u64,
}

impl Done {
    fn balance_minor(&self) -> u64 {
        ISSUED_MINOR + self.charged_minor - self.spent_minor
    }
}

fn assert_reconciled(summary: &Value, done: Done) {
    assert_eq!(summary["conserved"], true, "not conserved: {summary}");
    assert_eq!(summary["issued"], ISSUED_MINOR, "{summary}");
    assert_eq!(summary["spent_online"], done.spent_minor, "{summary}");
    assert_eq!(summary["charged_online"], done.charged_minor, "{summary}");
    assert_eq!(summary["balances_total"], done.balance_minor(), "{summary}");
}

/// The title of a catalogue item, as the shop lists it.
async fn title_of(wallet: &Wallet, sku: &str) -> String {
    wallet
        .text(&format!("li:has(#add-{sku}) .item-title"))
        .await
}

/// E-books from "Chapter & Chip Books" through estimate, bill, confirmation and receipt;
/// the content is downloaded with the receipt.
async fn buy_two_books(wallet: &mut Wallet, done: &mut Done) {
    wallet.wait_screen("shop", "opening the wallet").await;
    wallet
        .wait_header_balance(done.balance_minor(), "opening the wallet")
        .await;
    wallet.screenshot("shop").await;
    let titles = [
        title_of(wallet, "book-1").await,
        title_of(wallet, "book-2").await,
    ];

    // 12.50 + 2 × 8.90: the second copy with the order's + button.
    wallet.click_to("add-book-1", "shop").await;
    wallet.click_to("add-book-2", "shop").await;
    assert_eq!(wallet.text("#cart-total").await, money(2_140));
    wallet.click_to("inc-book-2", "shop").await;
    assert_eq!(wallet.text("#cart-total").await, money(3_030));
    assert_eq!(
        wallet.text("#cart-store").await,
        "From Chapter & Chip Books"
    );
    wallet.screenshot("order").await;

    wallet.click_to("to-estimate", "estimate").await;
    assert_eq!(wallet.text("#estimate-store").await, "Chapter & Chip Books");
    assert_eq!(wallet.text("#estimate-lines .total").await, money(3_030));
    wallet.screenshot("estimate").await;

    wallet.click_to("to-method", "method").await;
    wallet.page.click("choose-card").await;
    wallet.screenshot("method").await;

    wallet.click_to("request-bill", "bill").await;
    let order = wallet.text("#bill-order").await;
    assert!(!order.is_empty(), "the bill has no order number");
    assert_eq!(wallet.text("#bill-store").await, "Chapter & Chip Books");
    assert_eq!(wallet.text("#bill-lines .total").await, money(3_030));
    wallet.screenshot("bill").await;

    // The card is in the reader, so the page goes straight on to read it.
    wallet.click_to("pay-with-card", "confirm").await;
    assert_eq!(wallet.text("#confirm-balance").await, money(5_000));
    assert_eq!(wallet.text("#confirm-total").await, money(3_030));
    assert_eq!(wallet.text("#confirm-after").await, money(1_970));
    assert_eq!(wallet.text("#confirm-order").await, order);
    // Reading the card again (the page does, and so may the person with Refresh) must leave
    // the prepared payment payable.
    wallet
        .refresh_and_check_balance(5_000, "on the confirmation")
        .await;
    wallet.screenshot("confirm").await;

    wallet.click_to("confirm-pay", "complete").await;
    done.spent_minor += 3_030;
    assert_eq!(wallet.text("#receipt-order").await, order);
    assert_eq!(wallet.text("#receipt-store").await, "Chapter & Chip Books");
    assert_eq!(wallet.text("#receipt-amount").await, money(3_030));
    assert_eq!(wallet.text("#receipt-balance").await, money(1_970));
    assert!(
        !wallet.text("#receipt-date").await.is_empty(),
        "the receipt has no date"
    );
    wallet.screenshot("complete").await;

    let download = wallet
        .page
        .script_async(
            "const link = document.getElementById('download');
             fetch(link.href)
               .then(async (r) => done([link.getAttribute('href'), r.status, await r.text()]))
               .catch((e) => done([link.getAttribute('href'), 0, String(e)]));",
        )
        .await;
    let href = download[0].as_str().unwrap_or_default();
    assert!(
        href.starts_with("/api/download/"),
        "the download link is {href:?}"
    );
    assert_eq!(download[1], 200, "downloading {href}: {}", download[2]);
    let content = download[2].as_str().unwrap_or_default();
    for title in &titles {
        assert!(
            content.contains(title.as_str()),
            "{href} does not hold {title:?}:\n{content}"
        );
    }
    wallet
        .wait_header_balance(done.balance_minor(), "after paying")
        .await;
}

/// The credit card form, filled in as a person types it.
async fn fill_credit_card(wallet: &Wallet, number: &str) {
    // A date in the future whatever the clock says: December of next year.
    let year = wallet
        .page
        .script("return String((new Date().getFullYear() + 1) % 100).padStart(2, '0');")
        .await;
    let expiry = format!("12/{}", year.as_str().unwrap_or("99"));
    wallet.page.type_into("card-number", number).await;
    wallet.page.type_into("card-expiry", &expiry).await;
    wallet.page.type_into("card-name", "Ada Holder").await;
}

/// 20.00 from an approved credit card, written to the card.
async fn top_up(wallet: &mut Wallet, done: &mut Done) {
    wallet.click_to("nav-charge", "charge-amount").await;
    let holds = format!("Your card holds {}.", money(done.balance_minor()));
    assert_eq!(wallet.text("#charge-balance-note").await, holds);
    wallet.page.type_into("charge-amount", "20").await;
    wallet.screenshot("charge-amount").await;

    wallet.click_to("charge-next", "charge-card").await;
    assert_eq!(wallet.text("#charge-card-amount").await, money(2_000));
    fill_credit_card(wallet, "4111 1111 1111 1111").await;
    wallet.screenshot("charge-card").await;

    wallet.click_to("authorize", "charge-authorized").await;
    let code = wallet.text("#auth-code").await;
    assert!(!code.is_empty(), "no authorization code is shown");
    assert_eq!(wallet.text("#auth-amount").await, money(2_000));
    assert_eq!(
        wallet.text("#auth-balance").await,
        money(done.balance_minor())
    );
    let after = done.balance_minor() + 2_000;
    assert_eq!(wallet.text("#auth-after").await, money(after));
    wallet.screenshot("charge-authorized").await;

    wallet.click_to("confirm-charge", "charge-done").await;
    done.charged_minor += 2_000;
    assert_eq!(
        wallet.text("#charge-done-balance").await,
        format!("Your card now holds {}", money(after))
    );
    wallet.wait_header_balance(after, "after the top-up").await;
    wallet.screenshot("charge-done").await;
}

/// A declined credit card: the error screen says so, and the card keeps its balance.
async fn declined_top_up(wallet: &mut Wallet, done: &Done) {
    wallet.click_to("nav-charge", "charge-amount").await;
    wallet.page.type_into("charge-amount", "20").await;
    wallet.click_to("charge-next", "charge-card").await;
    fill_credit_card(wallet, "4000 0000 0000 0002").await;
    wallet.screenshot("charge-card-declining").await;

    wallet.click_to("authorize", "error").await;
    assert_eq!(wallet.shown().await.error_kind, "declined");
    assert_eq!(
        wallet.text("#error-title").await,
        "Your credit card was declined"
    );
    assert_eq!(wallet.text("#error-back").await, "Use another card");
    wallet
        .refresh_and_check_balance(done.balance_minor(), "after the declined credit card")
        .await;
    wallet.screenshot("declined").await;

    wallet.click_to("error-back", "charge-card").await;
    wallet.click_to("nav-shop", "shop").await;
}

/// Six albums (59.40) on a card that holds less: the error screen offers a top-up, and the
/// card keeps its balance.
async fn order_beyond_the_balance(wallet: &mut Wallet, done: &Done) {
    let total_minor = 6 * 990;
    assert!(total_minor > done.balance_minor());
    for _ in 0..6 {
        wallet.click_to("add-album-1", "shop").await;
    }
    assert_eq!(wallet.text("#cart-total").await, money(total_minor));
    assert_eq!(
        wallet.text("#cart-store").await,
        "From Secure Element Records"
    );
    wallet.screenshot("order-too-large").await;

    wallet.click_to("to-estimate", "estimate").await;
    wallet.click_to("to-method", "method").await;
    wallet.click_to("request-bill", "bill").await;
    assert_eq!(wallet.text("#bill-lines .total").await, money(total_minor));
    wallet.click_to("pay-with-card", "error").await;
    assert_eq!(wallet.shown().await.error_kind, "insufficient-balance");
    assert_eq!(
        wallet.text("#error-title").await,
        "Not enough money on the card"
    );
    let topup_hidden = wallet
        .page
        .script("return document.getElementById('error-topup').hidden;")
        .await;
    assert_eq!(topup_hidden, false, "the error screen offers no top-up");
    wallet
        .wait_header_balance(done.balance_minor(), "after the refused order")
        .await;
    wallet
        .refresh_and_check_balance(done.balance_minor(), "after the refused order")
        .await;
    wallet.screenshot("insufficient-balance").await;

    wallet.click_to("error-back", "bill").await;
    wallet.click_to("nav-shop", "shop").await;
    wallet.click_to("clear-cart", "shop").await;
}

/// The card's history lists the payment and the top-up.
async fn history(wallet: &mut Wallet) {
    wallet.click_to("nav-history", "history").await;
    let kinds = wallet
        .page
        .script("return [...document.querySelectorAll('#history-list tbody tr')].map((r) => r.dataset.kind);")
        .await;
    let kinds: Vec<&str> = kinds
        .as_array()
        .map(|kinds| kinds.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(kinds.len(), 2, "the history shows {kinds:?}");
    assert!(kinds.contains(&"charge"), "the history shows {kinds:?}");
    wallet.screenshot("history").await;
}

#[test]
fn purchase_top_up_and_refusals_in_a_browser() {
    let test = "purchase_top_up_and_refusals_in_a_browser";
    let Some(tools) = tools_or_skip(test) else {
        return;
    };
    let mut online = OnlineTry::start();
    let url = online.wallet_url.clone();
    let done = in_browser(&tools, DESKTOP, "", |mut wallet| async move {
        let mut done = Done::default();
        wallet.page.goto(&url).await;
        buy_two_books(&mut wallet, &mut done).await;
        top_up(&mut wallet, &mut done).await;
        declined_top_up(&mut wallet, &done).await;
        order_beyond_the_balance(&mut wallet, &done).await;
        history(&mut wallet).await;
        done
    });
    assert_eq!((done.spent_minor, done.charged_minor), (3_030, 2_000));
    assert_reconciled(&online.stop(), done);
}

/// Tab until `id` has the focus, then activate it with `key`, and wait for `screen`.
async fn keyboard_to(wallet: &Wallet, id: &str, key: Key, screen: &str) {
    wallet.page.tab_to(id, 40).await;
    wallet.page.press(key).await;
    wallet
        .wait_screen(screen, &format!("after pressing {key:?} on #{id}"))
        .await;
}

#[test]
fn phone_sized_window_and_keyboard_alone() {
    let test = "phone_sized_window_and_keyboard_alone";
    let Some(tools) = tools_or_skip(test) else {
        return;
    };
    let mut online = OnlineTry::start();
    let url = online.wallet_url.clone();
    in_browser(&tools, PHONE, "phone-", |mut wallet| async move {
        wallet.page.set_viewport(PHONE.0, PHONE.1).await;
        wallet.page.goto(&url).await;
        wallet.wait_screen("shop", "opening the wallet").await;
        wallet
            .wait_header_balance(ISSUED_MINOR, "opening the wallet")
            .await;
        wallet.assert_fits("the shop").await;
        wallet.screenshot("shop").await;

        // A book added with Enter on its button, then Tab through the order to the estimate.
        wallet.focus("add-book-1").await;
        wallet.page.press(Key::Enter).await;
        wallet
            .wait_screen("shop", "after Enter on #add-book-1")
            .await;
        assert_eq!(wallet.text("#cart-total").await, money(1_250));
        wallet.assert_fits("the shop with an order").await;
        keyboard_to(&wallet, "to-estimate", Key::Enter, "estimate").await;
        wallet.assert_fits("the estimate").await;
        wallet.screenshot("estimate").await;

        keyboard_to(&wallet, "to-method", Key::Enter, "method").await;
        wallet.assert_fits("the payment method").await;
        wallet.screenshot("method").await;

        // Space activates a button as Enter does.
        keyboard_to(&wallet, "request-bill", Key::Space, "bill").await;
        wallet.assert_fits("the bill").await;
        wallet.screenshot("bill").await;

        keyboard_to(&wallet, "pay-with-card", Key::Enter, "confirm").await;
        assert_eq!(wallet.text("#confirm-total").await, money(1_250));
        wallet.assert_fits("the confirmation").await;
        wallet.screenshot("confirm").await;

        // Cancelled: nothing is taken from the card.
        keyboard_to(&wallet, "cancel-pay", Key::Enter, "shop").await;
        assert_eq!(
            wallet.text("#shop-notice").await,
            "Payment cancelled. Nothing was taken from your card."
        );
        wallet
            .wait_header_balance(ISSUED_MINOR, "after cancelling")
            .await;
        wallet.assert_fits("the shop after cancelling").await;
        wallet.screenshot("cancelled").await;

        // The top-up form, filled in and sent with Enter in its field.
        wallet.click_to("nav-charge", "charge-amount").await;
        wallet.assert_fits("the top-up amount").await;
        wallet.page.type_into("charge-amount", "20").await;
        wallet.page.press(Key::Enter).await;
        wallet
            .wait_screen("charge-card", "after Enter in #charge-amount")
            .await;
        fill_credit_card(&wallet, "4111 1111 1111 1111").await;
        wallet.assert_fits("the credit card form").await;
        wallet.screenshot("charge-card").await;
        wallet.click_to("charge-card-back", "charge-amount").await;
        wallet.click_to("nav-shop", "shop").await;
    });
    assert_reconciled(&online.stop(), Done::default());
}
