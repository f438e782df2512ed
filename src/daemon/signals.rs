//! Unix signals as daemon events: SIGTERM or SIGINT asks for a graceful shutdown (a
//! second one exits at once, leaving claimed work to resume at the next start); SIGHUP
//! asks for a reload of configuration and models.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// A request carried by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop taking work, drain, exit.
    Shutdown,
    /// Reload configuration and models.
    Reload,
}

/// The exit status after a second termination signal (128 + SIGTERM).
pub const FORCED_EXIT: i32 = 143;

/// Installs the handlers and forwards requests into `tx`.
///
/// # Errors
/// The I/O error of installing a handler.
pub fn spawn(tx: mpsc::Sender<Request>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let mut terminating = false;
        loop {
            let req = tokio::select! {
                _ = term.recv() => Request::Shutdown,
                _ = int.recv() => Request::Shutdown,
                _ = hup.recv() => Request::Reload,
            };
            if req == Request::Shutdown {
                if terminating {
                    tracing::warn!("second termination signal: exiting now; claimed work resumes at the next start");
                    std::process::exit(FORCED_EXIT);
                }
                terminating = true;
            }
            if tx.send(req).await.is_err() {
                return;
            }
        }
    }))
}
