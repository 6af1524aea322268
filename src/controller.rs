//! The controller: watches WorkspaceTokens and the Secrets they own, and runs
//! observe -> plan -> apply -> status for each WorkspaceToken that changed or is due.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::api::WorkspaceToken;
use crate::consumers::{ConsumerIndex, EVERY_SECRET};
use crate::contract::{LAST_APPLIED_ANNOTATION, managed_selector};
use crate::events::EventPublisher;
use crate::inventory::Inventory;
use crate::issuer::client::HttpClient;
use crate::issuer_watch::issuer_watches;
use crate::journal::Journal;
use crate::metrics::{Health, Metrics, ReconcileTimer};
use crate::pacing::{Ended, Next, Pacer, Seen, Wrote};
use crate::rollout_watch::RolloutWatches;
use crate::secrets::{SecretIndex, hash_in_place};
use crate::token_cache::{CachedToken, cached_event, cached_ref};
use crate::{Error, Result, apply, observe, plan, secrets, status};

#[path = "controller_memory.rs"]
mod memory;

/// Shared by every reconcile: what apply may touch, and the pacing of every WorkspaceToken.
struct Context {
    io: apply::Handle,
    pacer: Mutex<Pacer<ObjectRef<WorkspaceToken>>>,
    /// The restart targets a Retiring version waits on (`holdUntil.rolloutComplete`).
    rollouts: RolloutWatches,
    /// Who reads which Secret (`status.consumers`).
    consumers: ConsumerIndex,
    /// `holdUntil.idleFor` questions the platform did not answer, until they may be asked
    /// again: every pass in between reuses the answer, so a failing platform is asked once a
    /// minute per held token, however often the token is reconciled.
    usage_failures: Mutex<HashMap<ObjectRef<WorkspaceToken>, (Instant, plan::UsageReading)>>,
    /// The issuer inventory: each group's schedule and last listing.
    inventory: Inventory,
    /// The WorkspaceTokens as the watch shows them (an inventory judges a listing by them).
    tokens: Store<CachedToken>,
    /// The WorkspaceTokens a new listing of their workspace is news for.
    inventory_news: futures::channel::mpsc::UnboundedSender<ObjectRef<WorkspaceToken>>,
    /// The highest version of each WorkspaceToken (by uid) seen since the start: a restore of
    /// the cluster from an older backup must not make a version number mean a second token.
    versions_seen: Mutex<HashMap<u128, u32>>,
}

