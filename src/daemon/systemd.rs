//! systemd integration (`Type=notify`): READY=1 once models are loaded and the endpoint
//! is bound, STATUS= lines, WATCHDOG=1 from the processing loop, EXTEND_TIMEOUT_USEC
//! while loading models. Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), and
//! a failed notification is logged, never fatal: the service must not die because the
//! notify socket hiccupped.

use std::time::Duration;

use sd_notify::NotifyState;

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

/// Proof of progress for `WatchdogSec`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
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
