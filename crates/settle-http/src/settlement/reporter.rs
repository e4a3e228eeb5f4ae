//! The security server's report to the center: every completed update is put in the
//! `settle_center_outbox` in the transaction that completes it, and a reporter sends what is
//! unreported (on a wake-up after each completion, and every interval to retry), signing
//! its requests with the security server's certified key. The center stores each record
//! once, so a report sent again after a lost answer changes nothing; a record the center
//! refuses stays unreported and is logged at every attempt, for an operator to look at.

use std::sync::mpsc;
use std::time::Duration;

use valuecard_center::sql::Executor;
use valuecard_center_http::{HttpCenterLink, RequestSigner};
use valuecard_core::cert::TrustAnchor;
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, UploadReceipt};
use valuecard_core::messages::online::{OnlineItem, SettlementId};
use valuecard_core::messages::purse::UsageRecord;

use super::ServiceKeys;
use crate::db::{DatabasePool, PoolError};

/// The most records one report carries.
const REPORT_BATCH: usize = 256;

/// Where completed online records go: the center.
pub trait OnlineRecordSink: Send {
    fn report(&mut self, items: &[OnlineItem]) -> Result<UploadReceipt, CenterError>;
}

impl OnlineRecordSink for HttpCenterLink {
    fn report(&mut self, items: &[OnlineItem]) -> Result<UploadReceipt, CenterError> {
        self.report_online_records(items)
    }
}

/// The security server's certified key signs its requests to the center.
pub struct SecurityServerSigner {
    keys: ServiceKeys,
    anchor: TrustAnchor,
}

impl core::fmt::Debug for SecurityServerSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecurityServerSigner")
            .field("device_id", &self.keys.device_id())
            .finish_non_exhaustive()
    }
}

impl SecurityServerSigner {
    pub fn new(keys: ServiceKeys, anchor: TrustAnchor) -> Self {
        SecurityServerSigner { keys, anchor }
    }
}

impl RequestSigner for SecurityServerSigner {
    fn device_id(&self) -> DeviceId {
        self.keys.device_id()
    }

    fn center_key(&self) -> Result<PublicKey, CenterError> {
        Ok(self.anchor.public_key)
    }

    fn sign_request(
        &mut self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, CenterError> {
        self.keys
            .sign(&valuecard_sam::request_signing_input(
                method, path, sequence, body,
            ))
            .map_err(|error| CenterError::Setup(error.to_string()))
    }
}

/// What one pass of the reporter did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReportSummary {
    /// Records the center now holds (stored now or before).
    pub reported: usize,
    /// Records the center refused, with its reasons.
    pub refused: Vec<String>,
    /// Cards the center found spent twice.
    pub clones_detected: Vec<CardId>,
}

/// Sends every unreported record to `sink` and marks what the center holds.
pub fn report_pending(
    pool: &DatabasePool,
    sink: &mut dyn OnlineRecordSink,
    today: u32,
) -> Result<ReportSummary, PoolError> {
    let mut summary = ReportSummary::default();
    loop {
        let rows = pool.run_blocking(|db| {
            db.query(
                &format!(
                    "SELECT settlement_id, card_id, previous, record FROM settle_center_outbox
                     WHERE reported_on IS NULL ORDER BY settlement_id LIMIT {REPORT_BATCH}"
                ),
                &[],
            )
        })?;
        if rows.is_empty() {
            return Ok(summary);
        }
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let corrupt = |what: &str| CenterError::Storage(format!("outbox {what} corrupt"));
            let previous = row
                .optional_bytes(2)?
                .map(|bytes| UsageRecord::decode(&bytes).map_err(|_| corrupt("previous")))
                .transpose()?;
            items.push(OnlineItem {
                settlement_id: SettlementId::try_from(row.bytes(0)?.as_slice())
                    .map_err(|_| corrupt("settlement"))?,
                card_id: CardId(
                    <[u8; 8]>::try_from(row.bytes(1)?.as_slice()).map_err(|_| corrupt("card"))?,
                ),
                previous,
                record: UsageRecord::decode(&row.bytes(3)?).map_err(|_| corrupt("record"))?,
            });
        }
        let receipt = sink.report(&items)?;
        let refused: Vec<u32> = receipt
            .refused
            .iter()
            .map(|(sequence, _)| *sequence)
            .collect();
        for (sequence, reason) in &receipt.refused {
            tracing::error!(sequence, %reason, "the center refused an online record");
            summary.refused.push(reason.clone());
        }
        summary
            .clones_detected
            .extend(receipt.clones_detected.iter().copied());
        let held: Vec<&OnlineItem> = items
            .iter()
            .filter(|item| !refused.contains(&item.record.writer_sequence))
            .collect();
        pool.run_blocking(|db| {
            for item in &held {
                db.execute(
                    "UPDATE settle_center_outbox SET reported_on = $2 WHERE settlement_id = $1",
                    &[item.settlement_id[..].into(), today.into()],
                )?;
            }
            Ok(())
        })?;
        summary.reported += held.len();
        if held.is_empty() {
            // Only refusals are left: they wait for an operator, not for another pass now.
            return Ok(summary);
        }
    }
}

/// Wakes the reporter.
#[derive(Debug, Clone)]
pub struct ReporterHandle {
    wake: mpsc::Sender<()>,
}

impl ReporterHandle {
    pub fn wake(&self) {
        let _ = self.wake.send(());
    }
}

/// The reporter's thread; stops when dropped.
#[derive(Debug)]
pub struct Reporter {
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    wake: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting `pool`'s outbox to `sink`, after each wake-up and every `interval`.
    pub fn spawn(
        pool: DatabasePool,
        mut sink: Box<dyn OnlineRecordSink>,
        interval: Duration,
        clock: Box<dyn valuecard_core::time::Clock + Sync>,
    ) -> std::io::Result<(Reporter, ReporterHandle)> {
        let (wake, wakes) = mpsc::channel::<()>();
        let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("valuecard-settle-reporter".into())
            .spawn(move || loop {
                let woken = wakes.recv_timeout(interval);
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                match woken {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                // Several completions woke it: one pass serves them all.
                while wakes.try_recv().is_ok() {}
                if let Err(error) = report_pending(&pool, sink.as_mut(), clock.today().0) {
                    tracing::warn!(%error, "the online records could not be reported yet");
                }
            })?;
        Ok((
            Reporter {
                stopping,
                wake: wake.clone(),
                thread: Some(thread),
            },
            ReporterHandle { wake },
        ))
    }
}

impl Reporter {
    /// Stops the reporter (what is unreported stays in the outbox for the next start).
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.wake.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The center in the same process (the demo, `valuecard online try`), as the reporter's
/// sink: the same checks as over HTTP, without the network.
pub struct InProcessCenter<'a>(pub &'a mut valuecard_center::Center);

impl core::fmt::Debug for InProcessCenter<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("InProcessCenter")
    }
}

impl OnlineRecordSink for InProcessCenter<'_> {
    fn report(&mut self, items: &[OnlineItem]) -> Result<UploadReceipt, CenterError> {
        match items.first() {
            Some(first) => self.0.store_online_records(first.record.writer, items),
            None => Ok(UploadReceipt::default()),
        }
    }
}
