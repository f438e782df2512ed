//! `/healthz`: the daemon's overall state (ready, degraded or failing) with the reasons,
//! and the models and execution providers in use; `/readyz` ([`Health::readiness`]):
//! whether the daemon takes work now. (`/livez` needs no state: the process answers.)
//!
//! Problems are keyed (`"models"`, `"on_publish"`, ...) so that the component that
//! raised one clears it when it recovers. Failing outranks degraded.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// The overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working normally.
    Ready,
    /// Working, with a problem an operator should look at (a refused model, a failing
    /// `on_publish`, inotify down).
    Degraded,
    /// Not processing (no models, ledger or worker).
    Failing,
}

/// One model in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInUse {
    /// `classifier`, `superres_2x` or `superres_6x`.
    pub role: String,
    /// `name@version`.
    pub model: String,
    /// The execution provider.
    pub provider: String,
    /// The sha256 of the version's `model.onnx`.
    pub sha256: String,
    /// The precision of the graph its sessions run (`[runtime] precision`).
    pub precision: String,
}

/// The `/healthz` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The overall state.
    pub status: Status,
    /// Why it is not `ready`.
    pub reasons: Vec<String>,
    /// The models in use.
    pub models: Vec<ModelInUse>,
    /// Granules in flight.
    pub in_flight: usize,
    /// Whether a shutdown is draining work.
    pub draining: bool,
}

#[derive(Debug, Default)]
struct Inner {
    problems: BTreeMap<&'static str, (Status, String)>,
    models: Vec<ModelInUse>,
    in_flight: usize,
    draining: bool,
}

/// Shared health state; see the module docs.
#[derive(Debug, Default)]
pub struct Health {
    inner: Mutex<Inner>,
}

impl Health {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Raises (or replaces) the problem `key`.
    pub fn raise(&self, key: &'static str, status: Status, reason: impl Into<String>) {
        let reason = reason.into();
        self.with(|i| i.problems.insert(key, (status, reason)));
    }

    /// Clears the problem `key`.
    pub fn clear(&self, key: &'static str) {
        self.with(|i| i.problems.remove(key));
    }

    /// Records the models in use.
    pub fn set_models(&self, models: Vec<ModelInUse>) {
        self.with(|i| i.models = models);
    }

    /// The models in use.
    pub fn models(&self) -> Vec<ModelInUse> {
        self.with(|i| i.models.clone())
    }

    /// Records the number of granules in flight.
    pub fn set_in_flight(&self, n: usize) {
        self.with(|i| i.in_flight = n);
    }

    /// Marks the start of a shutdown.
    pub fn set_draining(&self) {
        self.with(|i| i.draining = true);
    }

    /// Whether the daemon should be sent work: models loaded, not failing, not
    /// draining; with the reasons when not.
    pub fn readiness(&self) -> (bool, Vec<String>) {
        let r = self.report();
        let mut why = Vec::new();
        if r.models.is_empty() {
            why.push("no models loaded".to_string());
        }
        if r.status == Status::Failing {
            why.extend(r.reasons.iter().cloned());
        }
        if r.draining {
            why.push("shutting down".to_string());
        }
        (why.is_empty(), why)
    }

    /// The current document.
    pub fn report(&self) -> Report {
        self.with(|i| Report {
            status: i
                .problems
                .values()
                .map(|(s, _)| *s)
                .max()
                .unwrap_or(Status::Ready),
            reasons: i
                .problems
                .iter()
                .map(|(k, (_, r))| format!("{k}: {r}"))
                .collect(),
            models: i.models.clone(),
            in_flight: i.in_flight,
            draining: i.draining,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_problem_wins_and_clears() {
        let h = Health::default();
        assert_eq!(h.report().status, Status::Ready);
        h.raise("models", Status::Degraded, "tiny@2 refused");
        h.raise("worker", Status::Failing, "gone");
        let r = h.report();
        assert_eq!(r.status, Status::Failing);
        assert_eq!(r.reasons.len(), 2);
        h.clear("worker");
        assert_eq!(h.report().status, Status::Degraded);
        let json = serde_json::to_value(h.report()).unwrap();
        assert_eq!(json["status"], "degraded");
    }

    #[test]
    fn ready_needs_models_no_failure_and_no_drain() {
        let h = Health::default();
        assert!(!h.readiness().0, "no models yet");
        h.set_models(vec![ModelInUse {
            role: "classifier".into(),
            model: "m@1".into(),
            provider: "cpu".into(),
            sha256: "x".into(),
            precision: "float32".into(),
        }]);
        assert_eq!(h.readiness(), (true, vec![]));
        h.raise("on_publish", Status::Degraded, "failing hook");
        assert!(h.readiness().0, "degraded still takes work");
        h.raise("worker", Status::Failing, "gone");
        assert_eq!(
            h.readiness(),
            (
                false,
                vec!["on_publish: failing hook".into(), "worker: gone".into()]
            )
        );
        h.clear("worker");
        h.set_draining();
        assert_eq!(h.readiness(), (false, vec!["shutting down".into()]));
    }
}
