//! The controller: watches WorkspaceTokens and the Secrets they own, and runs
//! observe -> plan -> apply -> status for each WorkspaceToken that changed or is due.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::api::{FINALIZER, WorkspaceToken};
use crate::plan::Observed;
use crate::secrets::{SecretIndex, hash_in_place, managed_selector};
use crate::telemetry::{Health, Metrics};
use crate::{Error, Result, apply, plan, secrets, status};

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub index: SecretIndex,
    pub events: crate::events::EventPublisher,
    pub metrics: Metrics,
    /// One connection pool for every platform (HTTP issuer).
    pub http: crate::issuer::http::HttpClient,
    failures: Mutex<HashMap<ObjectRef<WorkspaceToken>, Failure>>,
    expectations: Mutex<HashMap<ObjectRef<WorkspaceToken>, Expectation>>,
}

/// What our own last writes must look like in the caches before we plan again: planning on
/// a cache that hasn't seen our writes yet would mint a version we already minted.
struct Expectation {
    wst_resource_version: Option<u64>,
    secrets: Vec<(String, Option<u64>)>,
    /// The uid whose finalizer we removed: that object is gone, whatever the cache still
    /// shows (a pass on it would redo the deletion without the Secrets it needs).
    gone_uid: Option<String>,
    since: Instant,
}

/// A WorkspaceToken whose last pass failed: when to try again, and the resourceVersion our
/// own writes left. Our writes (status, annotations) trigger watch events; they must not cut
/// the backoff short, while a change by anyone else (a fixed spec) is acted on at once.
#[derive(Default)]
struct Failure {
    attempts: u32,
    retry_at: Option<Instant>,
    own_resource_version: Option<String>,
    /// Passes in a row that met a 409 Conflict.
    stale_views: u32,
}

/// Conflicts in a row redone quietly; beyond this, a conflict is a failure like any other:
/// a Degraded condition, a warn line and backoff (something keeps overwriting the object,
/// and someone should know).
const QUIET_STALE_VIEWS: u32 = 5;

/// How long to wait for the caches to show our writes before planning anyway.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Settings {
    /// Watch one namespace; `None` watches all.
    pub namespace: Option<String>,
    pub concurrency: u16,
    /// The `reportingInstance` of events (the pod name in a cluster).
    pub instance: String,
}

pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (tokens, secrets): (Api<WorkspaceToken>, Api<Secret>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let index = SecretIndex::default();
    let ctx = Arc::new(Context {
        events: crate::events::EventPublisher::new(client.clone(), settings.instance.clone()),
        client,
        index: index.clone(),
        metrics,
        http: crate::issuer::http::HttpClient::new(),
        failures: Mutex::default(),
        expectations: Mutex::default(),
    });

    // Secrets are hashed as they arrive, so plaintext never sits in the cache.
    let feed = index.clone();
    let ready = health.clone();
    let secret_triggers = watcher(
        secrets,
        watcher::Config::default()
            .labels(&managed_selector())
            .page_size(500),
    )
    .default_backoff()
    .map(|event| event.map(|e| e.modify(hash_in_place)))
    .filter_map(move |event| {
        let trigger = match event {
            Ok(event) => {
                let key = feed.apply(&event);
                if matches!(event, watcher::Event::InitDone) {
                    ready.set_ready(true);
                }
                key.map(|(ns, name)| ObjectRef::<WorkspaceToken>::new(&name).within(&ns))
            }
            Err(e) => {
                tracing::warn!(error = %e, "Secret watch failed; retrying");
                None
            }
        };
        future::ready(trigger)
    });

    // The cache keeps what planning reads: managedFields and kubectl's last-applied copy of
    // the object are dropped on arrival (at 10k tokens they were most of the memory).
    let (store, writer) = reflector::store();
    let token_events = reflector(
        writer,
        watcher(tokens, watcher::Config::default().page_size(500))
            .default_backoff()
            .modify(slim_token)
            .inspect_err(|e| tracing::warn!(error = %e, "WorkspaceToken watch failed; retrying")),
    )
    .applied_objects();
    let controller = Controller::for_stream(token_events, store)
        .with_config(ControllerConfig::default().concurrency(settings.concurrency));
    let gauge = tokio::spawn(count_ready_tokens(controller.store(), ctx.metrics.clone()));
    controller
        .reconcile_on(secret_triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| future::ready(()))
        .await;
    gauge.abort();
}