pub struct Settings {
    /// Watch one namespace; `None` watches all.
    pub namespace: Option<String>,
    pub concurrency: u16,
    /// The `reportingInstance` of events (the pod name in a cluster).
    pub instance: String,
    /// Where ClusterTokenIssuer admin Secrets are read.
    pub cluster_resource_namespace: String,
    /// Watch workloads for `status.consumers`.
    pub consumers: bool,
    /// How often each (issuer, workspace) is listed at its platform; zero: only at rotations.
    pub inventory_interval: Duration,
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
    let probe_api = tokens.clone();
    let index = SecretIndex::default();
    let (issuers, issuer_feeds) = issuer_watches(
        &client,
        settings.namespace.as_deref(),
        &settings.cluster_resource_namespace,
    );
    let (rollouts, rollout_triggers) = RolloutWatches::new(client.clone());
    let (consumers, consumer_changes) = if settings.consumers {
        let (index, changes) = crate::consumers::run(client.clone(), settings.namespace.as_deref());
        (index, changes.boxed())
    } else {
        // Never ready: status.consumers says nothing rather than "nobody".
        (ConsumerIndex::default(), futures::stream::empty().boxed())
    };
    let (store, writer) = reflector::store();
    let (inventory_news, inventory_triggers) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context {
        io: apply::Handle {
            events: EventPublisher::new(client.clone(), settings.instance.clone(), metrics.clone()),
            client: client.clone(),
            index: index.clone(),
            http: HttpClient::new().timed(metrics.issuer_timer()),
            metrics,
            issuers,
            finalizing: Arc::default(),
        },
        pacer: Mutex::default(),
        rollouts,
        consumers,
        usage_failures: Mutex::default(),
        inventory: Inventory::new(settings.inventory_interval, crate::time::now()),
        tokens: store.clone(),
        inventory_news,
        versions_seen: Mutex::default(),
    });

    let (tokens_seen, issuers_seen) = (store.clone(), ctx.io.issuers.clone());
    (ctx.io.metrics.per_token())
        .draw_from(move || crate::token_metrics::snapshot(&tokens_seen, &issuers_seen));

    // Secrets are hashed as they arrive, so plaintext never sits in the cache.
    let feed = index.clone();
    let ready = health.clone();
    let secret_triggers = crate::relist::watcher(
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
                key.map(|(ns, name)| ObjectRef::<CachedToken>::new(&name).within(&ns))
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
    let holders = ctx.inventory.holders.clone();
    let deletions = ctx.clone();
    let token_events = reflector(
        writer,
        crate::relist::watcher(tokens, watcher::Config::default().page_size(500))
            .default_backoff()
            .modify(slim_token)
            .inspect(move |event| {
                if let Ok(event) = event {
                    holders.apply(event);
                    if let watcher::Event::Delete(wst) = event {
                        apply::audit_deleted(&deletions.io, wst, crate::time::now());
                    }
                }
            })
            .inspect_err(|e| tracing::warn!(error = %e, "WorkspaceToken watch failed; retrying"))
            .map_ok(|event| cached_event(&event)),
    )
    .applied_objects();
    let controller = Controller::for_stream(token_events, store)
        .with_config(ControllerConfig::default().concurrency(settings.concurrency));
    let gauge = tokio::spawn(count_ready_tokens(controller.store(), ctx.clone()));
    let probe = tokio::spawn(crate::relist::watch_for_time_travel(probe_api));
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let retried = ctx.clone();
    let issuer_triggers = issuer_feeds
        .triggers(controller.store())
        .inspect(move |key| retried.pacer().dependency_changed(key))
        .map(|key| cached_ref(&key));
    let consumer_triggers = read_by(consumer_changes, controller.store());
    let tokens = controller
        .reconcile_on(secret_triggers)
        .reconcile_on(consumer_triggers)
        .reconcile_on(issuer_triggers)
        .reconcile_on(rollout_triggers.map(|key| cached_ref(&key)))
        .reconcile_on(inventory_triggers.map(|key: ObjectRef<WorkspaceToken>| cached_ref(&key)))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| future::ready(()));
    let issuer_status = crate::issuer_controller::run(
        client,
        settings.namespace.clone(),
        settings.cluster_resource_namespace.clone(),
        shutdown,
    );
    future::join(tokens, issuer_status).await;
    gauge.abort();
    probe.abort();
}

/// The WorkspaceTokens whose `S` a change of consumers is about (all of them for
/// [`EVERY_SECRET`]).
fn read_by(
    changes: impl Stream<Item = (String, String)> + Send + 'static,
    tokens: Store<CachedToken>,
) -> impl Stream<Item = ObjectRef<CachedToken>> + Send + 'static {
    changes.flat_map(move |key| {
        let every = key == EVERY_SECRET;
        let (ns, secret) = key;
        let mounts = |wst: &CachedToken| {
            wst.namespace().as_deref() == Some(ns.as_str()) && wst.mounted_secret() == secret
        };
        let woken: Vec<_> = (tokens.state().iter())
            .filter(|wst| every || mounts(wst))
            .map(|wst| ObjectRef::from_obj(wst.as_ref()))
            .collect();
        futures::stream::iter(woken)
    })
}

/// The restart targets whose rollout may hold a Retiring version of `wst`.
fn waited_on(wst: &WorkspaceToken) -> &[crate::api::RestartTarget] {
    if wst.spec.rotation.hold_until.rollout_complete {
        &wst.spec.restart_targets
    } else {
        &[]
    }
}

