//! The apply side: runs a plan's steps in order, each checking what is there before it writes
//! (create-only for records, preconditions on what a write depends on), so a crash between
//! any two steps converges on the next pass. Stops at the first failure. Each step records
//! what it did in the pass's [`Journal`]; the writes the caches must show before the next
//! pass travel separately, as [`Writes`].

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::api::{IssuerIdentity, VersionState, WorkspaceToken};
use crate::contract::{ROTATE_ANNOTATION, ROTATE_REASON_ANNOTATION, TOKEN_KEY};
use crate::events::{EventPublisher, EventType};
use crate::issuer::caches::IssuerCaches;
use crate::issuer::client::HttpClient;
use crate::issuer::resolve::{IssuerProblem, ResolvedIssuer};
use crate::journal::{Done, Journal, TokenFacts};
use crate::logging::{AuditRecord, audit};
use crate::metrics::Metrics;
use crate::pacing::Wrote;
use crate::plan::{Plan, Step};
use crate::secrets::{SecretIndex, SecretsView};
use crate::token::Token;
use crate::{Error, Result};

mod finalizer;
mod inventory;
mod mounted;
mod platform;
mod provenance;
mod records;
mod restart;
mod revoke;
mod usage;

/// What the apply side may touch: the API server, the Secret cache (to see every token the
/// cluster holds), Events, metrics and the platforms' connection pool.
pub struct Handle {
    pub client: Client,
    pub index: SecretIndex,
    pub events: EventPublisher,
    pub metrics: Metrics,
    /// One connection pool for every platform (HTTP issuer).
    pub http: HttpClient,
    /// The TokenIssuers and ClusterTokenIssuers, for the versions they minted.
    pub issuers: IssuerCaches,
    /// The uids whose finalizer a pass of ours is removing: their deletion is said by that
    /// pass (the watch's delete may come before the pass ends).
    pub finalizing: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

pub(crate) struct Applier<'a> {
    io: &'a Handle,
    wst: &'a WorkspaceToken,
    plan: &'a Plan,
    view: &'a SecretsView,
    /// The issuer the WorkspaceToken names, resolved now; None: it mints locally.
    issuer: Option<&'a std::result::Result<ResolvedIssuer, IssuerProblem>>,
    ns: String,
    name: String,
    secrets: Api<Secret>,
    now: DateTime<Utc>,
    journal: Journal,
    /// What the caches must show before the next pass plans.
    writes: Wrote,
    /// `S` when it is ours but missing from the label-selected cache.
    unlabelled_mounted: Option<Arc<Secret>>,
    /// The SHA-256 of every token this pass holds or writes: cut from any error text.
    tokens_in_play: std::sync::Mutex<BTreeSet<String>>,
    /// The versioned Secrets this pass created, with the token each holds: `S` is written
    /// from here rather than read back with a GET.
    written: std::collections::HashMap<String, Token>,
    /// How many times the cluster had gone back in time when the pass observed it
    /// (`relist::rewinds`): another count stops the plan before its next step.
    era: u64,
}

/// Publishes the plan's Warnings, then runs its steps until one fails. Returns what the pass
/// did, and what it wrote (the caches must show it before the next pass plans: planning on a
/// cache that hasn't seen our writes would mint a version we already minted).
pub async fn run(
    io: &Handle,
    wst: &WorkspaceToken,
    issuer: Option<&std::result::Result<ResolvedIssuer, IssuerProblem>>,
    plan: &Plan,
    view: &SecretsView,
    now: DateTime<Utc>,
    era: u64,
) -> (Journal, Wrote) {
    let mut applier = Applier::new(io, wst, issuer, plan, view, now);
    applier.era = era;
    for warning in &plan.warnings {
        let message = warning.message.clone();
        applier.event(EventType::Warning, warning.reason, "Reconcile", message);
    }
    if let Err(e) = applier.all_steps().await {
        applier.failed(e);
    }
    if applier.journal.cut_over() {
        for warning in &plan.after_cutover {
            let message = warning.message.clone();
            applier.event(EventType::Warning, warning.reason, "Cutover", message);
        }
    }
    (applier.journal, applier.writes)
}

