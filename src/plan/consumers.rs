//! `status.consumers`: the workloads of the namespace whose pod template reads `S`, each way it
//! reads it, and whether a cutover rolls it. One that reads through `env`, `envFrom` or a
//! `subPath` mount keeps the old token until it restarts: unless it is a restart target, each
//! cutover says so in a Warning `ConsumerNeedsRestart`.

use super::planner::Planner;
use super::{MountedWrite, Step, Warning};
use crate::api::ConsumerStatus;
use crate::consumers::Consumer;

impl Planner<'_, '_> {
    /// Lists the consumers, and the Warnings the cutover this pass plans (if any) owes them.
    pub(super) fn plan_consumers(&mut self) {
        let Some(consumers) = &self.o.consumers else {
            self.consumers = (self.o.status).map_or_else(Vec::new, |s| s.consumers.clone());
            return;
        };
        let listed: Vec<(ConsumerStatus, &Consumer)> =
            (consumers.iter()).map(|c| (self.status_of(c), c)).collect();
        let cutover = self.steps.iter().find_map(|s| match s {
            Step::WriteMounted {
                current,
                why: MountedWrite::Cutover,
                ..
            } => Some(*current),
            _ => None,
        });
        // The first token replaces none: nobody holds an older one.
        let replaces = |version: u32| self.versions.keys().any(|v| *v < version);
        if let Some(version) = cutover.filter(|v| replaces(*v)) {
            let missed: Vec<&Consumer> = (listed.iter())
                .filter(|(status, c)| !status.restart_target && !c.via.follows_rotation())
                .map(|(_, c)| *c)
                .collect();
            self.after_cutover = warnings(&missed, version);
        }
        // Bounded: whoever may create workloads in the namespace must not be able to grow
        // the status past what the API server stores.
        self.consumers = (listed.into_iter())
            .take(MAX_LISTED)
            .map(|(status, _)| status)
            .collect();
    }

    fn status_of(&self, consumer: &Consumer) -> ConsumerStatus {
        let kind = consumer.kind.as_str();
        let restart_target = (self.o.spec.restart_targets.iter())
            .any(|t| t.name == consumer.name && t.kind.as_str() == kind);
        ConsumerStatus {
            kind: kind.to_string(),
            name: consumer.name.clone(),
            via: consumer.via.as_str().to_string(),
            restart_target,
        }
    }
}

/// At most this many consumers in `status.consumers` (sorted: the rest are left out).
pub const MAX_LISTED: usize = 100;

/// At most this many `ConsumerNeedsRestart` Warnings name a consumer at one cutover; one more
/// counts the rest.
const MAX_NAMED: usize = 10;

fn warnings(missed: &[&Consumer], version: u32) -> Vec<Warning> {
    let mut warnings: Vec<Warning> = (missed.iter().take(MAX_NAMED))
        .map(|c| needs_restart(c, version))
        .collect();
    if missed.len() > MAX_NAMED {
        warnings.push(Warning {
            reason: "ConsumerNeedsRestart",
            message: format!(
                "{} more consumers read the token through env, envFrom or subPath and are not \
                 in restartTargets: they keep the previous token until their pods restart \
                 (version {version} is current now)",
                missed.len() - MAX_NAMED
            ),
        });
    }
    warnings
}

fn needs_restart(consumer: &Consumer, version: u32) -> Warning {
    Warning {
        reason: "ConsumerNeedsRestart",
        message: format!(
            "{}/{} reads the token through {} and is not in restartTargets: it keeps the \
             previous token until its pods restart (version {version} is current now)",
            consumer.kind.as_str(),
            consumer.name,
            consumer.via.as_str()
        ),
    }
}
