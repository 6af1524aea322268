//! One operator's measurements and the figures derived from them: pure functions, so that
//! the arithmetic is tested without a cluster (the rendering is in `render`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::requests::{ByKind, mutating, total};

/// What one operator did, as measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// First create to the last consumable Secret seen by the bench's watch.
    pub converge_s: f64,
    /// How long the bench's N creates took.
    pub created_in_s: f64,
    /// Restart: process start to its probe answering 200 (tokenwarden: `/readyz`, caches
    /// synced; ESO, which serves no health probe as run here: `/metrics`, the process up).
    pub restart_up_s: f64,
    /// Restart: process start to every object reconciled once by the new process.
    pub restart_ready_s: f64,
    /// First rotate annotation to the last Secret seen with a new value.
    pub rotation_s: f64,
    pub rss_peak_mib: f64,
    pub rss_steady_mib: f64,
    /// phase -> the operator's requests by kind (the bench's own subtracted).
    pub requests: BTreeMap<String, ByKind>,
    /// phase -> what was subtracted as the bench's own.
    pub subtracted: BTreeMap<String, ByKind>,
    /// phase -> the control plane's background (not counted for either operator).
    pub background: BTreeMap<String, ByKind>,
    /// phase -> process ("operator", "kube-apiserver", "etcd", ...) -> CPU seconds.
    pub cpu_s: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Side {
    fn phase(&self, phase: &str) -> ByKind {
        self.requests.get(phase).cloned().unwrap_or_default()
    }

    /// CPU seconds of `process` over every phase.
    pub fn cpu_total(&self, process: &str) -> f64 {
        self.cpu_s
            .values()
            .filter_map(|by_process| by_process.get(process))
            .sum()
    }
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: &'static str,
    pub label: &'static str,
    pub decimals: usize,
    pub tokenwarden: f64,
    pub eso: f64,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        ratio(self.tokenwarden, self.eso)
    }
}

/// `a / b`, or none when `b` is zero (no ratio to a peer that did nothing).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

/// The figures compared, in the order the table shows them.
pub fn rows(n: usize, tw: &Side, eso: &Side) -> Vec<Row> {
    let per = |count: u64| count as f64 / n.max(1) as f64;
    type Figure = fn(&Side, &dyn Fn(u64) -> f64) -> f64;
    let figures: [(&str, &str, usize, Figure); 17] = [
        ("converge_s", "converge (s)", 1, |s, _| s.converge_s),
        (
            "requests_per_object",
            "converge: requests / object",
            2,
            |s, per| per(total(&s.phase("converge"))),
        ),
        (
            "mutating_per_object",
            "converge: writes / object",
            2,
            |s, per| per(mutating(&s.phase("converge"))),
        ),
        ("idle_requests", "idle: requests", 0, |s, _| {
            total(&s.phase("idle")) as f64
        }),
        ("idle_writes", "idle: writes", 0, |s, _| {
            mutating(&s.phase("idle")) as f64
        }),
        ("rss_steady_mib", "RSS after idle (MiB)", 1, |s, _| {
            s.rss_steady_mib
        }),
        ("rss_peak_mib", "RSS peak (MiB)", 1, |s, _| s.rss_peak_mib),
        ("restart_up_s", "restart: probe 200 (s)", 2, |s, _| {
            s.restart_up_s
        }),
        (
            "restart_ready_s",
            "restart: all reconciled (s)",
            2,
            |s, _| s.restart_ready_s,
        ),
        ("restart_requests", "restart: requests", 0, |s, _| {
            total(&s.phase("restart")) as f64
        }),
        ("restart_writes", "restart: writes", 0, |s, _| {
            mutating(&s.phase("restart")) as f64
        }),
        ("rotation_s", "rotation (s)", 1, |s, _| s.rotation_s),
        (
            "rotation_requests_per_object",
            "rotation: requests / object",
            2,
            |s, per| per(total(&s.phase("rotation"))),
        ),
        (
            "rotation_writes_per_object",
            "rotation: writes / object",
            2,
            |s, per| per(mutating(&s.phase("rotation"))),
        ),
        ("operator_cpu_s", "operator CPU (s)", 1, |s, _| {
            s.cpu_total("operator")
        }),
        ("apiserver_cpu_s", "kube-apiserver CPU (s)", 1, |s, _| {
            s.cpu_total("kube-apiserver")
        }),
        ("etcd_cpu_s", "etcd CPU (s)", 1, |s, _| s.cpu_total("etcd")),
    ];
    figures
        .into_iter()
        .map(|(key, label, decimals, figure)| Row {
            key,
            label,
            decimals,
            tokenwarden: figure(tw, &per),
            eso: figure(eso, &per),
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn side(
        converge_s: f64,
        converge: &[(&str, u64)],
        idle: &[(&str, u64)],
        cpu: f64,
    ) -> Side {
        let kinds = |p: &[(&str, u64)]| p.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        Side {
            converge_s,
            rss_peak_mib: 20.0,
            requests: [
                ("converge".to_string(), kinds(converge)),
                ("idle".to_string(), kinds(idle)),
            ]
            .into(),
            cpu_s: [
                (
                    "converge".to_string(),
                    [("operator".to_string(), cpu)].into(),
                ),
                (
                    "idle".to_string(),
                    [("operator".to_string(), cpu / 2.0)].into(),
                ),
            ]
            .into(),
            ..Side::default()
        }
    }

    #[test]
    fn ratios_are_tokenwarden_over_eso_and_absent_against_zero() {
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(0.0, 2.0), Some(0.0));
    }

    #[test]
    fn figures_divide_by_n_split_writes_from_reads_and_sum_cpu_over_phases() {
        let tw = side(
            18.0,
            &[("POST secrets", 20), ("LIST secrets", 10)],
            &[],
            4.0,
        );
        let eso = side(
            15.0,
            &[
                ("POST secrets", 10),
                ("PUT externalsecrets/status", 10),
                ("GET secrets", 20),
            ],
            &[("PUT externalsecrets/status", 3)],
            2.0,
        );
        let rows = rows(10, &tw, &eso);
        let get = |key: &str| rows.iter().find(|r| r.key == key).unwrap().clone();
        assert_eq!(
            (
                get("requests_per_object").tokenwarden,
                get("requests_per_object").eso
            ),
            (3.0, 4.0)
        );
        assert_eq!(
            (
                get("mutating_per_object").tokenwarden,
                get("mutating_per_object").eso
            ),
            (2.0, 2.0)
        );
        assert_eq!(get("mutating_per_object").ratio(), Some(1.0));
        assert_eq!(
            (get("idle_writes").tokenwarden, get("idle_writes").eso),
            (0.0, 3.0)
        );
        assert_eq!(get("operator_cpu_s").tokenwarden, 6.0);
        assert_eq!(get("converge_s").ratio(), Some(1.2));
        assert_eq!(get("restart_writes").ratio(), None);
    }
}
