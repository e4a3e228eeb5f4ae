//! Faults of the center's SQLite database at a chosen statement, for the tearing harness of
//! the center (`tearing_center.rs`).
//!
//! SQLite calls the trace callback as each statement starts to run, and the progress handler
//! (installed for every VM instruction) decides whether it may go on. Every statement SQLite
//! compiles jumps once through the interrupt check before it touches a page, so the statement
//! whose number comes up fails with SQLITE_INTERRUPT without changing anything, and SQLite
//! rolls back the transaction it was in. After a crash every later statement, and every later
//! prepare, fails the same way until the center is reopened from its files: what a process
//! death leaves behind is exactly the committed transactions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::path::Path;

use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_center::sql::{Database, Executor};
use valuecard_center::{db_path, Center};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{
    CardCertificationRequest, CardIdAssignment, CardIdRequest, CardPersonalization, CenterError,
    CenterLink, ListDelta, LoadApproval, LoadOutcome, LoadRequest, LoadSettlement,
    SettlementChallengeRequest, TerminalLink, UploadReceipt, UsageUpload,
};
use valuecard_core::messages::purse::Challenge;
use valuecard_core::time::{Clock, Date, FixedClock};

/// Where the center fails during one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Statement k fails and nothing after it runs: the center's process dies there.
    Crash(u64),
    /// Statement k alone fails (a connection that drops and comes back); the center goes on.
    Transient(u64),
    /// Request n is carried out and its answer lost; the center's process dies right after.
    LostAnswer(u64),
}

thread_local! {
    static ARMED: Cell<Option<Fault>> = const { Cell::new(None) };
    static STATEMENTS: Cell<u64> = const { Cell::new(0) };
    static FAILING: Cell<bool> = const { Cell::new(false) };
    static FIRED: Cell<bool> = const { Cell::new(false) };
}

fn on_statement(_sql: &str) {
    let Some(fault) = ARMED.get() else {
        return;
    };
    let seen = STATEMENTS.get() + 1;
    STATEMENTS.set(seen);
    if let Fault::Crash(k) | Fault::Transient(k) = fault {
        if seen == k {
            FAILING.set(true);
            FIRED.set(true);
        }
    }
}

fn interrupt() -> bool {
    let failing = FAILING.get();
    // One refusal aborts the statement; a transient fault then lets the next one run.
    if failing && matches!(ARMED.get(), Some(Fault::Transient(_))) {
        FAILING.set(false);
    }
    failing
}

/// Arms `fault` for the statements and requests from now on (this thread only: tests run in
/// parallel threads, each with its own center).
pub fn arm(fault: Fault) {
    STATEMENTS.set(0);
    FAILING.set(false);
    FIRED.set(false);
    ARMED.set(Some(fault));
}

/// Disarms, and returns how many statements ran since `arm`.
pub fn disarm() -> u64 {
    ARMED.set(None);
    FAILING.set(false);
    STATEMENTS.get()
}

pub fn clock(today: Date) -> Box<dyn Clock> {
    Box::new(FixedClock(today))
}

/// The center in `dir` on a fresh connection to its files, with the fault hooks installed.
pub fn reopen(dir: &Path, today: Date) -> Center {
    let mut database = Database::open_sqlite(&db_path(dir)).unwrap();
    let Database::Sqlite { connection, .. } = &mut database else {
        panic!("the center in {} is not on SQLite", dir.display());
    };
    connection.trace(Some(on_statement));
    connection.progress_handler(1, Some(interrupt));
    Center::open(dir, Some(database), clock(today)).unwrap()
}

/// The center's process dies and starts again: its connection goes (SQLite keeps exactly
/// the committed transactions), the files must pass the invariants, and the center is
/// opened from them anew.
pub fn restart(center: &mut Center, dir: &Path, today: Date) {
    disarm();
    let stand_in = Center::open(
        dir,
        Some(Database::open_sqlite_in_memory().unwrap()),
        clock(today),
    )
    .unwrap();
    drop(std::mem::replace(center, stand_in));
    let violations = invariants(dir, today);
    assert!(violations.is_empty(), "after a crash: {violations:?}");
    *center = reopen(dir, today);
}

