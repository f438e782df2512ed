//! Multi-label scoring for the classifiers: micro/macro F1 at per-class thresholds,
//! micro/macro average precision, threshold tuning with shrinkage, cross-validated F1, and
//! the two classical baselines every classifier is compared with (the training-set prior,
//! logistic regression on each band's mean and standard deviation).
//!
//! Invariants:
//! - macro averages run over the classes present in the targets scored (BigEarthNet's
//!   convention; absent classes have no defined recall or AP);
//! - a tuned threshold is shrunk toward the single global threshold with a pseudo-count:
//!   `t_c = (n_c·t*_c + k·t_g) / (n_c + k)` for `n_c` positives of class `c`, so a class
//!   seen twice keeps most of the global value and 27 patches cannot pin 19 thresholds;
//! - F1 reported for a validation set is cross-validated over it (thresholds tuned on the
//!   other folds), so the number is not scored on the patches that chose the thresholds.

/// Classes.
pub const CLASSES: usize = 19;

/// The candidate thresholds searched (0.05 … 0.95).
fn grid() -> impl Iterator<Item = f32> {
    (2..=38).map(|i| i as f32 * 0.025)
}

/// Micro/macro F1 and micro/macro average precision.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClassifyScores {
    /// Micro F1.
    pub micro_f1: f64,
    /// Macro F1 over classes present in the targets.
    pub macro_f1: f64,
    /// Micro AP.
    pub micro_ap: f64,
    /// Macro AP over classes present in the targets.
    pub macro_ap: f64,
}

impl ClassifyScores {
    /// The scores as a TOML table (rounded to 3 decimals).
    pub fn to_table(&self) -> toml::Table {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        let mut t = toml::Table::new();
        t.insert("micro_f1".into(), r(self.micro_f1).into());
        t.insert("macro_f1".into(), r(self.macro_f1).into());
        t.insert("micro_ap".into(), r(self.micro_ap).into());
        t.insert("macro_ap".into(), r(self.macro_ap).into());
        t
    }
}

/// Average precision of one ranking (`None` without positives).
pub fn average_precision(mut pairs: Vec<(f32, bool)>) -> Option<f64> {
    let positives = pairs.iter().filter(|p| p.1).count();
    if positives == 0 {
        return None;
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut sum) = (0usize, 0f64);
    for (i, (_, pos)) in pairs.iter().enumerate() {
        if *pos {
            tp += 1;
            sum += tp as f64 / (i + 1) as f64;
        }
    }
    Some(sum / positives as f64)
}

/// Per-class true positives, false positives and false negatives.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    tp: [f64; CLASSES],
    fp: [f64; CLASSES],
    fnn: [f64; CLASSES],
}

impl Counts {
    fn add(&mut self, p: &[f32; CLASSES], t: &[f32; CLASSES], thr: &[f32]) {
        for c in 0..CLASSES {
            let pos = t[c] > 0.5;
            let pred = p[c] >= thr.get(c).copied().unwrap_or(0.5);
            match (pred, pos) {
                (true, true) => self.tp[c] += 1.0,
                (true, false) => self.fp[c] += 1.0,
                (false, true) => self.fnn[c] += 1.0,
                _ => {}
            }
        }
    }

    fn micro_macro(&self) -> (f64, f64) {
        let present: Vec<usize> = (0..CLASSES)
            .filter(|&c| self.tp[c] + self.fnn[c] > 0.0)
            .collect();
        let macro_f1 = present
            .iter()
            .map(|&c| f1(self.tp[c], self.fp[c], self.fnn[c]))
            .sum::<f64>()
            / present.len().max(1) as f64;
        (
            f1(
                self.tp.iter().sum(),
                self.fp.iter().sum(),
                self.fnn.iter().sum(),
            ),
            macro_f1,
        )
    }
}

fn f1(tp: f64, fp: f64, fnn: f64) -> f64 {
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fnn)
    }
}

fn aps(probs: &[[f32; CLASSES]], targets: &[[f32; CLASSES]]) -> (f64, f64) {
    let mut all = Vec::with_capacity(probs.len() * CLASSES);
    let mut per: Vec<Vec<(f32, bool)>> = vec![Vec::new(); CLASSES];
    for (p, t) in probs.iter().zip(targets) {
        for c in 0..CLASSES {
            all.push((p[c], t[c] > 0.5));
            per[c].push((p[c], t[c] > 0.5));
        }
    }
    let per: Vec<f64> = per.into_iter().filter_map(average_precision).collect();
    (
        average_precision(all).unwrap_or(0.0),
        per.iter().sum::<f64>() / per.len().max(1) as f64,
    )
}

/// Scores `probs` (`[n][19]`) against `targets` at per-class thresholds `thr`.
pub fn scores_at(
    probs: &[[f32; CLASSES]],
    targets: &[[f32; CLASSES]],
    thr: &[f32],
) -> ClassifyScores {
    let mut c = Counts::default();
    for (p, t) in probs.iter().zip(targets) {
        c.add(p, t, thr);
    }
    let (micro_f1, macro_f1) = c.micro_macro();
    let (micro_ap, macro_ap) = aps(probs, targets);
    ClassifyScores {
        micro_f1,
        macro_f1,
        micro_ap,
        macro_ap,
    }
}

