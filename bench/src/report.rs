//! The figures: a readable table, and one JSON object with the headline keys.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::Config;
use crate::costs::{RequestCosts, TokenCost};

/// How bursty one storm was: its busiest second against the mean rate its period implies
/// (all rotations spread evenly over `every`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storm {
    pub rotations: usize,
    pub every_s: u64,
    pub peak_per_s: usize,
    pub mean_per_s: f64,
    pub peak_to_mean: f64,
    /// From the first rotation's second to the last's.
    pub spread_s: i64,
}

impl Storm {
    /// From the creation seconds (unix time) of the Secrets the rotations wrote.
    pub fn from_creations(seconds: impl IntoIterator<Item = i64>, every: Duration) -> Storm {
        let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
        for second in seconds {
            *per_second.entry(second).or_default() += 1;
        }
        let rotations: usize = per_second.values().sum();
        let every_s = every.as_secs().max(1);
        let mean_per_s = rotations as f64 / every_s as f64;
        let peak_per_s = per_second.values().copied().max().unwrap_or(0);
        let spread_s = match (per_second.keys().next(), per_second.keys().next_back()) {
            (Some(first), Some(last)) => last - first + 1,
            _ => 0,
        };
        Storm {
            rotations,
            every_s,
            peak_per_s,
            mean_per_s,
            peak_to_mean: if rotations == 0 {
                0.0
            } else {
                peak_per_s as f64 / mean_per_s
            },
            spread_s,
        }
    }
}

/// The issuer inventory at the reference platform: BENCH_N issuer tokens, two per workspace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub tokens: usize,
    pub workspaces: usize,
    /// The operator's `--inventory-interval` in this phase.
    pub interval_s: u64,
    /// The counting window: three intervals, once every token was Ready.
    pub window_s: u64,
    /// Listings (`GET /workspaces/{id}/tokens`) the platform served in the window.
    pub listings: usize,
    /// listings / (workspaces x 3): 1.0 is one listing per workspace per interval.
    pub per_workspace_per_interval: f64,
    /// WorkspaceTokens, Secrets and Events of the phase's namespace written in the window
    /// (nothing unmanaged, nothing to do: 0).
    pub writes: u64,
    /// From the first create to every issuer token Ready.
    pub converge_s: f64,
}

/// Every figure one run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub n: usize,
    /// Where the benchmark's WorkspaceTokens and their Secrets live.
    pub namespace: String,
    pub concurrency: u16,
    pub writes_needed: u64,
    pub write_ceiling_per_s: f64,
    pub created_in_s: f64,
    pub converge_s: f64,
    /// A logic-free client sending the operator's requests for BENCH_N new tokens: the time
    /// of each replay, before convergence and (up to 20k tokens) after the restart.
    pub replay_runs_s: Vec<f64>,
    pub converge_writes: u64,
    pub converge_events: u64,
    /// Every mutating request during convergence (the bench's creates included), by kind.
    pub converge_writes_by_kind: BTreeMap<String, u64>,
    /// Every read during convergence (the bench's watch included), by kind.
    pub converge_reads_by_kind: BTreeMap<String, u64>,
    /// Each request kind's rate, timed alone in this run.
    pub request_costs: RequestCosts,
    /// What convergence sent per token, in Secret-create units.
    pub api_cost: TokenCost,
    /// Unrelated 10 KiB Secrets in the cluster during the memory figures.
    pub unrelated_secrets: usize,
    /// CPU seconds per process during the ceiling and during convergence.
    pub ceiling_cpu_s: BTreeMap<String, f64>,
    pub converge_cpu_s: BTreeMap<String, f64>,
    /// The same during the replay before convergence: where the operator's time against its
    /// floor went (the operator's own CPU, or more of the API server's).
    pub replay_cpu_s: BTreeMap<String, f64>,
    /// From the restarted operator's start to its `/readyz` 200.
    pub restart_cpu_s: BTreeMap<String, f64>,
    pub idle_s: u64,
    pub steady_writes: u64,
    pub restart_writes: u64,
    pub restart_ready_s: f64,
    pub restart_resync_s: f64,
    /// A plain client's paged list of the operator's Secrets, after the restart.
    pub restart_list_floor_s: f64,
    pub rss_peak_mib: f64,
    pub rss_steady_mib: f64,
    /// Of `rss_steady_mib`, the pages mapped from files: mostly the binary's code.
    pub rss_steady_file_mib: f64,
    /// jemalloc's live bytes and resident pages at the same moment (`tokenwarden_heap_*`):
    /// what of the steady RSS the operator's structures hold, and what the allocator keeps.
    pub heap_allocated_mib: f64,
    pub heap_resident_mib: f64,
    /// `/metrics` at RSS steady, with a series set per token (drawn from the caches at each
    /// scrape): its size, the mean of 5 scrapes' time, the per-token series on it, and the
    /// RSS after those scrapes (what rendering them leaves resident).
    pub metrics_page_kib: f64,
    pub metrics_scrape_ms: f64,
    pub per_token_series: u64,
    pub rss_after_scrapes_mib: f64,
    /// None when skipped (BENCH_STORMS=0).
    pub storm_no_jitter: Option<Storm>,
    pub storm: Option<Storm>,
    pub inventory: Inventory,
}

