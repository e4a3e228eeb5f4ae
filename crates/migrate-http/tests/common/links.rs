//! Holder's devices that reach the move server in awkward ways: each call at another
//! instance, or the server stopped after every k-th call.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::{Cell, RefCell};

use valuecard_migrate::client::{Mode, MoveServerLink, SessionId};
use valuecard_migrate::server::{MoveError, Next, Started};
use valuecard_migrate_http::{HttpMoveServer, MoveSystem};

/// Sends each call to the next instance in turn.
pub struct Alternating {
    pub instances: Vec<HttpMoveServer>,
    /// Calls each instance answered (with anything but an unavailable server).
    pub answered: RefCell<Vec<usize>>,
    calls: Cell<usize>,
}

impl Alternating {
    pub fn new(instances: Vec<HttpMoveServer>) -> Self {
        Alternating {
            answered: RefCell::new(vec![0; instances.len()]),
            instances,
            calls: Cell::new(0),
        }
    }

    fn call<T>(
        &self,
        work: impl FnOnce(&HttpMoveServer) -> Result<T, MoveError>,
    ) -> Result<T, MoveError> {
        let call = self.calls.get();
        self.calls.set(call + 1);
        let index = call % self.instances.len();
        let result = work(&self.instances[index]);
        if !matches!(result, Err(MoveError::ServerUnavailable(_))) {
            self.answered.borrow_mut()[index] += 1;
        }
        result
    }
}

impl MoveServerLink for Alternating {
    fn start(&self, user_id: &str, password: &str, mode: Mode) -> Result<Started, MoveError> {
        self.call(|server| server.start(user_id, password, mode))
    }

    fn next(&self, session: &SessionId, response: &[u8]) -> Result<Next, MoveError> {
        self.call(|server| server.next(session, response))
    }
}

/// What happens to the move server after every k-th call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    /// Stopped and started again before the next call: the session goes on.
    Restart,
    /// Stopped only: the next call finds no server; the test starts it again.
    Stop,
}

/// The move server stopped (and perhaps started again) after every `every`-th call.
pub struct Interrupting<'a> {
    pub system: &'a RefCell<MoveSystem>,
    pub client: HttpMoveServer,
    pub every: usize,
    pub after: AfterCall,
    pub calls: Cell<usize>,
    pub stops: Cell<usize>,
}

impl<'a> Interrupting<'a> {
    pub fn new(system: &'a RefCell<MoveSystem>, every: usize, after: AfterCall) -> Self {
        let client = system.borrow().client();
        Interrupting {
            system,
            client,
            every,
            after,
            calls: Cell::new(0),
            stops: Cell::new(0),
        }
    }

    fn call<T>(
        &self,
        work: impl FnOnce(&HttpMoveServer) -> Result<T, MoveError>,
    ) -> Result<T, MoveError> {
        let result = work(&self.client);
        let calls = self.calls.get() + 1;
        self.calls.set(calls);
        if calls.is_multiple_of(self.every) {
            let mut system = self.system.borrow_mut();
            system.stop_server().unwrap();
            self.stops.set(self.stops.get() + 1);
            if self.after == AfterCall::Restart {
                system.start_server().unwrap();
            }
        }
        result
    }
}

impl MoveServerLink for Interrupting<'_> {
    fn start(&self, user_id: &str, password: &str, mode: Mode) -> Result<Started, MoveError> {
        self.call(|server| server.start(user_id, password, mode))
    }

    fn next(&self, session: &SessionId, response: &[u8]) -> Result<Next, MoveError> {
        self.call(|server| server.next(session, response))
    }
}
