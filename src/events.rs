//! Kubernetes Events on WorkspaceTokens (`events.k8s.io/v1`): one per step, posted off the
//! reconcile's path.
//!
//! kube-runtime's `Recorder` awaits each POST inside the reconcile and keeps every event it
//! sent for minutes to merge repeats into series; at 10k tokens that is 20k cached Events
//! and a scan of them per publish. Steps here are distinct facts (minted v3, activated v3),
//! so each is its own Event and nothing is kept once it is written.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;

use crate::api::WorkspaceToken;
use crate::contract::REPORTING_CONTROLLER;
use crate::metrics::Metrics;

pub use kube::runtime::events::EventType;

/// Events being posted at once; more wait their turn (the API server sees a steady trickle).
const IN_FLIGHT: usize = 8;
/// `note` is limited to 1 kB by the API server.
const NOTE_LIMIT: usize = 1024;

#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    instance: String,
    in_flight: Arc<Semaphore>,
    /// Counts every Warning by reason (`tokenwarden_warnings_total`): the alerts read it.
    metrics: Metrics,
}

impl EventPublisher {
    pub fn new(client: Client, instance: String, metrics: Metrics) -> Self {
        EventPublisher {
            client,
            instance,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            metrics,
        }
    }

    /// Queues the Event and returns at once; a failure to post it is logged, never fatal.
    pub fn publish(
        &self,
        wst: &WorkspaceToken,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if type_ == EventType::Warning {
            self.metrics.warned(reason);
        }
        let event = build(wst, &self.instance, type_, reason, action, note);
        let api: Api<Event> = Api::namespaced(
            self.client.clone(),
            &wst.namespace().unwrap_or_else(|| "default".into()),
        );
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await;
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                let reason = event.reason.unwrap_or_default();
                tracing::warn!(error = %e, %reason, "event not recorded");
            }
        });
    }
}

/// The Event for one step on `wst`.
pub fn build(
    wst: &WorkspaceToken,
    instance: &str,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) -> Event {
    let regarding: ObjectReference = wst.object_ref(&());
    let object = wst.name_any();
    // `<object>.<random>`, like client-go; the object part is cut to keep a valid name.
    let name = format!(
        "{}.{:016x}",
        &object[..object.len().min(200)],
        rand::random::<u64>()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: wst.namespace(),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        reason: Some(reason.into()),
        action: Some(action.into()),
        note: Some(truncate(note, NOTE_LIMIT)),
        regarding: Some(regarding),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.into()),
        ..Default::default()
    }
}

fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wst() -> WorkspaceToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1",
            "kind": "WorkspaceToken",
            "metadata": { "name": "agent", "namespace": "team-a", "uid": "u-1" },
            "spec": { "workspaceId": "ws" },
        }))
        .expect("WorkspaceToken")
    }

    #[test]
    fn an_event_names_its_object_reason_action_and_reporter() {
        let event = build(
            &wst(),
            "pod-1",
            EventType::Normal,
            "Minted",
            "Mint",
            "v1".into(),
        );
        let name = event.metadata.name.as_deref().expect("name");
        assert!(
            name.starts_with("agent.") && name.len() == "agent.".len() + 16,
            "{name}"
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert_eq!(event.reason.as_deref(), Some("Minted"));
        assert_eq!(event.action.as_deref(), Some("Mint"));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some(REPORTING_CONTROLLER)
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("pod-1"));
        let regarding = event.regarding.expect("regarding");
        assert_eq!(regarding.kind.as_deref(), Some("WorkspaceToken"));
        assert_eq!(regarding.uid.as_deref(), Some("u-1"));
        assert!(event.event_time.is_some());
    }

    #[test]
    fn two_events_for_one_step_are_two_objects() {
        let [a, b] = [(); 2].map(|_| {
            let note = "issuer down".to_string();
            build(
                &wst(),
                "i",
                EventType::Warning,
                "IssuerUnavailable",
                "Mint",
                note,
            )
        });
        assert_ne!(a.metadata.name, b.metadata.name);
    }

    #[test]
    fn a_long_note_is_cut_at_a_char_boundary_within_the_limit() {
        let note = "é".repeat(NOTE_LIMIT);
        let event = build(&wst(), "i", EventType::Warning, "Failed", "Reconcile", note);
        let note = event.note.expect("note");
        assert!(note.len() <= NOTE_LIMIT && note.chars().all(|c| c == 'é'));
    }
}
