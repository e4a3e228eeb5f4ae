//! The run's parallel phases: a fixed number of lanes (shards of the cards and terminals),
//! each on a thread of its own, at most `threads` of them computing at once, and the one
//! center taken by the lanes in a fixed turn.
//!
//! Determinism must not depend on the number of threads or on how the operating system
//! schedules them. Each lane works through its own cards with its own random stream, so
//! its work is fixed by the seed; what lanes share is the center, whose answers depend on
//! the order of requests (card IDs and load numbers are sequences, its randomness is one
//! stream). So the center serves the lanes round robin, one request per lane per round,
//! skipping lanes that have finished: the order of every request the center sees is fixed
//! by the lanes' own work, whatever the threads do. A lane waiting for its turn holds no
//! worker permit, so a few threads can run many lanes without a deadlock: the lane whose
//! turn it is either waits for it already or is computing its way there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use valuecard_center::Center;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{
    CardCertificationRequest, CardIdAssignment, CardIdRequest, CardPersonalization, CenterError,
    CenterLink, LoadApproval, LoadOutcome, LoadRequest, LoadSettlement, SettlementChallengeRequest,
};
use valuecard_core::messages::purse::Challenge;

use super::SimError;

/// How often the thread that started the lanes reports their progress while they run.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A lane that panicked fails the whole run at the join; what it left is not read
    // again.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At most this many lanes compute at once.
struct Permits {
    free: Mutex<usize>,
    returned: Condvar,
}

impl Permits {
    fn new(threads: usize) -> Self {
        Permits {
            free: Mutex::new(threads.max(1)),
            returned: Condvar::new(),
        }
    }

    fn acquire(&self) {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self
                .returned
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
    }

    fn release(&self) {
        *lock(&self.free) += 1;
        self.returned.notify_one();
    }
}

/// The center and whose turn it is.
struct TurnState<'c> {
    center: &'c mut Center,
    /// The lane whose request the center serves next; `None` once every lane finished.
    turn: Option<usize>,
    /// Lanes that may still send a request.
    active: Vec<bool>,
}

impl TurnState<'_> {
    fn pass_turn(&mut self, lane: usize) {
        self.turn = next_turn(&self.active, lane);
    }
}

/// The next active lane after `lane`, round robin (`lane` itself if it is the only one
/// left), or `None` when none is.
fn next_turn(active: &[bool], lane: usize) -> Option<usize> {
    let lanes = active.len();
    (1..=lanes)
        .map(|step| (lane + step) % lanes)
        .find(|&next| active[next])
}

/// The center, served to the lanes in turn.
struct Turns<'c> {
    state: Mutex<TurnState<'c>>,
    /// One per lane, so that passing the turn wakes only the lane that has it (millions
    /// of turns pass in a run).
    your_turn: Vec<Condvar>,
}

impl<'c> Turns<'c> {
    fn new(center: &'c mut Center, lanes: usize) -> Self {
        Turns {
            state: Mutex::new(TurnState {
                center,
                turn: (lanes > 0).then_some(0),
                active: vec![true; lanes],
            }),
            your_turn: (0..lanes).map(|_| Condvar::new()).collect(),
        }
    }

    /// Waits for `lane`'s turn, serves its request, and passes the turn on.
    fn serve<R>(&self, lane: usize, request: impl FnOnce(&mut Center) -> R) -> R {
        let mut state = lock(&self.state);
        while state.turn != Some(lane) {
            state = self.your_turn[lane]
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let answer = request(state.center);
        state.pass_turn(lane);
        let next = state.turn;
        drop(state);
        self.wake(next);
        answer
    }

    /// `lane` sends no more requests: the turn skips it from now on.
    fn finish(&self, lane: usize) {
        let mut state = lock(&self.state);
        state.active[lane] = false;
        if state.turn == Some(lane) {
            state.pass_turn(lane);
        }
        let next = state.turn;
        drop(state);
        self.wake(next);
    }

    fn wake(&self, lane: Option<usize>) {
        if let Some(condvar) = lane.and_then(|lane| self.your_turn.get(lane)) {
            condvar.notify_one();
        }
    }
}

/// One lane's way to the center: every request waits for the lane's turn. While a lane
/// computes it holds a worker permit; it gives the permit back while it waits.
pub(super) struct LaneCenter<'t, 'c> {
    turns: &'t Turns<'c>,
    permits: &'t Permits,
    lane: usize,
    holding_permit: bool,
}

impl<'t, 'c> LaneCenter<'t, 'c> {
    fn enter(turns: &'t Turns<'c>, permits: &'t Permits, lane: usize) -> Self {
        permits.acquire();
        LaneCenter {
            turns,
            permits,
            lane,
            holding_permit: true,
        }
    }

