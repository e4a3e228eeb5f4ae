//! The purse provider's report to the center over HTTPS: its transfer SAM, certified by the
//! center with role `ServiceTransfer`, signs each request, and a reporter thread sends the
//! moves not reported yet (`valuecard_migrate::provider::report`) every interval until it is
//! dropped. A move the center refuses stays unreported and is logged at each attempt.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use valuecard_center_http::{CenterPin, HttpCenterLink, RequestSigner};
use valuecard_core::cert::TrustAnchor;
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::{CenterError, UploadReceipt};
use valuecard_core::messages::services::PurseMove;
use valuecard_migrate::provider::report::{report_pending, PurseMoveSink, ReportSummary};
use valuecard_migrate::sam::ProviderSam;
use valuecard_settle_http::DatabasePool;

/// The transfer SAM's certified key signs the provider's requests to the center.
pub struct TransferSamSigner {
    sam: Arc<dyn ProviderSam>,
    anchor: TrustAnchor,
}

impl core::fmt::Debug for TransferSamSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TransferSamSigner")
            .field("device_id", &self.sam.certificate().subject())
            .finish_non_exhaustive()
    }
}

impl TransferSamSigner {
    pub fn new(sam: Arc<dyn ProviderSam>, anchor: TrustAnchor) -> Self {
        TransferSamSigner { sam, anchor }
    }
}

impl RequestSigner for TransferSamSigner {
    fn device_id(&self) -> DeviceId {
        self.sam.certificate().subject()
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
        self.sam
            .sign_center_request(method, path, sequence, body)
            .map_err(|error| CenterError::Setup(format!("the transfer SAM cannot sign: {error}")))
    }
}

/// The center's service as the destination of the purse's moves.
pub struct HttpCenterSink(pub HttpCenterLink);

impl core::fmt::Debug for HttpCenterSink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpCenterSink")
            .field("device_id", &self.0.device_id())
            .finish_non_exhaustive()
    }
}

impl PurseMoveSink for HttpCenterSink {
    fn report(&mut self, moves: &[PurseMove]) -> Result<UploadReceipt, CenterError> {
        self.0.report_purse_moves(moves)
    }
}

impl HttpCenterSink {
    /// A link to the center at `url` (certificate `pin`) signed by the transfer SAM.
    pub fn connect(
        url: &str,
        pin: &CenterPin,
        transfer: Arc<dyn ProviderSam>,
        anchor: TrustAnchor,
    ) -> Result<Self, CenterError> {
        Ok(HttpCenterSink(HttpCenterLink::with_signer(
            url,
            pin,
            Box::new(TransferSamSigner::new(transfer, anchor)),
        )?))
    }
}

/// One pass: every unreported move of the provider's database to `sink`.
pub fn report_once(
    pool: &DatabasePool,
    sink: &mut dyn PurseMoveSink,
) -> Result<ReportSummary, CenterError> {
    pool.run_blocking(|db| report_pending(db, sink))
        .map_err(|error| CenterError::Storage(error.to_string()))
}

/// Reports in the background every `interval` until dropped.
pub struct Reporter {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl core::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    pub fn spawn(
        pool: DatabasePool,
        mut sink: Box<dyn PurseMoveSink + Send>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("valuecard-provider-reporter".into())
            .spawn(move || loop {
                match report_once(&pool, sink.as_mut()) {
                    Ok(summary) if summary.reported > 0 => {
                        tracing::info!(reported = summary.reported, "purse moves reported")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "purse moves not reported yet"),
                }
                match stopped.recv_timeout(interval) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => break,
                }
            })?;
        Ok(Reporter {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
