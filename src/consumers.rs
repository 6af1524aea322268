//! Who reads a WorkspaceToken's Secret `S`: the workloads of its namespace whose pod template
//! references it (`status.consumers`), and how, since how decides whether a rotated token
//! reaches them without a restart.
//!
//! Six watches (Deployments, StatefulSets, DaemonSets, CronJobs, Jobs and bare Pods) feed one
//! index. Each object is reduced to the Secret references its pod spec holds as it arrives and
//! then dropped: memory grows with the references, never with pod specs or workload objects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Pod, PodSpec, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// The workload kinds whose pod templates are read, in the order consumers are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsumerKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
    Job,
    Pod,
}

impl ConsumerKind {
    pub const ALL: [ConsumerKind; 6] = [
        ConsumerKind::Deployment,
        ConsumerKind::StatefulSet,
        ConsumerKind::DaemonSet,
        ConsumerKind::CronJob,
        ConsumerKind::Job,
        ConsumerKind::Pod,
    ];

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerKind::Deployment => "Deployment",
            ConsumerKind::StatefulSet => "StatefulSet",
            ConsumerKind::DaemonSet => "DaemonSet",
            ConsumerKind::CronJob => "CronJob",
            ConsumerKind::Job => "Job",
            ConsumerKind::Pod => "Pod",
        }
    }
}

/// How a pod reads a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// A `secret` volume mounted whole.
    Volume,
    /// A `projected` volume with a `secret` source, mounted whole.
    Projected,
    /// `env[].valueFrom.secretKeyRef`.
    Env,
    /// `envFrom[].secretRef`.
    EnvFrom,
    /// A `subPath` or `subPathExpr` mount of a volume that reads the Secret.
    SubPath,
}

impl Via {
    /// The name `status.consumers[].via` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Volume => "volume",
            Via::Projected => "projected",
            Via::Env => "env",
            Via::EnvFrom => "envFrom",
            Via::SubPath => "subPath",
        }
    }

    /// Whether a running pod sees a rotated token: the kubelet rewrites the files of a
    /// mounted (projected) volume, but environment variables are set once at container start
    /// and a subPath mount is a bind mount of the file as it was, so those keep the old token
    /// until the pod restarts.
    pub fn follows_rotation(self) -> bool {
        matches!(self, Via::Volume | Via::Projected)
    }
}

/// One workload reading a Secret one way (a workload reading it two ways is two consumers).
/// Field order is sort order: lists of consumers come out sorted and stable, so the status
/// written from them does not churn.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Consumer {
    pub kind: ConsumerKind,
    pub name: String,
    pub via: Via,
}

/// Every Secret `spec` reads and how, over its containers, initContainers and
/// ephemeralContainers: `env[].valueFrom.secretKeyRef` (`Env`), `envFrom[].secretRef`
/// (`EnvFrom`), and the volumes of a Secret (`volumes[].secret`, `Volume`) or with a Secret
/// source (`volumes[].projected.sources[].secret`, `Projected`).
///
/// A volume is judged by its mounts, one at a time, since the kubelet updates a mount or not
/// mount by mount:
/// - a mount with a non-empty `subPath` or `subPathExpr` reads via `SubPath` (a bind mount
///   of the file as it was: never updated);
/// - a mount of the whole volume reads via `Volume` (`Projected`);
/// - a volume no container mounts still reads via `Volume` (`Projected`): the pod asks the
///   kubelet for the Secret (it does not start without it unless `optional`), and no copy of
///   it goes stale.
///
/// So a pod mounting one volume whole in a container and by subPath in another reads the
/// Secret both ways. Mounts of volumes that hold no Secret are ignored, and so are
/// `imagePullSecrets` (they are for the kubelet's registry logins, not a pod's own reads).
pub fn reads(spec: &PodSpec) -> BTreeSet<(String, Via)> {
    let volumes = secret_volumes(spec);
    let mut found: BTreeSet<(&str, Via)> = BTreeSet::new();
    let mut mounted = HashSet::new();
    for container in containers(spec) {
        let env = container.env.iter();
        let env = env.filter_map(|var| var.value_from.as_ref()?.secret_key_ref.as_ref());
        found.extend(env.map(|selector| (selector.name.as_str(), Via::Env)));
        let env_from = container
            .env_from
            .iter()
            .filter_map(|s| s.secret_ref.as_ref());
        found.extend(env_from.map(|source| (source.name.as_str(), Via::EnvFrom)));
        for mount in container.mounts {
            let Some(secrets) = volumes.get(mount.name.as_str()) else {
                continue;
            };
            mounted.insert(mount.name.as_str());
            let sub_path = has_sub_path(mount);
            let via = |whole| if sub_path { Via::SubPath } else { whole };
            found.extend(secrets.iter().map(|&(secret, whole)| (secret, via(whole))));
        }
    }
    let unmounted = volumes.iter().filter(|(name, _)| !mounted.contains(*name));
    found.extend(unmounted.flat_map(|(_, secrets)| secrets.iter().copied()));
    let named = found.into_iter().filter(|(secret, _)| !secret.is_empty());
    named
        .map(|(secret, via)| (secret.to_string(), via))
        .collect()
}