    /// Runs `request` on the center in this lane's turn.
    pub(super) fn in_turn<R>(&mut self, request: impl FnOnce(&mut Center) -> R) -> R {
        self.permits.release();
        self.holding_permit = false;
        let answer = self.turns.serve(self.lane, request);
        self.permits.acquire();
        self.holding_permit = true;
        answer
    }
}

impl Drop for LaneCenter<'_, '_> {
    /// A lane that ends, by success, error or panic, leaves the rotation, so that the
    /// others never wait for it.
    fn drop(&mut self) {
        self.turns.finish(self.lane);
        if self.holding_permit {
            self.permits.release();
        }
    }
}

impl CenterLink for LaneCenter<'_, '_> {
    fn assign_card_id(
        &mut self,
        request: &CardIdRequest,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        self.in_turn(|center| center.assign_card_id(request, card_challenge))
    }

    fn resume_card_id(
        &mut self,
        request: &CardIdRequest,
        card_id: &CardId,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        self.in_turn(|center| center.resume_card_id(request, card_id, card_challenge))
    }

    fn certify_card(
        &mut self,
        request: &CardCertificationRequest,
    ) -> Result<CardPersonalization, CenterError> {
        self.in_turn(|center| center.certify_card(request))
    }

    fn authorize_load(&mut self, request: &LoadRequest) -> Result<LoadApproval, CenterError> {
        self.in_turn(|center| center.authorize_load(request))
    }

    fn settlement_challenge(
        &mut self,
        request: &SettlementChallengeRequest,
    ) -> Result<Challenge, CenterError> {
        self.in_turn(|center| center.settlement_challenge(request))
    }

    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<LoadOutcome, CenterError> {
        self.in_turn(|center| center.settle_load(settlement))
    }
}

/// Runs `work` once per lane state in `lanes`, each on a thread of its own with at most
/// `threads` computing at once, the center taken in turns. Reports `done` through
/// `progress` while they run. Returns the lanes' results in lane order, or the error of
/// the lane that failed first.
pub(super) fn run_lanes<L, T, W>(
    center: &mut Center,
    threads: usize,
    lanes: Vec<L>,
    done: &AtomicU64,
    progress: &mut dyn FnMut(u64),
    work: W,
) -> Result<Vec<T>, SimError>
where
    L: Send,
    T: Send,
    W: Fn(L, &mut LaneCenter<'_, '_>) -> Result<T, SimError> + Sync,
{
    let turns = Turns::new(center, lanes.len());
    let permits = Permits::new(threads);
    let (finished_tx, finished) = std::sync::mpsc::channel::<()>();
    let failures = AtomicU64::new(0);
    let failures = &failures;
    let work = &work;
    let (turns, permits) = (&turns, &permits);
    std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .into_iter()
            .enumerate()
            .map(|(lane, state)| {
                let finished = finished_tx.clone();
                scope.spawn(move || {
                    let result = {
                        let mut center = LaneCenter::enter(turns, permits, lane);
                        work(state, &mut center)
                    };
                    let _ = finished.send(());
                    // The order of failures: the first one is the cause (a full disk, say),
                    // later ones in other lanes may only be its consequences.
                    result.map_err(|error| (failures.fetch_add(1, Ordering::SeqCst), error))
                })
            })
            .collect();
        drop(finished_tx);
        let mut running = handles.len();
        while running > 0 {
            match finished.recv_timeout(PROGRESS_INTERVAL) {
                Ok(()) => running -= 1,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // Every lane is gone (a panic skips its message): the joins tell.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            progress(done.load(Ordering::Relaxed));
        }
        let mut results = Vec::with_capacity(handles.len());
        let mut first_failure: Option<(u64, SimError)> = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(result)) => results.push(result),
                Ok(Err((order, error))) => {
                    if first_failure
                        .as_ref()
                        .is_none_or(|(first, _)| order < *first)
                    {
                        first_failure = Some((order, error));
                    }
                }
                Err(_) => return Err(SimError::Setup("a simulation thread panicked".into())),
            }
        }
        match first_failure {
            Some((_, error)) => Err(error),
            None => Ok(results),
        }
    })
}

/// `total` split into `parts` contiguous ranges, the larger ones first: part `k` starts
/// at `total * k / parts`.
pub(super) fn split(total: usize, parts: u32) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1) as usize;
    (0..parts)
        .map(|k| total * k / parts..total * (k + 1) / parts)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_the_total_in_order_without_overlap() {
        let ranges = split(10, 4);
        assert_eq!(ranges, [0..2, 2..5, 5..7, 7..10]);
        assert_eq!(split(3, 1), vec![std::ops::Range { start: 0, end: 3 }]);
        assert_eq!(split(0, 2), [0..0, 0..0]);
    }

    #[test]
    fn the_turn_goes_round_skipping_finished_lanes_and_ends_with_the_last() {
        let mut active = vec![true, false, true];
        assert_eq!(next_turn(&active, 0), Some(2));
        assert_eq!(next_turn(&active, 2), Some(0));
        active[0] = false;
        assert_eq!(next_turn(&active, 0), Some(2));
        assert_eq!(next_turn(&active, 2), Some(2));
        active[2] = false;
        assert_eq!(next_turn(&active, 2), None);
    }
}