/// What the cache drops from each WorkspaceToken: fields no step reads.
fn slim_token(wst: &mut WorkspaceToken) {
    wst.metadata.managed_fields = None;
    if let Some(annotations) = wst.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `tokenwarden_tokens{ready}` from the cache every 10 s: no API call.
async fn count_ready_tokens(
    store: kube::runtime::reflector::Store<WorkspaceToken>,
    metrics: Metrics,
) {
    loop {
        let (mut ready, mut not_ready) = (0, 0);
        for wst in store.state() {
            let is_ready = wst.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == status::READY && c.status == "True")
            });
            if is_ready {
                ready += 1;
            } else {
                not_ready += 1;
            }
        }
        metrics.set_ready_tokens(ready, not_ready);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[tracing::instrument(skip_all, fields(namespace = wst.namespace().unwrap_or_default(), name = wst.name_any()))]
async fn reconcile(wst: Arc<WorkspaceToken>, ctx: Arc<Context>) -> Result<Action> {
    // Before the first list of Secrets completes, absence means nothing: wait.
    if !ctx.index.is_ready() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let key = ObjectRef::from_obj(&*wst);
    if let Some(wait) = ctx.backing_off(&key, &wst) {
        return Ok(Action::requeue(wait));
    }
    if !ctx.expectations_met(&key, &wst) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let timer = ctx.metrics.reconcile_started();
    let ns = wst.namespace().unwrap_or_default();
    let name = wst.name_any();

    // observe: no client required
    let cached = ctx.index.secrets_of(&ns, &name);
    let view = secrets::view(&wst, &cached);
    let uid = wst.uid().unwrap_or_default();
    let empty = Default::default();
    let observed = Observed {
        name: &name,
        uid: &uid,
        generation: wst.metadata.generation,
        spec: &wst.spec,
        annotations: wst.metadata.annotations.as_ref().unwrap_or(&empty),
        status: wst.status.as_ref(),
        deleting: wst.metadata.deletion_timestamp.is_some(),
        has_finalizer: wst.finalizers().iter().any(|f| f == FINALIZER),
        versioned: view.versioned.clone(),
        mounted: view.mounted.clone(),
        foreign: view.foreign.clone(),
        mint_intent: wst
            .annotations()
            .get(crate::apply::MINT_INTENT_ANNOTATION)
            .and_then(|v| plan::MintIntent::parse(v)),
    };

    // plan: no client required
    let now = crate::time::now();
    let plan = plan::plan(&observed, now);
    if let Some(error) = &plan.spec_error {
        let changed = wst
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::READY))
            .is_none_or(|c| c.message != *error);
        if changed {
            warn_event(&ctx, &wst, "InvalidSpec", error);
        }
    }
    if let Some(conflict) = view.foreign.first() {
        let changed = wst
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::READY))
            .is_none_or(|c| c.reason != "SecretConflict");
        if changed {
            warn_event(
                &ctx,
                &wst,
                "SecretConflict",
                &format!(
                    "Secret {conflict} is not owned by this WorkspaceToken; it is left untouched"
                ),
            );
        }
    }

    // apply: client required
    let outcome = apply::run(&ctx, &wst, &plan, &view, now).await;
    let removed_finalizer =
        outcome.error.is_none() && plan.steps.contains(&plan::Step::RemoveFinalizer);
    let mut written_rv = outcome.wst_resource_version.clone();
    let mut status_error = None;
    // A pass that planned on a stale view writes no status from it: the next pass, on the
    // newer object, renders status from what is really there (as after a crash).
    // Not when the platform revoked something in this pass: status must record that.
    let stale_view = outcome.error.as_ref().is_some_and(Error::is_stale_view)
        && outcome.revoked_at_platform.is_empty()
        && ctx.stale_view_streak(&key) < QUIET_STALE_VIEWS;
    if !removed_finalizer && !stale_view {
        let api: Api<WorkspaceToken> = Api::namespaced(ctx.client.clone(), &ns);
        let new_status = status::render(&wst, &plan, &outcome, now);
        if !plan.steps.is_empty() {
            crate::failpoint::hit(crate::failpoint::BEFORE_STATUS);
        }
        match status::write(&api, &wst, new_status).await {
            Ok(Some(rv)) => written_rv = Some(rv),
            Ok(None) => {}
            Err(e) => status_error = Some(e),
        }
    }
    // Recorded whatever the status write did: the next pass must not plan on caches that
    // haven't seen this pass's Secrets.
    ctx.expect(key.clone(), written_rv.clone(), outcome.written.clone());
    if removed_finalizer {
        ctx.expect_gone(key.clone(), uid.clone());
    }
    let outcome_error = outcome.error.or(status_error);
    if !plan.steps.is_empty() {
        tracing::info!(
            steps = plan.steps.len(),
            current = plan.current,
            ready = plan.readiness.ready,
            "reconciled"
        );
    }

    match outcome_error {
        Some(error) if stale_view => {
            timer.finish(false);
            ctx.metrics.reconcile_failed(error.reason());
            ctx.failures
                .lock()
                .expect("failures lock")
                .entry(key)
                .or_default()
                .stale_views += 1;
            // Soon, but not in lockstep with whoever else writes the object.
            Ok(Action::requeue(Duration::from_millis(
                200 + rand::random_range(0..300),
            )))
        }
        Some(error) => {
            timer.finish(false);
            let own = written_rv.or_else(|| wst.resource_version());
            ctx.failures
                .lock()
                .expect("failures lock")
                .entry(key)
                .or_default()
                .own_resource_version = own;
            Err(error)
        }
        None => {
            timer.finish(true);
            ctx.failures.lock().expect("failures lock").remove(&key);
            Ok(match plan.requeue_after {
                Some(after) => Action::requeue(after),
                None => Action::await_change(),
            })
        }
    }
}