/// The questions a plan asks the platform before it is final (it is planned again with the
/// answer): asked as the pass would, with its view of the cluster.
pub struct Questions<'a> {
    applier: Applier<'a>,
}

impl<'a> Questions<'a> {
    pub fn new(
        io: &'a Handle,
        wst: &'a WorkspaceToken,
        issuer: Option<&'a std::result::Result<ResolvedIssuer, IssuerProblem>>,
        plan: &'a Plan,
        view: &'a SecretsView,
        now: DateTime<Utc>,
    ) -> Self {
        Questions {
            applier: Applier::new(io, wst, issuer, plan, view, now),
        }
    }

    /// `holdUntil.idleFor`: when the platform last saw `version`'s token used, listing with
    /// the current token (never the judged one, whose use this would otherwise be).
    pub async fn usage(&self, version: u32) -> crate::plan::UsageReading {
        let applier = &self.applier;
        let usage = applier.usage_of(version).await;
        if let Err(why) = &usage {
            tracing::warn!(
                namespace = %applier.ns, name = %applier.name, version, reason = %why,
                "could not read a retiring version's use; it stays held"
            );
        }
        crate::plan::UsageReading { version, usage }
    }

    /// The issuer inventory: the workspace's tokens as the platform lists them to the token
    /// of `version` (the current one). Returns when it was asked for, and the answer.
    pub async fn inventory(&self, version: u32) -> (DateTime<Utc>, crate::plan::Answer) {
        let applier = &self.applier;
        let (asked, answer) = applier.inventory_with(version).await;
        if let crate::plan::Answer::Failed(failure) = &answer {
            tracing::warn!(
                namespace = %applier.ns, name = %applier.name, version, reason = %failure.why,
                "could not list the workspace's tokens at the platform"
            );
        }
        (asked, answer)
    }
}

/// Says that a pass failed, where people look: a Warning event on the WorkspaceToken and a
/// failure line in the audit trail. The controller calls it for every failure it does not
/// redo quietly.
pub fn report_failure(
    io: &Handle,
    wst: &WorkspaceToken,
    plan: &Plan,
    journal: &Journal,
    now: DateTime<Utc>,
) {
    let Some(error) = &journal.failure else {
        return;
    };
    let version = plan.current;
    let trace_id = version
        .map(|v| trace_id_of(plan, journal, v).unwrap_or_else(new_trace_id))
        .unwrap_or_default();
    let (event_name, reason) = match error {
        Error::SecretConflict { .. } => ("conflict", "SecretConflict"),
        _ => ("failed", error.reason()),
    };
    audit_line(wst, now, event_name, "failure", version, &trace_id, None);
    io.events.publish(
        wst,
        EventType::Warning,
        reason,
        "Reconcile",
        error.to_string(),
    );
}

/// A WorkspaceToken gone without a deletion pass of ours (it had no finalizer of ours, or
/// someone removed it). A local token under `Revoke`: the garbage collector deletes its
/// Secrets by their ownerReferences, and with them its tokens: a `revoked` `success` line per
/// live version. Any other: its platform tokens were never revoked (or `Retain` never released
/// the Secrets): a `revoked` `failure` line per live version and a Warning naming their
/// prefixes. From the watch's delete: an operator that was down meanwhile misses it.
pub fn audit_deleted(io: &Handle, wst: &WorkspaceToken, now: DateTime<Utc>) {
    let uid = wst.uid().unwrap_or_default();
    if io.finalizing.lock().expect("finalizing").remove(&uid) {
        return;
    }
    let live: Vec<_> = (wst.status.iter())
        .flat_map(|s| &s.versions)
        .filter(|v| v.state != VersionState::Revoked)
        .collect();
    let collected = !crate::plan::deletion_needs_a_pass(&wst.spec, wst.status.as_ref());
    let status = if collected { "success" } else { "failure" };
    for v in &live {
        let trace_id = v.trace_id.as_deref().unwrap_or_default();
        let prefix = v.token_prefix.as_deref();
        audit_line(
            wst,
            now,
            "revoked",
            status,
            Some(v.version),
            trace_id,
            prefix,
        );
    }
    if collected || live.is_empty() {
        return;
    }
    let versions: Vec<String> = (live.iter())
        .map(|v| {
            format!(
                "v{} ({})",
                v.version,
                v.token_prefix.as_deref().unwrap_or("?")
            )
        })
        .collect();
    let note = format!(
        "deleted without tokenwarden's finalizer: {} not revoked at its issuer and its Secrets \
         not kept; revoke them there by hand",
        versions.join(", ")
    );
    (io.events).publish(
        wst,
        EventType::Warning,
        "DeletedWithoutRevoking",
        "Delete",
        note,
    );
}