/// `subPath: ""` is no subPath (the API server treats it so).
fn has_sub_path(mount: &VolumeMount) -> bool {
    let set = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.is_empty());
    set(&mount.sub_path) || set(&mount.sub_path_expr)
}

/// The volumes that read a Secret, by name: each Secret it reads and how, when mounted whole.
fn secret_volumes(spec: &PodSpec) -> HashMap<&str, Vec<(&str, Via)>> {
    let mut volumes = HashMap::new();
    for volume in spec.volumes.iter().flatten() {
        let mut secrets = Vec::new();
        if let Some(name) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            secrets.push((name, Via::Volume));
        }
        let projected = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        for source in projected.filter_map(|s| s.secret.as_ref()) {
            secrets.push((source.name.as_str(), Via::Projected));
        }
        if !secrets.is_empty() {
            volumes.insert(volume.name.as_str(), secrets);
        }
    }
    volumes
}

/// What one container of any sort (regular, init, ephemeral) says about Secrets.
struct ContainerReads<'a> {
    env: &'a [EnvVar],
    env_from: &'a [EnvFromSource],
    mounts: &'a [VolumeMount],
}

impl<'a> ContainerReads<'a> {
    fn new(
        env: &'a Option<Vec<EnvVar>>,
        env_from: &'a Option<Vec<EnvFromSource>>,
        mounts: &'a Option<Vec<VolumeMount>>,
    ) -> Self {
        ContainerReads {
            env: env.as_deref().unwrap_or_default(),
            env_from: env_from.as_deref().unwrap_or_default(),
            mounts: mounts.as_deref().unwrap_or_default(),
        }
    }
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerReads<'_>> {
    let regular = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let regular = regular.map(|c| ContainerReads::new(&c.env, &c.env_from, &c.volume_mounts));
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    let ephemeral = ephemeral.map(|c| ContainerReads::new(&c.env, &c.env_from, &c.volume_mounts));
    regular.chain(ephemeral)
}

/// A watched kind: where its pod spec is, and when an object of it is not a consumer of its own.
pub trait Workload:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + 'static
{
    const KIND: ConsumerKind;

    /// The pod spec this object runs pods from, or None when it is no consumer of its own:
    /// its pods are counted through its controller, or it will run no pod again.
    fn pod_spec(&self) -> Option<&PodSpec>;
}

