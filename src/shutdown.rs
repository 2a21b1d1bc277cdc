//! Shutdown, handed to every task as a value (after mini-redis's `shutdown.rs`): a task selects
//! on [`Shutdown::recv`] beside its work and returns when it resolves.
//!
//! The hub has two: the server's (sockets close with 1012, streams and background tasks stop)
//! and, later in a drain, the writers' (the history and presence writers flush what is queued
//! and stop). Each is one [`ShutdownTrigger`] and any number of [`Shutdown`] listeners.

use tokio::sync::watch;

/// Listens for one shutdown. Cheap to clone: one per task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Starts one shutdown; every [`Shutdown`] made from it is told.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    pub fn new() -> Self {
        Self {
            tx: watch::channel(false).0,
        }
    }

    /// A listener for this shutdown.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// Starts the shutdown (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// Resolves once the shutdown has begun, or when its trigger is gone (the server is going
    /// away either way). Cancel-safe: use it in `select!`.
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|started| *started).await;
    }

    /// True once the shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_is_told_and_a_late_one_too() {
        let trigger = ShutdownTrigger::new();
        let mut a = trigger.subscribe();
        let b = a.clone();
        assert!(!b.is_shutdown());
        trigger.trigger();
        a.recv().await;
        let mut late = trigger.subscribe();
        late.recv().await;
        assert!(b.is_shutdown());
        // A dropped trigger ends the wait too.
        let gone = ShutdownTrigger::new();
        let mut orphan = gone.subscribe();
        drop(gone);
        orphan.recv().await;
    }
}