/// One line of the audit trail about `wst` (and `version` of its token, with `prefix`).
fn audit_line(
    wst: &WorkspaceToken,
    at: DateTime<Utc>,
    event: &str,
    status: &str,
    version: Option<u32>,
    trace_id: &str,
    prefix: Option<&str>,
) {
    audit(&AuditRecord {
        timestamp: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        trace_id,
        workspace_id: &wst.spec.workspace_id,
        user_id: wst.spec.user_id.as_deref(),
        profile_id: wst.spec.profile_id.as_deref(),
        token_version: version.map(|v| format!("v{v}")),
        event,
        status,
        namespace: &wst.namespace().unwrap_or_default(),
        name: &wst.name_any(),
        token_prefix: prefix,
        reason: rotate_reason(wst, trace_id).as_deref(),
    });
}

/// The reason given with the rotation request whose trace this is: one line of at most 256
/// characters, control characters replaced.
fn rotate_reason(wst: &WorkspaceToken, trace_id: &str) -> Option<String> {
    let annotations = wst.annotations();
    if annotations.get(ROTATE_ANNOTATION).map(String::as_str) != Some(trace_id) {
        return None;
    }
    let reason = annotations.get(ROTATE_REASON_ANNOTATION)?;
    Some(
        reason
            .chars()
            .take(256)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    )
}

/// The trace id of `version`: minted in this pass, or recorded on its `S-vN`.
fn trace_id_of(plan: &Plan, journal: &Journal, version: u32) -> Option<String> {
    journal
        .token(version)
        .map(|t| t.trace_id.clone())
        .or_else(|| plan.versions.get(&version)?.trace_id.clone())
}

impl<'a> Applier<'a> {
    fn new(
        io: &'a Handle,
        wst: &'a WorkspaceToken,
        issuer: Option<&'a std::result::Result<ResolvedIssuer, IssuerProblem>>,
        plan: &'a Plan,
        view: &'a SecretsView,
        now: DateTime<Utc>,
    ) -> Self {
        let ns = wst.namespace().unwrap_or_default();
        Applier {
            io,
            wst,
            plan,
            view,
            issuer,
            secrets: Api::namespaced(io.client.clone(), &ns),
            ns,
            name: wst.name_any(),
            now,
            journal: Journal::default(),
            writes: Wrote::default(),
            unlabelled_mounted: None,
            tokens_in_play: std::sync::Mutex::new(view.token_hashes()),
            written: std::collections::HashMap::new(),
            era: crate::relist::rewinds(),
        }
    }
}