impl Workload for Deployment {
    const KIND: ConsumerKind = ConsumerKind::Deployment;
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Workload for StatefulSet {
    const KIND: ConsumerKind = ConsumerKind::StatefulSet;
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Workload for DaemonSet {
    const KIND: ConsumerKind = ConsumerKind::DaemonSet;
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Workload for CronJob {
    const KIND: ConsumerKind = ConsumerKind::CronJob;
    fn pod_spec(&self) -> Option<&PodSpec> {
        let job = self.spec.job_template.spec.as_ref()?;
        job.template.spec.as_ref()
    }
}

/// A Job of a CronJob is counted through its CronJob (which outlives it and whose template
/// the next run uses). A finished Job (a `Complete` or `Failed` condition) runs no pod again:
/// it reads nothing any more, and a restart warning for it would be noise.
impl Workload for Job {
    const KIND: ConsumerKind = ConsumerKind::Job;
    fn pod_spec(&self) -> Option<&PodSpec> {
        let of_a_cron_job = controller(self).is_some_and(|o| {
            o.kind == "CronJob" && o.api_version.split('/').next() == Some("batch")
        });
        let conditions = self
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten());
        let finished = conditions
            .filter(|c| c.status == "True")
            .any(|c| c.type_ == "Complete" || c.type_ == "Failed");
        if of_a_cron_job || finished {
            return None;
        }
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

/// Only a bare Pod is a consumer of its own: a Pod with a controller (a ReplicaSet, Job,
/// StatefulSet, DaemonSet, or any other) is counted through that controller's template, or,
/// when the controller is a kind not watched, not at all: its name changes with every pod.
/// A Pod that has terminated (`Succeeded`, `Failed`) reads nothing any more.
impl Workload for Pod {
    const KIND: ConsumerKind = ConsumerKind::Pod;
    fn pod_spec(&self) -> Option<&PodSpec> {
        let phase = self.status.as_ref().and_then(|s| s.phase.as_deref());
        let terminated = matches!(phase, Some("Succeeded" | "Failed"));
        if controller(self).is_some() || terminated {
            return None;
        }
        self.spec.as_ref()
    }
}

fn controller(object: &impl Resource) -> Option<&OwnerReference> {
    let mut owners = object.meta().owner_references.iter().flatten();
    owners.find(|o| o.controller == Some(true))
}

/// All the index keeps of one object: where it is and what it reads (empty: nothing, or it
/// is no consumer of its own).
struct Seen {
    namespace: String,
    name: String,
    reads: BTreeSet<(String, Via)>,
}

impl Seen {
    fn of<K: Workload>(object: &K) -> Option<Seen> {
        Some(Seen {
            namespace: object.namespace()?,
            name: object.meta().name.clone()?,
            reads: (object.pod_spec().map(reads).unwrap_or_default())
                .into_iter()
                .take(MAX_READS)
                .collect(),
        })
    }
}

/// At most this many (Secret, via) pairs kept per workload: whoever may create workloads must
/// not be able to grow the operator's memory by more than a few KiB per object.
const MAX_READS: usize = 64;

/// (namespace, Secret name): a Secret whose consumers changed.
pub type SecretKey = (String, String);

/// The change that concerns every Secret: the index became ready.
pub const EVERY_SECRET: SecretKey = (String::new(), String::new());
type Reads = BTreeSet<(String, Via)>;

static NOTHING: Reads = BTreeSet::new();

/// What every workload of the watched namespaces reads, fed by [`run`]'s watches: per
/// namespace, per (kind, name), only the set of (Secret, via) it reads. A workload that reads
/// no Secret is not stored at all.
#[derive(Clone, Default)]
pub struct ConsumerIndex {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    by_namespace: HashMap<String, BTreeMap<(ConsumerKind, String), Reads>>,
    /// The kinds being relisted, each with the stored workloads seen since its `Init`: at
    /// `InitDone`, the stored workloads of that kind not seen are gone.
    relisting: HashMap<ConsumerKind, HashSet<(String, String)>>,
    /// The kinds whose first list completed.
    listed: BTreeSet<ConsumerKind>,
    /// The kinds whose list the API server forbade, until a list of them succeeds.
    forbidden: BTreeSet<ConsumerKind>,
}

impl ConsumerIndex {
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().expect("consumer index lock")
    }

    /// The workloads of `namespace` that read Secret `secret`, one per way they read it,
    /// sorted by kind, name and via.
    pub fn consumers_of(&self, namespace: &str, secret: &str) -> Vec<Consumer> {
        let state = self.state();
        let Some(workloads) = state.by_namespace.get(namespace) else {
            return Vec::new();
        };
        let mut consumers = Vec::new();
        for ((kind, name), reads) in workloads {
            for (_, via) in reads.iter().filter(|(s, _)| s == secret) {
                consumers.push(Consumer {
                    kind: *kind,
                    name: name.clone(),
                    via: *via,
                });
            }
        }
        consumers // in (kind, name, via) order: the map's, then the set's
    }

    /// Whether every kind has been listed once (or is forbidden): before that, a workload
    /// missing from the index may just not have been seen yet.
    pub fn is_ready(&self) -> bool {
        let state = self.state();
        let known =
            |kind: &ConsumerKind| state.listed.contains(kind) || state.forbidden.contains(kind);
        ConsumerKind::ALL.iter().all(known)
    }

    /// Applies one watch event of kind `K`, reducing its object to what it reads first;
    /// returns the Secrets whose consumers changed (a workload added, gone, or reading them
    /// another way). `Init` starts a relist of that kind: the old entries serve until
    /// `InitDone`, which drops those not listed again and reports what they read.
    pub fn apply<K: Workload>(&self, event: watcher::Event<K>) -> BTreeSet<SecretKey> {
        let kind = K::KIND;
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => Seen::of(&object)
                .map(|seen| self.state().put(kind, seen))
                .unwrap_or_default(),
            watcher::Event::Delete(object) => Seen::of(&object)
                .map(|seen| self.state().remove(kind, seen.namespace, seen.name))
                .unwrap_or_default(),
            watcher::Event::Init => {
                self.state().relisting.insert(kind, HashSet::new());
                BTreeSet::new()
            }
            watcher::Event::InitDone => self.state().relisted(kind),
        }
    }

    /// A failed list or watch of kind `K` (the watcher retries it with backoff); returns the
    /// Secrets whose consumers changed.
    ///
    /// A list the API server forbids (RBAC may not grant every kind, pods least of all) is not
    /// fixed by retrying soon, and must not keep [`ConsumerIndex::is_ready`] false for ever:
    /// the kind counts as listed with nothing in it, what it held is dropped (unknown now,
    /// not kept stale), and a warning says so once, until a later list of it succeeds.
    /// Any other error keeps the entries, and is logged each time, as the Secret watch does.
    pub fn failed<K: Workload>(&self, error: &watcher::Error) -> BTreeSet<SecretKey> {
        let kind = K::KIND;
        if !is_forbidden(error) {
            tracing::warn!(%error, kind = kind.as_str(), "workload watch failed; retrying");
            return BTreeSet::new();
        }
        let mut state = self.state();
        if state.forbidden.insert(kind) {
            tracing::warn!(%error, kind = kind.as_str(),
                "listing this kind is forbidden: status.consumers leaves it out until RBAC grants list and watch");
        }
        state.relisting.remove(&kind);
        state.drop_where(kind, |_, _| true)
    }
}

impl State {
    /// Stores what a workload reads now (or forgets it, when that is nothing), and during a
    /// relist of its kind notes it as listed again.
    fn put(&mut self, kind: ConsumerKind, seen: Seen) -> BTreeSet<SecretKey> {
        let Seen {
            namespace,
            name,
            reads,
        } = seen;
        if reads.is_empty() {
            return self.remove(kind, namespace, name);
        }
        if let Some(listed) = self.relisting.get_mut(&kind) {
            listed.insert((namespace.clone(), name.clone()));
        }
        let workloads = self.by_namespace.entry(namespace.clone()).or_default();
        let key = (kind, name);
        let changed = changed_secrets(&namespace, workloads.get(&key).unwrap_or(&NOTHING), &reads);
        if !changed.is_empty() {
            workloads.insert(key, reads);
        }
        changed
    }

    fn remove(
        &mut self,
        kind: ConsumerKind,
        namespace: String,
        name: String,
    ) -> BTreeSet<SecretKey> {
        let before = self.take(kind, &namespace, &name).unwrap_or_default();
        changed_secrets(&namespace, &before, &NOTHING)
    }

    fn take(&mut self, kind: ConsumerKind, namespace: &str, name: &str) -> Option<Reads> {
        let workloads = self.by_namespace.get_mut(namespace)?;
        let reads = workloads.remove(&(kind, name.to_string()));
        if workloads.is_empty() {
            self.by_namespace.remove(namespace);
        }
        reads
    }

    /// The end of a list of `kind`: what was stored but not listed again is gone.
    fn relisted(&mut self, kind: ConsumerKind) -> BTreeSet<SecretKey> {
        let seen = self.relisting.remove(&kind).unwrap_or_default();
        self.listed.insert(kind);
        if self.forbidden.remove(&kind) {
            tracing::info!(kind = kind.as_str(), "listing this kind is allowed again");
        }
        self.drop_where(kind, |namespace, name| {
            !seen.contains(&(namespace.to_string(), name.to_string()))
        })
    }

    /// Drops the workloads of `kind` that `gone` picks; returns the Secrets they read.
    fn drop_where(
        &mut self,
        kind: ConsumerKind,
        gone: impl Fn(&str, &str) -> bool,
    ) -> BTreeSet<SecretKey> {
        let mut changed = BTreeSet::new();
        self.by_namespace.retain(|namespace, workloads| {
            workloads.retain(|(k, name), reads| {
                let keep = *k != kind || !gone(namespace, name);
                if !keep {
                    changed.extend(changed_secrets(namespace, reads, &NOTHING));
                }
                keep
            });
            !workloads.is_empty()
        });
        changed
    }
}

/// The Secrets read one way in `before` or `after` but not the same way in both.
fn changed_secrets(namespace: &str, before: &Reads, after: &Reads) -> BTreeSet<SecretKey> {
    before
        .symmetric_difference(after)
        .map(|(secret, _)| (namespace.to_string(), secret.clone()))
        .collect()
}

/// Whether the API server refused a list or watch for want of permission.
fn is_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => {
            matches!(e, kube::Error::Api(status) if status.is_forbidden())
        }
        watcher::Error::WatchError(status) => status.is_forbidden(),
        watcher::Error::NoResourceVersion => false,
    }
}

