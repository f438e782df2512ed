//! Crash consistency (issue 12): granules (GeoTIFF folders, and with the shared data a
//! SAFE directory and a SAFE zip) are delivered to `s2edge serve`, which is SIGKILLed at
//! random moments and restarted, at least 20 times (`S2EDGE_CRASH_KILLS` for a longer
//! run; `S2EDGE_CRASH_SEED` to replay one). At the end every granule is `done` exactly
//! once or quarantined with a reason, no product is partial, no temporary file is left
//! anywhere, and the ledger agrees with the disk.

/// A granule delivery still to make: writes it under the ingest dir, returns its id.
type Delivery = Box<dyn FnOnce(&Path) -> String>;

use std::path::Path;
use std::time::{Duration, Instant};

use s2edge::daemon::ledger::GranuleState;

use crate::daemon::{deliver, fixtures_models, runtime_available, Daemon};
use crate::{safe_fixture, util};

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Names of leftovers that only an interrupted operation writes.
fn is_temp(name: &str) -> bool {
    name.contains(".tmp")
        || name.contains(".s2edge-move-")
        || name.ends_with(".part")
        || name.ends_with("-old")
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

#[test]
fn random_sigkills_leave_every_granule_done_once_or_quarantined() {
    let test = "random_sigkills_leave_every_granule_done_once_or_quarantined";
    if !runtime_available(test) {
        return;
    }
    let kills = env_u64("S2EDGE_CRASH_KILLS", 20);
    let seed = env_u64(
        "S2EDGE_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("{test}: {kills} kills, S2EDGE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");

    // The granules, delivered in waves between the kills.
    let mut pending: Vec<Delivery> = Vec::new();
    let folders = env_u64("S2EDGE_CRASH_GRANULES", 6);
    for i in 0..folders {
        pending.push(Box::new(move |ingest: &Path| {
            let id = format!("S2B_KILL_{i}");
            deliver(ingest, &id);
            id
        }));
    }
    let fx = safe_fixture::build_l1c(test);
    if let Some(fx) = &fx {
        let safe = fx.safe.clone();
        pending.push(Box::new(move |ingest: &Path| {
            let name = safe.file_name().unwrap().to_string_lossy().into_owned();
            let tmp = ingest.join(".safe.part");
            copy_tree(&safe, &tmp);
            std::fs::rename(&tmp, ingest.join(&name)).unwrap();
            std::fs::write(ingest.join(format!("{name}.ready")), b"").unwrap();
            name.trim_end_matches(".SAFE").to_string()
        }));
        let safe = fx.safe.clone();
        let src = tmp.path().join("zipsrc");
        pending.push(Box::new(move |ingest: &Path| {
            let id = format!(
                "{}_Z",
                safe.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches(".SAFE")
            );
            let dir = src.join(format!("{id}.SAFE"));
            copy_tree(&safe, &dir);
            let tmp = ingest.join(".zip.part");
            safe_fixture::zip_safe(&dir, &tmp);
            let name = format!("{id}.SAFE.zip");
            std::fs::rename(&tmp, ingest.join(&name)).unwrap();
            std::fs::write(ingest.join(format!("{name}.ready")), b"").unwrap();
            id
        }));
    }
    let mut ids = Vec::new();
    let t0 = Instant::now();
    for k in 0..kills {
        // Deliver a couple more, so that claims, too, are cut at random moments.
        for _ in 0..2 {
            if !pending.is_empty() {
                let i = rng.below(pending.len() as u64) as usize;
                ids.push((pending.swap_remove(i))(&ingest));
            }
        }
        d.start();
        // Half the kills come early (during start-up, claims and the first tiles),
        // half late enough for a granule, even a SAFE, to finish in between.
        let wait = if rng.below(2) == 0 {
            200 + rng.below(1500)
        } else {
            2000 + rng.below(6000)
        };
        std::thread::sleep(Duration::from_millis(wait));
        d.kill9();
        eprintln!("kill {}/{kills} after {wait} ms", k + 1);
    }
    for f in pending {
        ids.push(f(&ingest));
    }
    d.start();
    d.wait_for("every granule to end", Duration::from_secs(600), |d| {
        ids.iter().all(|id| {
            matches!(
                d.state(id),
                Some(GranuleState::Done) | Some(GranuleState::Quarantined)
            )
        })
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(60)), Some(0));
    let took = t0.elapsed();

    // Every granule exactly once or quarantined with a reason.
    let ledger = d.ledger();
    let (mut done, mut quarantined) = (0, 0);
    for id in &ids {
        let row = ledger.get(id).unwrap().unwrap();
        assert_eq!(row.deliveries, 1, "{id}: claimed more than once");
        match row.state {
            GranuleState::Done => {
                done += 1;
                let product = row.product.clone().unwrap();
                assert_eq!(product, d.out(id));
                for f in [
                    "item.json",
                    "labels.geojson",
                    "superres.tif",
                    "classification.tif",
                    "quicklook.png",
                ] {
                    assert!(product.join(f).is_file(), "{id}: partial product, no {f}");
                }
                let item: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(product.join("item.json")).unwrap(),
                )
                .unwrap_or_else(|e| panic!("{id}: item.json: {e}"));
                assert_eq!(item["id"], id.as_str());
            }
            GranuleState::Quarantined => {
                quarantined += 1;
                let reason = std::fs::read_to_string(
                    tmp.path().join("quarantine").join(id).join("reason.txt"),
                )
                .unwrap_or_else(|_| panic!("{id}: quarantined without reason.txt"));
                assert!(reason.contains("error: "), "{reason}");
                eprintln!("{id} quarantined: {}", row.last_error.unwrap_or_default());
            }
            s => panic!("{id}: {s}"),
        }
    }
    // The ledger agrees with the disk.
    assert!(ledger.unfinished().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("work")).unwrap().count(),
        0
    );
    for e in std::fs::read_dir(tmp.path().join("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name == "models" {
            // the MLM Items of the models the daemon loaded (not a product)
            continue;
        }
        let row = ledger.get(&name).unwrap();
        assert!(
            row.is_some_and(|r| r.state == GranuleState::Done),
            "out/{name} has no done row"
        );
    }
    for e in std::fs::read_dir(tmp.path().join("quarantine"))
        .into_iter()
        .flatten()
    {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            ledger
                .get(&name)
                .unwrap()
                .is_some_and(|r| r.state == GranuleState::Quarantined),
            "quarantine/{name} has no quarantined row"
        );
    }
    // No temporary file anywhere.
    let mut all = Vec::new();
    for dir in ["ingest", "work", "out", "quarantine", "archive"] {
        walk(&tmp.path().join(dir), &mut all);
    }
    let temps: Vec<_> = all
        .iter()
        .filter(|p| is_temp(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    let crashes: u32 = ids
        .iter()
        .map(|id| ledger.get(id).unwrap().unwrap().crashes)
        .sum();
    eprintln!(
        "crash consistency: {kills} SIGKILLs, {} granules ({done} done, {quarantined} quarantined), \
         {crashes} attempts cut by a kill, {:.0} s",
        ids.len(),
        took.as_secs_f64()
    );
    assert!(done >= 1);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (s, t) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&s, &t);
        } else {
            std::fs::copy(&s, &t).unwrap();
        }
    }
}