/// What must hold in the center's files whenever no transaction is open: nothing half
/// applied, nothing flagged that a crash alone could have caused, and no value created.
pub fn invariants(dir: &Path, today: Date) -> Vec<String> {
    let mut db = Database::open_sqlite(&db_path(dir)).unwrap();
    let mut violations = Vec::new();
    let checks: &[(&str, &str)] = &[
        (
            "a load numbered at or past the load sequence",
            "SELECT COUNT(*) FROM loads
             WHERE load_number >= (SELECT next FROM sequences WHERE name = 'load')",
        ),
        (
            "more cards than card numbers taken",
            "SELECT (SELECT COUNT(*) FROM cards) >= (SELECT next FROM sequences WHERE name = 'card')",
        ),
        (
            "more devices than device numbers taken",
            "SELECT (SELECT COUNT(*) FROM devices) >= (SELECT next FROM sequences WHERE name = 'device')",
        ),
        (
            "a load for a card that is not issued",
            "SELECT COUNT(*) FROM loads l LEFT JOIN cards c ON c.card_id = l.card_id
             WHERE c.status IS NULL OR c.status = 'assigned'",
        ),
        (
            "an issued card without its key or certificate",
            "SELECT COUNT(*) FROM cards
             WHERE status != 'assigned' AND (signing_key IS NULL OR certificate IS NULL)",
        ),
        (
            "a load still pending at a state a committed load consumed",
            "SELECT COUNT(*) FROM loads p JOIN loads c
                 ON c.card_id = p.card_id AND c.card_counter = p.card_counter
             WHERE p.status = 'pending' AND c.status = 'committed'",
        ),
        (
            "a load still pending at a state a stored purchase consumed",
            "SELECT COUNT(*) FROM loads p JOIN usage_records u
                 ON u.card_id = p.card_id AND u.card_counter = p.card_counter
             WHERE p.status = 'pending'",
        ),
        (
            "a remaining value that is not the newest committed update of its card",
            "WITH updates AS (
                 SELECT card_id, card_counter + 1 AS counter, balance_after_minor AS balance
                     FROM loads WHERE status = 'committed'
                 UNION ALL
                 SELECT card_id, card_counter + 1, balance_after_minor FROM usage_records),
             newest AS (SELECT card_id, MAX(counter) AS counter FROM updates GROUP BY card_id)
             SELECT COUNT(*) FROM newest n LEFT JOIN remaining_values r ON r.card_id = n.card_id
             WHERE r.card_id IS NULL OR r.card_counter != n.counter
                OR NOT EXISTS (SELECT 1 FROM updates u WHERE u.card_id = n.card_id
                                   AND u.counter = n.counter AND u.balance = r.balance_minor)",
        ),
        (
            "a remaining value with no committed update behind it",
            "SELECT COUNT(*) FROM remaining_values r WHERE NOT EXISTS (
                 SELECT 1 FROM loads l WHERE l.card_id = r.card_id AND l.status = 'committed')",
        ),
        ("an alert", "SELECT COUNT(*) FROM alerts"),
        ("a listed card", "SELECT COUNT(*) FROM list_entries"),
        (
            "a blocked card",
            "SELECT COUNT(*) FROM cards WHERE status = 'blocked'",
        ),
    ];
    for (what, sql) in checks {
        let count = db
            .query_one(&format!("SELECT CAST(({sql}) AS BIGINT)"), &[])
            .unwrap()
            .int(0)
            .unwrap();
        if count != 0 {
            violations.push(format!("{what} ({count})"));
        }
    }
    let mut center = Center::open(dir, Some(db), clock(today)).unwrap();
    let totals = center.reconciliation().unwrap();
    if totals.status() == ReconciliationStatus::Excess {
        violations.push(format!("value created: {totals:?}"));
    }
    violations
}

/// A device's link to a center whose database fails as armed. When the armed statement fails
/// (or the armed answer is lost), the request must fail; a crashed center is restarted from
/// its files; then the device either gets the error (and recovers as it would) or, with
/// `resend`, sends the same request again to the restarted center.
pub struct CrashLink<'a> {
    pub center: &'a mut Center,
    pub dir: &'a Path,
    pub today: Date,
    pub resend: bool,
    requests: u64,
    /// How many faults fired through this link.
    pub faults: u32,
}

impl<'a> CrashLink<'a> {
    pub fn new(center: &'a mut Center, dir: &'a Path, today: Date, resend: bool) -> Self {
        CrashLink {
            center,
            dir,
            today,
            resend,
            requests: 0,
            faults: 0,
        }
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn call<T: core::fmt::Debug>(
        &mut self,
        request: impl Fn(&mut Center) -> Result<T, CenterError>,
    ) -> Result<T, CenterError> {
        self.requests += 1;
        let answer = request(self.center);
        let armed = ARMED.get();
        let failed = FIRED.replace(false);
        let lost = armed == Some(Fault::LostAnswer(self.requests));
        if !failed && !lost {
            return answer;
        }
        self.faults += 1;
        let answer = if failed {
            // A statement the center could not run must fail the request, as a storage
            // failure: an answer given anyway, or another error, was decided on records the
            // center could not read or write.
            assert!(
                matches!(answer, Err(CenterError::Storage(_))),
                "{armed:?}: a statement failed, yet the request was answered {answer:?}"
            );
            answer
        } else {
            Err(CenterError::Unreachable(
                "the center's answer was lost".into(),
            ))
        };
        if !matches!(armed, Some(Fault::Transient(_))) {
            restart(self.center, self.dir, self.today);
        }
        if self.resend {
            return request(self.center);
        }
        answer
    }
}

impl CenterLink for CrashLink<'_> {
    fn assign_card_id(
        &mut self,
        request: &CardIdRequest,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        self.call(|center| center.assign_card_id(request, card_challenge))
    }

    fn resume_card_id(
        &mut self,
        request: &CardIdRequest,
        card_id: &CardId,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        self.call(|center| center.resume_card_id(request, card_id, card_challenge))
    }

    fn certify_card(
        &mut self,
        request: &CardCertificationRequest,
    ) -> Result<CardPersonalization, CenterError> {
        self.call(|center| center.certify_card(request))
    }

    fn authorize_load(&mut self, request: &LoadRequest) -> Result<LoadApproval, CenterError> {
        self.call(|center| center.authorize_load(request))
    }

    fn settlement_challenge(
        &mut self,
        request: &SettlementChallengeRequest,
    ) -> Result<Challenge, CenterError> {
        self.call(|center| center.settlement_challenge(request))
    }

    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<LoadOutcome, CenterError> {
        self.call(|center| center.settle_load(settlement))
    }
}

impl TerminalLink for CrashLink<'_> {
    fn upload_usage(&mut self, upload: &UsageUpload) -> Result<UploadReceipt, CenterError> {
        self.call(|center| center.upload_usage(upload))
    }

    fn list_delta(&mut self, terminal_id: DeviceId, since: u64) -> Result<ListDelta, CenterError> {
        self.call(|center| center.list_delta(terminal_id, since))
    }

    fn report_stamp(
        &mut self,
        terminal_id: DeviceId,
        stamp: &valuecard_core::messages::purse::TerminalStamp,
    ) -> Result<u32, CenterError> {
        self.call(|center| center.report_stamp(terminal_id, stamp))
    }
}
