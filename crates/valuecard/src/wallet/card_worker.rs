//! The card reader belongs to one thread: a PC/SC handle may not move between threads, and
//! one holder's card takes one command sequence at a time. Requests hand the thread a job
//! and wait for its answer.

use std::sync::mpsc;

use valuecard_reader::CardReader;

type Job = Box<dyn FnOnce(&mut dyn CardReader) + Send>;

/// Opens the reader on the worker's own thread.
pub type ReaderOpener = Box<dyn FnOnce() -> Result<Box<dyn CardReader>, String> + Send>;

/// The thread that owns the card reader.
#[derive(Debug, Clone)]
pub struct CardWorker {
    jobs: mpsc::Sender<Job>,
}

impl CardWorker {
    /// Starts the thread and opens the reader there; fails if the reader does not open.
    pub fn start(open: ReaderOpener) -> Result<Self, String> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, outcome) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("valuecard-wallet-card".into())
            .spawn(move || {
                let mut reader = match open() {
                    Ok(reader) => {
                        let _ = opened.send(Ok(()));
                        reader
                    }
                    Err(error) => {
                        let _ = opened.send(Err(error));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(reader.as_mut());
                }
            })
            .map_err(|error| error.to_string())?;
        outcome
            .recv()
            .map_err(|_| "the card thread ended".to_owned())??;
        Ok(CardWorker { jobs })
    }

    /// Runs `job` with the reader and gives its answer.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut dyn CardReader) -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |reader| {
            let _ = answer.send(job(reader));
        });
        self.jobs.send(job).ok()?;
        answered.await.ok()
    }
}