impl Applier<'_> {
    async fn all_steps(&mut self) -> Result<()> {
        self.check_mounted_name_free().await?;
        for step in &self.plan.steps {
            // The cluster went back in time since the pass observed it: the rest of the plan
            // is for a world that is gone (a revocation has no precondition to fail on).
            if crate::relist::rewinds() != self.era {
                return Err(Error::StaleView {
                    operation: "apply the plan",
                });
            }
            self.step(step).await?;
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::AddFinalizer => self.add_finalizer().await,
            Step::Mint { version, reason } => self.mint(*version, reason.as_str()).await,
            Step::RestoreVersioned { version } => self.restore_versioned(*version).await,
            Step::WriteMounted {
                current,
                previous,
                why,
            } => self.write_mounted(*current, *previous, *why).await,
            Step::RestartTargets { version } => self.restart_targets(*version).await,
            Step::Revoke { version, reason } => self.revoke(*version, reason.as_str()).await,
            Step::Verify { version } => self.verify(*version).await,
            Step::ReclaimOrphans { since } => self.reclaim_orphans(*since).await,
            Step::RevokeIfUsed { version } => self.revoke_if_used(*version).await,
            Step::RevokeUnmanaged {
                id,
                prefix,
                created_at,
            } => self.revoke_unmanaged(id, prefix, *created_at).await,
            Step::SyncMetadata { secret } => self.sync_metadata(*secret).await,
            Step::ReleaseSecrets => self.release_secrets().await,
            Step::DeleteMounted => self.delete_mounted().await,
            Step::RemoveFinalizer => self.remove_finalizer().await,
        }
    }

    fn mounted_name(&self) -> String {
        self.wst.spec.secret_name(&self.name).to_string()
    }

    fn record(&mut self, done: Done) {
        self.journal.record(done);
    }

    fn wrote_secret(&mut self, name: String, resource_version: Option<String>) {
        self.writes.secrets.push((name, resource_version));
    }

    /// Reads a plaintext token with a GET (the cache holds hashes only), unless this pass
    /// wrote that Secret itself.
    async fn read_token(&self, secret_name: &str, key: &'static str) -> Result<Token> {
        if let Some(token) = self.written.get(secret_name).filter(|_| key == TOKEN_KEY) {
            return Ok(token.clone());
        }
        let secret = self
            .secrets
            .get(secret_name)
            .await
            .map_err(Error::kube("read Secret"))?;
        let value = crate::secrets::take_string(secret, key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::MissingTokenData {
                name: secret_name.to_string(),
                key,
            })?;
        let token = Token::from_plaintext(value);
        self.in_play(&token);
        Ok(token)
    }

    /// Remembers a token this pass holds, so an error that quotes it is cut before it is
    /// shown anywhere.
    fn in_play(&self, token: &Token) {
        self.tokens_in_play
            .lock()
            .expect("tokens in play")
            .insert(token.sha256_hex());
    }

    fn trace_id_of(&self, version: u32) -> String {
        trace_id_of(self.plan, &self.journal, version).unwrap_or_else(new_trace_id)
    }

    /// The trace id of the pass: the current version's.
    fn current_trace_id(&self) -> String {
        self.plan
            .current
            .map(|c| self.trace_id_of(c))
            .unwrap_or_default()
    }

    fn audit(
        &self,
        event: &str,
        status: &str,
        version: Option<u32>,
        trace_id: &str,
        prefix: Option<&str>,
    ) {
        audit_line(self.wst, self.now, event, status, version, trace_id, prefix);
    }

    /// A step that succeeded, said where people look: its audit line (`audit_event`, about
    /// `version` and the token with `prefix`) and a Normal Event.
    #[allow(clippy::too_many_arguments)]
    fn succeeded(
        &self,
        audit_event: &str,
        version: u32,
        trace_id: &str,
        prefix: Option<&str>,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.audit(audit_event, "success", Some(version), trace_id, prefix);
        self.event(EventType::Normal, reason, action, note);
    }

    /// One Event per step; posted in the background, so the reconcile does not wait.
    fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        self.io
            .events
            .publish(self.wst, type_, reason, action, note);
    }

    /// Records the failure that stopped the pass, every token it held cut from its text.
    fn failed(&mut self, error: Error) {
        let error = error.redacted(&self.tokens_in_play.lock().expect("tokens in play"));
        if error.is_stale_view() {
            tracing::info!(error = %error, "a write met a newer object; redoing the pass");
        }
        self.journal.failure = Some(error);
    }
}

impl TokenFacts {
    /// What status may know of a token written into `S-vN`: its hash and prefix, and the
    /// issuer that minted it.
    fn of(token: &Token, trace_id: &str, issuer: Option<IssuerIdentity>) -> Self {
        TokenFacts {
            token_sha256: token.sha256_hex(),
            token_prefix: token.prefix(),
            trace_id: trace_id.to_string(),
            issuer_token_id: None,
            issuer,
        }
    }
}

/// A W3C trace id: 16 random bytes, lowercase hex.
pub(crate) fn new_trace_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