/// What the cache drops from each WorkspaceToken: fields no step reads.
fn slim_token(wst: &mut WorkspaceToken) {
    wst.metadata.managed_fields = None;
    if let Some(annotations) = wst.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// `tokenwarden_tokens{ready}` and `tokenwarden_unmanaged_tokens` from the caches every 10 s:
/// no API call. Also forgets what was kept for WorkspaceTokens the cache no longer has (their
/// rollout watches, their inventory groups, the versions seen).
async fn count_ready_tokens(store: Store<CachedToken>, ctx: Arc<Context>) {
    loop {
        ctx.count_and_forget(&store);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// One pass over one WorkspaceToken: guard -> observe -> plan -> apply -> status -> pace.
/// It never fails: pacing decides when a pass that went wrong is tried again.
#[tracing::instrument(skip_all, fields(namespace = cached.namespace().unwrap_or_default(), name = cached.name_any()))]
async fn reconcile(cached: Arc<CachedToken>, ctx: Arc<Context>) -> Result<Action, Infallible> {
    let wst = Arc::new(cached.unpack());
    // Its uid's bits, parsed once by the cache: what the versions seen are kept by.
    let uid = cached.uid;
    // Read before the hold looks: a rewind after it is one this pass notices.
    let era = crate::relist::rewinds();
    if let Some(wait) = ctx.hold(&wst) {
        return Ok(Action::requeue(wait));
    }
    let timer = ctx.io.metrics.reconcile_started();
    let cached = ctx
        .io
        .index
        .secrets_of(&wst.namespace().unwrap_or_default(), &wst.name_any());
    let view = secrets::view(&wst, &cached);
    let now = crate::time::now();
    let issuer = ctx.io.issuers.for_token(&wst);
    let ns = wst.namespace().unwrap_or_default();
    let rollouts = ctx.rollouts.seen(&ns, waited_on(&wst));
    // Unknown (None) until every kind of workload was listed: status keeps what it said.
    let consumers = (ctx.consumers.is_ready())
        .then(|| (ctx.consumers).consumers_of(&ns, wst.spec.secret_name(&wst.name_any())));
    let resolved = issuer.as_ref().and_then(|i| i.as_ref().ok());
    let versions_seen = ctx.versions_seen(uid);
    let observed = |usage, inventory| {
        let watched = observe::Watched {
            rollouts: rollouts.clone(),
            consumers: consumers.clone(),
            inventory,
            versions_seen,
        };
        observe::observed(&wst, &view, issuer.as_ref(), watched, usage)
    };
    let inventory = |fresh: Option<Arc<crate::plan::Reading>>| {
        resolved.map(|i| {
            let mut input = ctx.inventory.input_for(&wst, i, now);
            if let Some(reading) = fresh {
                input.latest = Some(reading);
                input.fresh = true;
            }
            input
        })
    };
    let mut plan = plan::plan(&observed(None, inventory(None)), now);
    // holdUntil.idleFor: the plan cannot say whether a version is held before the platform
    // said when it was last used; ask, then plan again with the answer.
    let mut usage = None;
    if let Some(version) = plan.usage_query {
        let key = ObjectRef::from_obj(&*wst);
        let reading = match ctx.unanswered(&key, version) {
            Some(failed) => failed,
            None => {
                let questions =
                    apply::Questions::new(&ctx.io, &wst, issuer.as_ref(), &plan, &view, now);
                ctx.answered(key, questions.usage(version).await)
            }
        };
        usage = Some(reading);
        plan = plan::plan(&observed(usage.clone(), inventory(None)), now);
    }
    // The issuer inventory, when the group is due and this token may list it: list, keep the
    // listing for the group, then plan again with it.
    if let (Some(version), Some(resolved)) = (plan.inventory_query, resolved) {
        let group = Inventory::key(resolved, &wst);
        if ctx.inventory.claim(&group, now) {
            let questions =
                apply::Questions::new(&ctx.io, &wst, issuer.as_ref(), &plan, &view, now);
            let (listed_at, answer) = questions.inventory(version).await;
            let reading = ctx.keep_listing(&wst, resolved, listed_at, answer);
            plan = plan::plan(&observed(usage.clone(), inventory(Some(reading))), now);
        }
    }
    let waits = if plan.holds_rollouts() {
        waited_on(&wst)
    } else {
        &[]
    };
    ctx.rollouts
        .wait_on(&ObjectRef::from_obj(&*wst), &ns, waits);
    // A rewind of the cluster since `era` stops the plan before its next step (StaleView).
    let (journal, wrote) = apply::run(&ctx.io, &wst, issuer.as_ref(), &plan, &view, now, era).await;
    // The verification's listing is the group's inventory at this rotation, when the version
    // was minted by the issuer the token resolves to now (after a change of issuer it is
    // another platform's).
    if let (Some((answer, listed_at, minted_by)), Some(resolved)) =
        (journal.inventoried(), resolved)
        && minted_by == resolved.identity.uid
    {
        ctx.keep_listing(&wst, resolved, listed_at, answer.clone());
    }
    ctx.saw_versions(uid, &view, &wst);
    let quiet = ctx.quiet_retry(&wst, &journal);
    // The object as this pass left it: after its own writes (finalizer, mint intent), if any.
    let left_at = wrote
        .resource_version
        .clone()
        .or_else(|| wst.resource_version());
    let written = if crate::relist::rewinds() == era {
        write_status(&ctx, &wst, &plan, &journal, quiet, left_at.as_deref(), now).await
    } else {
        Err(Error::StaleView {
            operation: "write status",
        })
    };
    Ok(ctx.pace(&wst, &plan, journal, wrote, written, quiet, timer, now))
}

/// Writes the status this pass leaves behind; returns the object's resourceVersion when it
/// wrote, or why it could not. No status for a pass on a stale view (the next pass renders
/// it from what is really there, as after a crash), nor for an object whose finalizer went.
async fn write_status(
    ctx: &Context,
    wst: &WorkspaceToken,
    plan: &plan::Plan,
    journal: &Journal,
    quiet_retry: bool,
    expected: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>> {
    if journal.removed_finalizer() || quiet_retry {
        return Ok(None);
    }
    let api: Api<WorkspaceToken> =
        Api::namespaced(ctx.io.client.clone(), &wst.namespace().unwrap_or_default());
    let new_status = status::render(wst, plan, journal, now);
    if status::unchanged(wst, &new_status) {
        return Ok(None);
    }
    if !plan.steps.is_empty() {
        crate::failpoint::hit(crate::failpoint::BEFORE_STATUS);
    }
    status::write(&api, wst, new_status, expected).await
}

impl Context {
    /// Keeps a listing of `wst`'s workspace as its group's last, judged against the cluster
    /// as the caches show it now, and wakes the group's other WorkspaceTokens to read it.
    fn keep_listing(
        &self,
        wst: &WorkspaceToken,
        issuer: &crate::issuer::resolve::ResolvedIssuer,
        listed_at: chrono::DateTime<chrono::Utc>,
        answer: crate::plan::Answer,
    ) -> Arc<crate::plan::Reading> {
        let group = Inventory::key(issuer, wst);
        let judge = crate::inventory::Judge {
            tokens: &self.tokens,
            index: &self.io.index,
            issuers: &self.io.issuers,
            holders: &self.inventory.holders,
        };
        let reading = judge.reading(&group, issuer, listed_at, answer);
        let reading = self.inventory.record(group.clone(), reading);
        let me = ObjectRef::from_obj(wst);
        for member in self.inventory.holders.of(&group.workspace) {
            let of_the_group = (self.tokens.get(&cached_ref(&member)))
                .and_then(|m| self.io.issuers.for_token(&m.unpack())?.ok())
                .is_some_and(|theirs| theirs.identity.uid == group.issuer_uid);
            if member != me && of_the_group {
                // A closed channel means the controller is shutting down: nobody to wake.
                let _ = self.inventory_news.unbounded_send(member);
            }
        }
        reading
    }

    /// Whether pacing holds this pass back, and for how long.
    fn hold(&self, wst: &WorkspaceToken) -> Option<Duration> {
        // Before the first list of Secrets and of issuers completes, absence means nothing:
        // wait (the issuer CRDs must be installed: their watches say so in the log until they
        // are).
        if !self.io.index.is_ready() || !self.io.issuers.is_ready() {
            return Some(Duration::from_millis(500));
        }
        // While the Secrets or the WorkspaceTokens are listed again, and from the moment the
        // cluster was found gone back in time until every watch has listed it again, the
        // caches hold the world before next to the world after (after a restore of the
        // cluster, a status from the past beside Secrets from its future): nothing is planned
        // on that.
        let relisting = self.io.index.is_relisting() || self.inventory.holders.is_relisting();
        if relisting || !crate::relist::caught_up() {
            return Some(Duration::from_millis(500));
        }
        let secrets = (self.io.index)
            .resource_versions_of(&wst.namespace().unwrap_or_default(), &wst.name_any());
        let seen = Seen {
            resource_version: wst.metadata.resource_version.as_deref(),
            uid: wst.metadata.uid.as_deref(),
            secrets: &secrets,
        };
        let key = ObjectRef::from_obj(wst);
        self.pacer().hold(&key, &seen, Instant::now())
    }

    /// Whether the pass is redone quietly (a conflict, a busy platform). Not when the pass
    /// moved the world in a way status must record: a revocation at the platform (a pass that
    /// redoes it finds no token to authenticate with), a cutover or a restart (a pass that
    /// redoes it rolls the restart targets a second time).
    fn quiet_retry(&self, wst: &WorkspaceToken, journal: &Journal) -> bool {
        journal.failure.as_ref().is_some_and(Error::is_quiet_retry)
            && !journal.must_be_recorded()
            && self.pacer().retry_is_quiet(&ObjectRef::from_obj(wst))
    }

    /// Records what the pass wrote and how it ended; says a failure where people look
    /// unless it is a conflict redone quietly; returns when to look again.
    #[allow(clippy::too_many_arguments)]
    fn pace(
        &self,
        wst: &WorkspaceToken,
        plan: &plan::Plan,
        journal: Journal,
        mut wrote: Wrote,
        status: Result<Option<String>>,
        quiet_retry: bool,
        timer: ReconcileTimer,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Action {
        let key = ObjectRef::from_obj(wst);
        let at = Instant::now();
        let (status_rv, status_error) = match status {
            Ok(rv) => (rv, None),
            Err(e) => (None, Some(e)),
        };
        // Recorded whatever the status write did: the next pass must not plan on caches
        // that haven't seen this pass's Secrets.
        wrote.resource_version = status_rv.or(wrote.resource_version);
        let own_rv = wrote.resource_version.clone();
        let mut pacer = self.pacer();
        pacer.wrote(key.clone(), wrote, at);
        if journal.removed_finalizer() {
            pacer.finished(key.clone(), wst.uid().unwrap_or_default(), at);
        }
        if !plan.steps.is_empty() {
            let (steps, current) = (plan.steps.len(), plan.current);
            tracing::info!(steps, current, ready = plan.readiness.ready, "reconciled");
        }
        let apply_failed = journal.failure.is_some();
        let Some(failure) = journal.failure.as_ref().or(status_error.as_ref()) else {
            timer.finish(true);
            let next = pacer.ended(key, Ended::Succeeded(plan.requeue_after), None, at, 0.0);
            return action(next);
        };
        timer.finish(false);
        self.io.metrics.reconcile_failed(failure.reason());
        let jitter = rand::random::<f64>();
        if quiet_retry {
            return action(pacer.ended(key, Ended::QuietRetry, None, at, jitter));
        }
        // A retry under the cap that still wrote status (it revoked, cut over or restarted)
        // backs off like a failure, but is no news: it is redone like any quiet retry.
        let news = !failure.is_quiet_retry() || !pacer.retry_is_quiet(&key);
        let own_rv = own_rv.or_else(|| wst.resource_version());
        let next = pacer.ended(key.clone(), Ended::Failed, own_rv, at, jitter);
        let attempt = pacer.attempts(&key);
        drop(pacer);
        tracing::warn!(
            namespace = wst.namespace().unwrap_or_default(),
            name = wst.name_any(),
            reason = failure.reason(),
            error = %failure,
            attempt,
            "reconcile failed"
        );
        if apply_failed && news {
            apply::report_failure(&self.io, wst, plan, &journal, now);
        }
        action(next)
    }

    fn pacer(&self) -> std::sync::MutexGuard<'_, Pacer<ObjectRef<WorkspaceToken>>> {
        self.pacer.lock().expect("pacer lock")
    }
}

fn action(next: Next) -> Action {
    match next {
        Next::After(wait) => Action::requeue(wait),
        Next::OnChange => Action::await_change(),
    }
}

/// Never called: `reconcile` cannot fail (pacing decides what a failure means).
fn error_policy(_: Arc<CachedToken>, error: &Infallible, _: Arc<Context>) -> Action {
    match *error {}
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
}