fn warn_event(ctx: &Context, wst: &WorkspaceToken, reason: &str, note: &str) {
    use crate::events::EventType;
    ctx.events
        .publish(wst, EventType::Warning, reason, "Reconcile", note.into());
}

/// Capped exponential backoff with jitter, per WorkspaceToken, reset by a success.
fn error_policy(wst: Arc<WorkspaceToken>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.reason());
    let key = ObjectRef::from_obj(&*wst);
    let (attempt, wait) = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let failure = failures.entry(key).or_default();
        failure.attempts = failure.attempts.saturating_add(1);
        let wait = backoff(failure.attempts, rand::random::<f64>());
        failure.retry_at = Some(Instant::now() + wait);
        (failure.attempts, wait)
    };
    tracing::warn!(
        namespace = wst.namespace().unwrap_or_default(),
        name = wst.name_any(),
        reason = error.reason(),
        error = %error,
        attempt,
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// 1 s, 2 s, 4 s ... capped at 5 min, plus up to 10% jitter so failures don't synchronise.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base =
        Duration::from_secs(1u64 << attempt.saturating_sub(1).min(9)).min(Duration::from_secs(300));
    base + base.mul_f64(0.1 * jitter.clamp(0.0, 1.0))
}

fn parse_rv(rv: &str) -> Option<u64> {
    rv.parse().ok()
}

impl Context {
    /// Our pass removed the finalizer of `uid`: until the cache drops that object (or the
    /// expectation times out), nothing is planned for it.
    fn expect_gone(&self, key: ObjectRef<WorkspaceToken>, uid: String) {
        self.failures.lock().expect("failures lock").remove(&key);
        let mut expectations = self.expectations.lock().expect("expectations lock");
        // Entries for objects that are gone are never met again; drop the old ones here.
        expectations.retain(|_, e| e.since.elapsed() <= EXPECTATION_TIMEOUT);
        expectations.insert(
            key,
            Expectation {
                wst_resource_version: None,
                secrets: Vec::new(),
                gone_uid: Some(uid),
                since: Instant::now(),
            },
        );
    }

