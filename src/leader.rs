//! Leader election with a `coordination.k8s.io` Lease, the way client-go does it: only the
//! holder reconciles; a standby takes over once the holder stops renewing for a lease
//! duration. Expiry is judged by the local clock since the record last changed (not by the
//! holder's timestamps), so clock skew between replicas doesn't matter.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

pub const LEASE_NAME: &str = "tokenwarden-leader";

/// A Lease record as seen: its holder and last renewal.
type Record = (Option<String>, Option<MicroTime>);

pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
    lease_duration: Duration,
    /// The last record seen (holder, renewTime) and when we first saw it.
    observed: Option<(Record, Instant)>,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Someone else holds a live lease.
    Standby {
        holder: String,
    },
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        identity: String,
        lease_duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            identity,
            lease_duration,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often the holder renews and a standby retries.
    pub fn retry_period(&self) -> Duration {
        self.lease_duration / 3
    }

    /// Acquires or renews the lease once.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Role, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec_as_holder(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Role::Leader),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Role::Standby {
                    holder: "another replica".into(),
                }),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (holder.clone(), spec.renew_time.clone());
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let held_by_me = holder.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.lease_duration);
        let expired = first_seen.elapsed() > duration;
        if let Some(holder) = holder.as_ref().filter(|_| !held_by_me && !expired) {
            return Ok(Role::Standby {
                holder: holder.clone(),
            });
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + if held_by_me { 0 } else { 1 };
        let acquired = if held_by_me {
            spec.acquire_time.clone().unwrap_or(now.clone())
        } else {
            now.clone()
        };
        lease.spec = Some(self.spec_as_holder(acquired, now, transitions));
        // replace carries the resourceVersion: two standbys racing for an expired lease can't
        // both win.
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Role::Leader),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Role::Standby {
                holder: "another replica".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up on a clean shutdown, so a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    fn spec_as_holder(
        &self,
        acquired: MicroTime,
        renewed: MicroTime,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}
