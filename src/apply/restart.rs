//! Restart targets: each cutover rolls the named workloads' pods, so a consumer that reads
//! its token once at start-up picks up the new one.

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch};
use serde_json::json;

use super::Applier;
use super::records::params;
use crate::api::RestartKind;
use crate::contract::RESTARTED_AT_ANNOTATION;
use crate::events::EventType;
use crate::journal::Done;
use crate::{Error, Result};

impl Applier<'_> {
    pub(super) async fn restart_targets(&mut self, version: u32) -> Result<()> {
        // Sub-second precision: two cutovers within one second must still roll the pods.
        let at = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let patch = json!({ "spec": { "template": { "metadata": { "annotations": {
            RESTARTED_AT_ANNOTATION: at,
        }}}}});
        let patch = Patch::Merge(&patch);
        for target in &self.wst.spec.restart_targets {
            let client = self.io.client.clone();
            let (name, params) = (&target.name, &params());
            let result = match target.kind {
                RestartKind::Deployment => Api::<Deployment>::namespaced(client, &self.ns)
                    .patch(name, params, &patch)
                    .await
                    .map(|_| ()),
                RestartKind::StatefulSet => Api::<StatefulSet>::namespaced(client, &self.ns)
                    .patch(name, params, &patch)
                    .await
                    .map(|_| ()),
                RestartKind::DaemonSet => Api::<DaemonSet>::namespaced(client, &self.ns)
                    .patch(name, params, &patch)
                    .await
                    .map(|_| ()),
            };
            let kind = target.kind;
            match result {
                Ok(()) => self.event(
                    EventType::Normal,
                    "Restarted",
                    "Restart",
                    format!("restarted {kind:?} {name} for version {version}"),
                ),
                // A missing workload is the user's to fix; it must not block rotation.
                Err(kube::Error::Api(s)) if s.code == 404 => self.event(
                    EventType::Warning,
                    "RestartTargetNotFound",
                    "Restart",
                    format!("{kind:?} {name} not found"),
                ),
                Err(e) => return Err(Error::kube("restart target")(e)),
            }
        }
        self.record(Done::Restarted { version });
        Ok(())
    }
}