    /// Passes in a row that met a 409 Conflict for this WorkspaceToken.
    fn stale_view_streak(&self, key: &ObjectRef<WorkspaceToken>) -> u32 {
        self.failures
            .lock()
            .expect("failures lock")
            .get(key)
            .map_or(0, |f| f.stale_views)
    }

    /// Time left before the next attempt after a failure, unless someone else changed the
    /// object since (then at once).
    fn backing_off(
        &self,
        key: &ObjectRef<WorkspaceToken>,
        wst: &WorkspaceToken,
    ) -> Option<Duration> {
        let failures = self.failures.lock().expect("failures lock");
        let failure = failures.get(key)?;
        let left = failure.retry_at?.checked_duration_since(Instant::now())?;
        (failure.own_resource_version == wst.resource_version()).then_some(left)
    }

    fn expect(
        &self,
        key: ObjectRef<WorkspaceToken>,
        wst_rv: Option<String>,
        secrets: Vec<(String, Option<String>)>,
    ) {
        let mut expectations = self.expectations.lock().expect("expectations lock");
        if wst_rv.is_none() && secrets.is_empty() {
            expectations.remove(&key);
            return;
        }
        expectations.insert(
            key,
            Expectation {
                wst_resource_version: wst_rv.as_deref().and_then(parse_rv),
                secrets: secrets
                    .into_iter()
                    .map(|(name, rv)| (name, rv.as_deref().and_then(parse_rv)))
                    .collect(),
                gone_uid: None,
                since: Instant::now(),
            },
        );
    }

    fn expectations_met(&self, key: &ObjectRef<WorkspaceToken>, wst: &WorkspaceToken) -> bool {
        let mut expectations = self.expectations.lock().expect("expectations lock");
        let Some(expected) = expectations.get(key) else {
            return true;
        };
        let seen = |rv: Option<&String>, want: u64| {
            rv.and_then(|r| parse_rv(r))
                .is_some_and(|have| have >= want)
        };
        let wst_ok = expected
            .wst_resource_version
            .is_none_or(|want| seen(wst.metadata.resource_version.as_ref(), want));
        let ns = wst.namespace().unwrap_or_default();
        let cached = self.index.resource_versions_of(&ns, &wst.name_any());
        let secrets_ok = expected.secrets.iter().all(|(name, want)| {
            let found = cached.iter().find(|(n, _)| n == name);
            match (want, found) {
                (None, found) => found.is_none(),
                (Some(want), Some((_, have))) => have.is_some_and(|have| have >= *want),
                (Some(_), None) => false,
            }
        });
        let gone_ok = expected
            .gone_uid
            .as_ref()
            .is_none_or(|uid| wst.metadata.uid.as_ref() != Some(uid));
        let met =
            (wst_ok && secrets_ok && gone_ok) || expected.since.elapsed() > EXPECTATION_TIMEOUT;
        if met {
            expectations.remove(key);
        }
        met
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_annotations_but_not_managed_fields_or_the_last_applied_copy() {
        let mut wst: WorkspaceToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1",
            "kind": "WorkspaceToken",
            "metadata": {
                "name": "agent",
                "annotations": {
                    "tokenwarden.dev/rotate": "1",
                    LAST_APPLIED_ANNOTATION: "{\"spec\":{}}",
                },
                "managedFields": [{ "manager": "kubectl", "operation": "Update" }],
            },
            "spec": { "workspaceId": "ws" },
        }))
        .expect("WorkspaceToken");
        slim_token(&mut wst);
        assert_eq!(wst.metadata.managed_fields, None);
        let annotations: Vec<&String> = wst.annotations().keys().collect();
        assert_eq!(annotations, ["tokenwarden.dev/rotate"]);
    }

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_five_minutes() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(5, 0.0), Duration::from_secs(16));
        assert_eq!(backoff(30, 0.0), Duration::from_secs(300));
        assert_eq!(backoff(30, 1.0), Duration::from_secs(330));
    }
}