/// The headline: exactly the keys the issue names, the last line of the output and
/// `target/bench/result.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub n: usize,
    pub write_ceiling_per_s: f64,
    pub converge_s: f64,
    /// Per token, so that 1k, 10k and 100k compare.
    pub converge_ms_per_token: f64,
    /// converge_s over the logic-free replay of the same requests: the operator's overhead.
    pub converge_vs_replay: f64,
    /// Secret-create units per new token, the user's create included.
    pub api_cost_per_token: f64,
    pub steady_writes: u64,
    pub restart_writes: u64,
    pub restart_ready_s: f64,
    pub rss_peak_mib: f64,
    pub rss_steady_mib: f64,
    /// null when the storms were skipped.
    pub storm_peak_to_mean: Option<f64>,
}

fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

impl Figures {
    pub fn new(cfg: &Config) -> Figures {
        Figures {
            n: cfg.n,
            concurrency: cfg.concurrency,
            idle_s: cfg.idle.as_secs(),
            ..Default::default()
        }
    }

    /// The mean of the replays.
    pub fn replay_s(&self) -> f64 {
        let runs = &self.replay_runs_s;
        runs.iter().sum::<f64>() / runs.len().max(1) as f64
    }

    /// The operator against a client with no logic sending its requests: at or below 1.0, the
    /// operator adds nothing to what its requests cost.
    pub fn converge_vs_replay(&self) -> f64 {
        self.converge_s / self.replay_s()
    }

    pub fn report(&self) -> Report {
        Report {
            n: self.n,
            write_ceiling_per_s: round(self.write_ceiling_per_s, 1),
            converge_s: round(self.converge_s, 2),
            converge_ms_per_token: round(self.converge_s * 1000.0 / self.n as f64, 3),
            converge_vs_replay: round(self.converge_vs_replay(), 3),
            api_cost_per_token: round(self.api_cost.units, 2),
            steady_writes: self.steady_writes,
            restart_writes: self.restart_writes,
            restart_ready_s: round(self.restart_ready_s, 2),
            rss_peak_mib: round(self.rss_peak_mib, 1),
            rss_steady_mib: round(self.rss_steady_mib, 1),
            storm_peak_to_mean: self.storm.as_ref().map(|s| round(s.peak_to_mean, 2)),
        }
    }

