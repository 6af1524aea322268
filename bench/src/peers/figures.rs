//! One operator's measurements, the figures derived from them, and the side-by-side report:
//! pure functions, so that the arithmetic and the rendering are tested without a cluster.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::requests::{ByKind, mutating, total};

/// What one operator did, as measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// First create to the last consumable Secret seen by the bench's watch.
    pub converge_s: f64,
    /// How long the bench's N creates took.
    pub created_in_s: f64,
    /// Restart: process start to its probe answering.
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
        ("restart_up_s", "restart: up (s)", 2, |s, _| s.restart_up_s),
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

fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
}

/// The side-by-side table: figure | tokenwarden | ESO | tokenwarden/ESO.
pub fn table(rows: &[Row]) -> String {
    let header = ["figure", "tokenwarden", "ESO", "tokenwarden/ESO"];
    let mut lines: Vec<[String; 4]> = vec![header.map(String::from)];
    for row in rows {
        let d = row.decimals;
        lines.push([
            row.label.to_string(),
            format!("{:.d$}", row.tokenwarden),
            format!("{:.d$}", row.eso),
            fmt_ratio(row.ratio()),
        ]);
    }
    let width = |c: usize| lines.iter().map(|l| l[c].len()).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2), width(3)];
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        out.push_str(&format!(
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:>w3$} |\n",
            l[0],
            l[1],
            l[2],
            l[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        ));
        if i == 0 {
            let dashes = widths.map(|w| "-".repeat(w));
            out.push_str(&format!(
                "|-{}-|-{}:|-{}:|-{}:|\n",
                dashes[0], dashes[1], dashes[2], dashes[3]
            ));
        }
    }
    out
}

fn round3(x: f64) -> Value {
    json!((x * 1000.0).round() / 1000.0)
}

/// The one JSON line: n, each figure with both values and the ratio, the by-verb breakdowns.
pub fn report(n: usize, idle_s: u64, tw: &Side, eso: &Side) -> Value {
    let mut out = Map::new();
    out.insert("n".into(), json!(n));
    out.insert("idle_s".into(), json!(idle_s));
    for row in rows(n, tw, eso) {
        out.insert(
            row.key.into(),
            json!({
                "tokenwarden": round3(row.tokenwarden),
                "eso": round3(row.eso),
                "ratio": row.ratio().map(round3),
            }),
        );
    }
    out.insert(
        "requests_by_verb".into(),
        json!({ "tokenwarden": tw.requests, "eso": eso.requests }),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(converge_s: f64, converge: &[(&str, u64)], idle: &[(&str, u64)], cpu: f64) -> Side {
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

    #[test]
    fn the_table_has_one_aligned_line_per_figure_and_a_dash_for_no_ratio() {
        let tw = side(18.0, &[("POST secrets", 20)], &[], 4.0);
        let eso = side(15.0, &[("POST secrets", 40)], &[], 2.0);
        let rows = rows(10, &tw, &eso);
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), rows.len() + 2);
        assert!(lines[0].contains("tokenwarden/ESO"));
        assert!(
            lines.iter().all(|l| l.len() == lines[0].len()),
            "aligned:\n{table}"
        );
        let converge = lines.iter().find(|l| l.contains("converge (s)")).unwrap();
        assert!(
            converge.contains("18.0") && converge.contains("15.0") && converge.contains("1.20")
        );
        let writes = lines
            .iter()
            .find(|l| l.contains("converge: writes / object"))
            .unwrap();
        assert!(writes.contains("0.50"), "{writes}");
        let idle = lines.iter().find(|l| l.contains("idle: writes")).unwrap();
        assert!(
            idle.trim_end_matches('|').trim_end().ends_with('-'),
            "{idle}"
        );
    }

    #[test]
    fn the_json_line_has_both_values_the_ratio_and_the_breakdowns() {
        let tw = side(18.0, &[("POST secrets", 20)], &[], 4.0);
        let eso = side(15.0, &[("POST secrets", 40)], &[], 2.0);
        let r = report(10, 120, &tw, &eso);
        assert_eq!(r["n"], 10);
        assert_eq!(r["converge_s"]["tokenwarden"], 18.0);
        assert_eq!(r["converge_s"]["eso"], 15.0);
        assert_eq!(r["converge_s"]["ratio"], 1.2);
        assert_eq!(r["mutating_per_object"]["ratio"], 0.5);
        assert_eq!(r["idle_writes"]["ratio"], Value::Null);
        assert_eq!(r["requests_by_verb"]["eso"]["converge"]["POST secrets"], 40);
        assert!(!serde_json::to_string(&r).unwrap().contains('\n'));
    }
}