/// The index and its watches: Deployments, StatefulSets and DaemonSets (apps/v1), CronJobs
/// and Jobs (batch/v1) and Pods (v1), in `namespace` or in every namespace. The stream yields
/// each (namespace, Secret) whose consumers changed, so the WorkspaceTokens whose `S` it is
/// can be reconciled; the index fills only while the stream is polled. ReplicaSets are not
/// watched: their Deployment is.
pub fn run(
    client: Client,
    namespace: Option<&str>,
) -> (
    ConsumerIndex,
    impl Stream<Item = SecretKey> + Send + 'static,
) {
    let index = ConsumerIndex::default();
    let watches = [
        watch::<Deployment>(&client, namespace, &index),
        watch::<StatefulSet>(&client, namespace, &index),
        watch::<DaemonSet>(&client, namespace, &index),
        watch::<CronJob>(&client, namespace, &index),
        watch::<Job>(&client, namespace, &index),
        watch::<Pod>(&client, namespace, &index),
    ];
    (index, futures::stream::select_all(watches))
}

/// One kind's watch into the index. Each object is reduced to what it reads in
/// [`ConsumerIndex::apply`], the step right after the watcher's: nothing keeps it longer.
fn watch<K: Workload>(
    client: &Client,
    namespace: Option<&str>,
    index: &ConsumerIndex,
) -> BoxStream<'static, SecretKey> {
    let api: Api<K> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let index = index.clone();
    crate::relist::watcher(api, watcher::Config::default().page_size(500))
        .default_backoff()
        .flat_map(move |event| {
            let was_ready = index.is_ready();
            let mut changed = match event {
                Ok(event) => index.apply(event),
                Err(error) => index.failed::<K>(&error),
            };
            // Until every kind was listed, consumers were unknown, not absent: once they are
            // known, every WorkspaceToken looks again (its S may be read by nobody now).
            if !was_ready && index.is_ready() {
                changed.insert(EVERY_SECRET);
            }
            futures::stream::iter(changed)
        })
        .boxed()
}

#[cfg(test)]
#[path = "consumers_tests.rs"]
mod tests;