/// Scores at the default threshold 0.5 for every class.
pub fn scores(probs: &[[f32; CLASSES]], targets: &[[f32; CLASSES]]) -> ClassifyScores {
    scores_at(probs, targets, &[0.5; CLASSES])
}

/// Per-class thresholds tuned on (`probs`, `targets`), shrunk toward the global threshold
/// with pseudo-count `shrink` (see the module docs). Empty input gives 0.5 everywhere.
pub fn tune_thresholds(
    probs: &[[f32; CLASSES]],
    targets: &[[f32; CLASSES]],
    shrink: f64,
) -> Vec<f32> {
    if probs.is_empty() {
        return vec![0.5; CLASSES];
    }
    // The global threshold: the best micro F1 with one value for every class (ties: the
    // value closest to 0.5).
    let best = |score: &dyn Fn(f32) -> f64| -> f32 {
        let mut top = (f64::MIN, 0.5f32);
        for t in grid() {
            let s = score(t);
            if s > top.0 + 1e-12
                || ((s - top.0).abs() <= 1e-12 && (t - 0.5).abs() < (top.1 - 0.5).abs())
            {
                top = (s, t);
            }
        }
        top.1
    };
    let global = best(&|t| scores_at_micro(probs, targets, t));
    (0..CLASSES)
        .map(|c| {
            let n = targets.iter().filter(|t| t[c] > 0.5).count() as f64;
            if n == 0.0 {
                return global;
            }
            let own = best(&|t| {
                let (mut tp, mut fp, mut fnn) = (0f64, 0f64, 0f64);
                for (p, y) in probs.iter().zip(targets) {
                    match (p[c] >= t, y[c] > 0.5) {
                        (true, true) => tp += 1.0,
                        (true, false) => fp += 1.0,
                        (false, true) => fnn += 1.0,
                        _ => {}
                    }
                }
                f1(tp, fp, fnn)
            });
            ((n * own as f64 + shrink.max(0.0) * global as f64) / (n + shrink.max(0.0))) as f32
        })
        .collect()
}

fn scores_at_micro(probs: &[[f32; CLASSES]], targets: &[[f32; CLASSES]], t: f32) -> f64 {
    let mut c = Counts::default();
    let thr = [t; CLASSES];
    for (p, y) in probs.iter().zip(targets) {
        c.add(p, y, &thr);
    }
    c.micro_macro().0
}

/// F1 with thresholds chosen by `folds`-fold cross-validation over the set (fold `i`
/// holds patches `j ≡ i mod folds`; its thresholds are tuned on the others, counts are
/// pooled), and AP over the whole set (threshold-free).
pub fn cross_validated(
    probs: &[[f32; CLASSES]],
    targets: &[[f32; CLASSES]],
    shrink: f64,
    folds: usize,
) -> ClassifyScores {
    let folds = folds.clamp(2, probs.len().max(2));
    let mut c = Counts::default();
    for f in 0..folds {
        let (mut tp, mut tt) = (Vec::new(), Vec::new());
        for (j, (p, t)) in probs.iter().zip(targets).enumerate() {
            if j % folds != f {
                tp.push(*p);
                tt.push(*t);
            }
        }
        let thr = tune_thresholds(&tp, &tt, shrink);
        for (j, (p, t)) in probs.iter().zip(targets).enumerate() {
            if j % folds == f {
                c.add(p, t, &thr);
            }
        }
    }
    let (micro_f1, macro_f1) = c.micro_macro();
    let (micro_ap, macro_ap) = aps(probs, targets);
    ClassifyScores {
        micro_f1,
        macro_f1,
        micro_ap,
        macro_ap,
    }
}

/// Each band's mean and standard deviation over the patch (`x` band-major, `bands`
/// planes of `side²` values): the features of the band-statistics baseline.
pub fn band_stats(x: &[f32], bands: usize) -> Vec<f32> {
    let n = x.len() / bands.max(1);
    let (mut means, mut stds) = (Vec::with_capacity(bands), Vec::with_capacity(bands));
    for b in 0..bands {
        let plane = &x[b * n..(b + 1) * n];
        let m = plane.iter().map(|v| *v as f64).sum::<f64>() / n.max(1) as f64;
        let v = plane.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>() / n.max(1) as f64;
        means.push(m as f32);
        stds.push(v.sqrt() as f32);
    }
    means.extend(stds);
    means
}

