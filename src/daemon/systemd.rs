//! systemd integration (`Type=notify`): READY=1 once models are loaded and the endpoint
//! is bound, STATUS= lines, WATCHDOG=1, EXTEND_TIMEOUT_USEC while loading models.
//!
//! The watchdog proves that the service *progresses*, not only that one thread lives
//! (an F´-style health ping): the inference worker reports its heartbeat with
//! [`watchdog`] (idle wake-ups and per-batch progress), and only the dispatcher loop
//! sends `WATCHDOG=1`, from [`service_ping`], and only while the worker's last
//! heartbeat is recent. A wedged dispatcher (no pings) or a wedged worker (stale
//! heartbeat) each lets the watchdog fire. Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), and
//! a failed notification is logged, never fatal: the service must not die because the
//! notify socket hiccupped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Milliseconds since [`epoch`] of the worker's last heartbeat (0: none yet).
static WORKER_BEAT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A human-readable status line (`systemctl status`).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The service is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// The service is reloading its configuration.
pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// The worker's heartbeat (see the module docs); the ping itself is sent by
/// [`service_ping`].
pub fn watchdog() {
    WORKER_BEAT.store(now_ms(), Ordering::Relaxed);
}

/// Whether a heartbeat at `beat_ms` is recent at `now_ms` for a ping period `period`:
/// within two periods (the worker beats every period while idle).
pub fn beat_is_recent(beat_ms: u64, now_ms: u64, period: Duration) -> bool {
    now_ms.saturating_sub(beat_ms) <= 2 * period.as_millis() as u64
}

/// From the dispatcher loop: sends `WATCHDOG=1` when the worker's heartbeat is recent.
/// The first call counts as a heartbeat (the worker has just started).
pub fn service_ping() {
    let Some(period) = watchdog_period() else {
        return;
    };
    let now = now_ms();
    let beat = match WORKER_BEAT.load(Ordering::Relaxed) {
        0 => {
            WORKER_BEAT.store(now, Ordering::Relaxed);
            now
        }
        b => b,
    };
    if beat_is_recent(beat, now, period) {
        send(&[NotifyState::Watchdog]);
    } else {
        tracing::warn!(
            silent_s = (now - beat) / 1000,
            "the inference worker has shown no progress; withholding the watchdog ping"
        );
    }
}

/// Asks systemd for `by` more before its start (or stop) timeout fires.
pub fn extend_timeout(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// How often to ping the watchdog: half its period, or `None` when it is off.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_worker_heartbeat_withholds_the_ping() {
        let p = Duration::from_secs(10);
        assert!(beat_is_recent(1_000, 15_000, p));
        assert!(beat_is_recent(1_000, 21_000, p));
        assert!(!beat_is_recent(1_000, 21_001, p));
    }
}