    pub fn table(&self) -> String {
        let runs = self.replay_runs_s.iter().map(|s| format!("{s:.2} s"));
        let replays = format!(
            "the same requests, no logic; mean of {}",
            runs.collect::<Vec<_>>().join(", ")
        );
        let rss_note = format!(
            "with unrelated Secrets; {:.1} MiB of it file-backed, mostly code (RssFile)",
            self.rss_steady_file_mib
        );
        let rows: Vec<(&str, String, &str)> = vec![
            ("tokens (BENCH_N)", self.n.to_string(), ""),
            (
                "concurrency",
                self.concurrency.to_string(),
                "operator and ceiling client",
            ),
            (
                "write ceiling W",
                format!("{:.0} writes/s", self.write_ceiling_per_s),
                "plain Secret creates",
            ),
            (
                "  measured over",
                format!("{} creates", self.writes_needed),
                "",
            ),
            (
                "converge",
                format!("{:.2} s", self.converge_s),
                "first create -> last Ready",
            ),
            (
                "  of which creating",
                format!("{:.2} s", self.created_in_s),
                "the bench's own creates",
            ),
            (
                "  per token",
                format!("{:.3} ms", self.converge_s * 1000.0 / self.n as f64),
                "",
            ),
            (
                "replay",
                format!("{:.2} s", self.replay_s()),
                replays.as_str(),
            ),
            (
                "converge_vs_replay",
                format!("{:.3}", self.converge_vs_replay()),
                "target <= 1.0",
            ),
            (
                "api_cost_per_token",
                format!("{:.2} units", self.api_cost.units),
                "Secret creates; target <= 8.25",
            ),
            (
                "operator writes",
                self.converge_writes.to_string(),
                "secrets + workspacetokens",
            ),
            ("events", self.converge_events.to_string(), ""),
            (
                "steady writes",
                format!("{} in {} s", self.steady_writes, self.idle_s),
                "target 0",
            ),
            (
                "restart writes",
                self.restart_writes.to_string(),
                "target 0",
            ),
            (
                "restart ready",
                format!("{:.2} s", self.restart_ready_s),
                "target <= 10 s",
            ),
            (
                "restart list floor",
                format!("{:.2} s", self.restart_list_floor_s),
                "its Secrets, listed by a plain client",
            ),
            (
                "restart resync",
                format!("{:.2} s", self.restart_resync_s),
                "every token reconciled",
            ),
            (
                "RSS steady",
                format!("{:.1} MiB", self.rss_steady_mib),
                rss_note.as_str(),
            ),
            ("RSS peak", format!("{:.1} MiB", self.rss_peak_mib), ""),
            (
                "heap live / resident",
                format!(
                    "{:.1} / {:.1} MiB",
                    self.heap_allocated_mib, self.heap_resident_mib
                ),
                "jemalloc, at RSS steady",
            ),
            (
                "metrics page",
                format!(
                    "{:.0} KiB in {:.0} ms, {} per-token series, RSS {:.1} MiB after",
                    self.metrics_page_kib,
                    self.metrics_scrape_ms,
                    self.per_token_series,
                    self.rss_after_scrapes_mib
                ),
                "5 scrapes at RSS steady",
            ),
            (
                "inventory listings",
                format!(
                    "{:.2} per ws per interval",
                    self.inventory.per_workspace_per_interval
                ),
                "target 1.0",
            ),
            (
                "  counted",
                format!(
                    "{} in {} s",
                    self.inventory.listings, self.inventory.window_s
                ),
                "workspaces x 3 intervals",
            ),
            (
                "  workspaces, interval",
                format!(
                    "{}, {} s",
                    self.inventory.workspaces, self.inventory.interval_s
                ),
                "two issuer tokens each",
            ),
            (
                "  writes meanwhile",
                self.inventory.writes.to_string(),
                "target 0",
            ),
        ];
        let mut out = String::new();
        for (name, value, note) in rows {
            out += &format!("  {name:<22} {value:>18}  {note}\n");
        }
        let listing = |map: &BTreeMap<String, f64>| {
            map.iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out += &format!(
            "  {:<22} {}\n",
            "CPU s, ceiling",
            listing(&self.ceiling_cpu_s)
        );
        out += &format!(
            "  {:<22} {}\n",
            "CPU s, converge",
            listing(&self.converge_cpu_s)
        );
        out += &format!(
            "  {:<22} {}\n",
            "CPU s, replay",
            listing(&self.replay_cpu_s)
        );
        out += &format!(
            "  {:<22} {}\n",
            "CPU s, restart ready",
            listing(&self.restart_cpu_s)
        );
        let kinds = self
            .converge_writes_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"));
        out += &format!(
            "  {:<22} {}\n",
            "converge writes",
            kinds.collect::<Vec<_>>().join(", ")
        );
        let reads = (self.converge_reads_by_kind.iter()).map(|(k, v)| format!("{k} {v}"));
        out += &format!(
            "  {:<22} {}\n",
            "converge reads",
            reads.collect::<Vec<_>>().join(", ")
        );
        let costs = (self.api_cost.by_kind.iter()).map(|(k, units)| format!("{k} {units:.2}"));
        out += &format!(
            "  {:<22} {}\n",
            "units per token",
            costs.collect::<Vec<_>>().join(", ")
        );
        let rates = (self.request_costs.per_s.iter()).map(|(k, r)| format!("{k} {r:.0}"));
        out += &format!(
            "  {:<22} {}\n",
            "alone, per s",
            rates.collect::<Vec<_>>().join(", ")
        );
        if !self.api_cost.untimed.is_empty() {
            let untimed = self.api_cost.untimed.join(", ");
            out += &format!(
                "  {:<22} {untimed} (at the dearest cost)\n",
                "untimed kinds"
            );
        }
        let storms = [
            ("storm, no jitter", &self.storm_no_jitter),
            ("storm, jitter", &self.storm),
        ];
        for (name, s) in storms {
            let Some(s) = s else {
                out += &format!("  {name:<22} {:>18}\n", "skipped (BENCH_STORMS=0)");
                continue;
            };
            out += &format!(
                "  {name:<22} {:>18}  {} rotations, busiest second {}, mean {:.1}/s over every={}s, spread {} s\n",
                format!("{:.2} peak/mean", s.peak_to_mean),
                s.rotations,
                s.peak_per_s,
                s.mean_per_s,
                s.every_s,
                s.spread_s
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_compares_the_busiest_second_with_the_mean_over_the_period() {
        // 6 rotations over a 60 s period: mean 0.1/s; 3 in one second: 30x the mean.
        let storm = Storm::from_creations([100, 100, 100, 101, 130, 159], Duration::from_secs(60));
        assert_eq!(storm.rotations, 6);
        assert_eq!(storm.peak_per_s, 3);
        assert!((storm.peak_to_mean - 30.0).abs() < 1e-9);
        assert_eq!(storm.spread_s, 60);
    }

    #[test]
    fn an_even_storm_has_a_peak_to_mean_of_one() {
        let storm = Storm::from_creations(0..60, Duration::from_secs(60));
        assert!((storm.peak_to_mean - 1.0).abs() < 1e-9);
    }

    #[test]
    fn converge_vs_replay_is_the_operator_over_the_mean_of_the_replays() {
        let figures = Figures {
            n: 1000,
            replay_runs_s: vec![8.0, 12.0],
            converge_s: 9.0,
            ..Default::default()
        };
        assert!((figures.converge_vs_replay() - 0.9).abs() < 1e-9);
        let report = figures.report();
        assert_eq!(report.converge_ms_per_token, 9.0);
        assert_eq!(report.storm_peak_to_mean, None, "no storm ran");
    }
}
