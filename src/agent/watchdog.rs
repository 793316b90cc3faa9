//! The failsafe watchdog: fires when nothing has been heard from the orchestrator for the
//! configured time while no function is running, so a worker whose orchestrator vanished
//! does not sit powered on forever. (A function overrunning its deadline is the dispatcher's
//! business: it reports the timeout, then the agent goes down the same failsafe path.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::log::log;

#[derive(Clone)]
pub struct Watchdog {
    inner: Arc<Inner>,
}

struct Inner {
    last_contact: Mutex<Instant>,
    busy: AtomicBool,
}

impl Default for Watchdog {
    fn default() -> Self {
        Self::new()
    }
}

impl Watchdog {
    pub fn new() -> Self {
        Watchdog {
            inner: Arc::new(Inner {
                last_contact: Mutex::new(Instant::now()),
                busy: AtomicBool::new(false),
            }),
        }
    }

    /// A frame arrived from the orchestrator.
    pub fn contact(&self) {
        *self.lock() = Instant::now();
    }

    /// A function is running (its own deadline guards it) or has stopped.
    pub fn set_busy(&self, busy: bool) {
        self.inner.busy.store(busy, Ordering::SeqCst);
        if !busy {
            // Time spent inside a function is not silence from the orchestrator.
            self.contact();
        }
    }

    /// Whether, at `now`, the orchestrator has been silent for longer than `timeout` while
    /// the agent was idle.
    pub fn expired(&self, now: Instant, timeout: Duration) -> bool {
        !self.inner.busy.load(Ordering::SeqCst)
            && now.saturating_duration_since(*self.lock()) > timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        // A poisoned lock only means another thread panicked mid-store of an Instant, which
        // leaves a valid value behind.
        self.inner
            .last_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Check once a second (or more often for short timeouts); call `on_fire` once when the
    /// watchdog expires.
    pub fn spawn(&self, timeout: Duration, on_fire: impl FnOnce(String) + Send + 'static) {
        let dog = self.clone();
        let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let spawned = thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                while !dog.expired(Instant::now(), timeout) {
                    thread::sleep(tick);
                }
                on_fire(format!(
                    "no word from the orchestrator for {} s",
                    timeout.as_secs_f64()
                ));
            });
        if let Err(e) = spawned {
            log!("cannot start the watchdog: {e}");
        }
    }
}