/// Logistic regression, one independent model per class, on standardised features:
/// minimises the mean log-loss plus `l2/2·‖w‖²/n` (scikit-learn's `C = 1/l2`) by full-batch
/// gradient descent. Returns a predictor.
pub fn fit_logistic(
    features: &[Vec<f32>],
    targets: &[[f32; CLASSES]],
    l2: f64,
    iterations: usize,
) -> impl Fn(&[f32]) -> [f32; CLASSES] {
    let n = features.len().max(1);
    let d = features.first().map_or(0, Vec::len);
    let mut mu = vec![0f64; d];
    let mut sd = vec![0f64; d];
    for f in features {
        for (j, v) in f.iter().enumerate() {
            mu[j] += *v as f64 / n as f64;
        }
    }
    for f in features {
        for (j, v) in f.iter().enumerate() {
            sd[j] += (*v as f64 - mu[j]).powi(2) / n as f64;
        }
    }
    for s in &mut sd {
        *s = s.sqrt().max(1e-6);
    }
    let z: Vec<Vec<f64>> = features
        .iter()
        .map(|f| {
            f.iter()
                .enumerate()
                .map(|(j, v)| (*v as f64 - mu[j]) / sd[j])
                .collect()
        })
        .collect();
    let mut w = vec![vec![0f64; d + 1]; CLASSES];
    let lr = 0.5;
    for (c, wc) in w.iter_mut().enumerate() {
        for _ in 0..iterations {
            let mut g = vec![0f64; d + 1];
            for (zi, t) in z.iter().zip(targets) {
                let s = wc[d] + zi.iter().zip(wc.iter()).map(|(a, b)| a * b).sum::<f64>();
                let p = 1.0 / (1.0 + (-s).exp());
                let e = p - t[c] as f64;
                for j in 0..d {
                    g[j] += e * zi[j] / n as f64;
                }
                g[d] += e / n as f64;
            }
            for j in 0..d {
                g[j] += l2 * wc[j] / n as f64;
            }
            for j in 0..=d {
                wc[j] -= lr * g[j];
            }
        }
    }
    move |f: &[f32]| {
        let mut out = [0f32; CLASSES];
        for (c, wc) in w.iter().enumerate() {
            let s = wc[d]
                + f.iter()
                    .enumerate()
                    .map(|(j, v)| (*v as f64 - mu[j]) / sd[j] * wc[j])
                    .sum::<f64>();
            out[c] = (1.0 / (1.0 + (-s).exp())) as f32;
        }
        out
    }
}

/// The training-set prior: every patch gets each class's training frequency.
pub fn prior(targets: &[[f32; CLASSES]]) -> [f32; CLASSES] {
    let mut p = [0f32; CLASSES];
    for t in targets {
        for c in 0..CLASSES {
            p[c] += t[c] / targets.len().max(1) as f32;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_scores_are_one() {
        let mut t = [[0f32; CLASSES]; 3];
        t[0][1] = 1.0;
        t[1][2] = 1.0;
        t[2][1] = 1.0;
        let s = scores(&t, &t);
        assert_eq!(
            (s.micro_f1, s.macro_f1, s.micro_ap, s.macro_ap),
            (1.0, 1.0, 1.0, 1.0)
        );
        let mut wrong = [[0f32; CLASSES]; 3];
        wrong[0][5] = 0.9;
        let s = scores(&wrong, &t);
        assert_eq!(s.micro_f1, 0.0);
        assert!(s.micro_ap < 0.5);
    }

    #[test]
    fn tuned_thresholds_separate_and_shrink() {
        // Class 0 is separable at 0.3; other classes are absent.
        let mut probs = Vec::new();
        let mut targets = Vec::new();
        for i in 0..20 {
            let mut p = [0.1f32; CLASSES];
            let mut t = [0f32; CLASSES];
            if i % 2 == 0 {
                p[0] = 0.35;
                t[0] = 1.0;
            } else {
                p[0] = 0.2;
            }
            probs.push(p);
            targets.push(t);
        }
        let thr = tune_thresholds(&probs, &targets, 0.0);
        assert!(thr[0] > 0.2 && thr[0] <= 0.35, "{thr:?}");
        assert_eq!(scores_at(&probs, &targets, &thr).micro_f1, 1.0);
        // A huge pseudo-count pulls class 0 to the global threshold.
        let shrunk = tune_thresholds(&probs, &targets, 1e9);
        assert!((shrunk[0] - shrunk[5]).abs() < 1e-3, "{shrunk:?}");
        let cv = cross_validated(&probs, &targets, 0.0, 3);
        assert_eq!(cv.micro_f1, 1.0);
    }

    #[test]
    fn logistic_fits_a_separable_feature() {
        let feats: Vec<Vec<f32>> = (0..40).map(|i| vec![i as f32, 1.0]).collect();
        let targets: Vec<[f32; CLASSES]> = (0..40)
            .map(|i| {
                let mut t = [0f32; CLASSES];
                t[3] = if i >= 20 { 1.0 } else { 0.0 };
                t
            })
            .collect();
        let f = fit_logistic(&feats, &targets, 1.0, 300);
        assert!(f(&[35.0, 1.0])[3] > 0.8);
        assert!(f(&[3.0, 1.0])[3] < 0.2);
        let p = prior(&targets);
        assert!((p[3] - 0.5).abs() < 1e-6);
        let s = band_stats(&[1.0, 3.0, 5.0, 5.0], 2);
        assert_eq!(s, vec![2.0, 5.0, 1.0, 0.0]);
    }
}
