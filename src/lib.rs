//! tokenwarden: a Kubernetes operator that mints, rotates and revokes workspace bearer tokens.
#![forbid(unsafe_code)]

pub mod api;
mod apply;
pub mod cli;
mod cluster;
pub mod completion;
pub mod consumers;
mod contract;
mod controller;
mod events;
pub mod failpoint;
mod fleet;
pub mod heap;
mod inventory;
mod issuer;
mod issuer_controller;
mod issuer_watch;
mod journal;
mod leader;
mod logging;
mod metrics;
mod observe;
mod pacing;
mod packed;
pub mod plan;
pub mod redact;
mod relist;
pub mod rollout;
mod rollout_watch;
mod run;
pub mod schedule;
mod secret_packing;
pub mod secrets;
mod status;
mod time;
pub mod token;
pub mod token_cache;
mod token_metrics;
pub mod window;

#[cfg(test)]
mod architecture_tests;

/// Every failure of a reconcile, one variant per operation. Messages never hold a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{operation}: {source}")]
    Kube {
        operation: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{}", crate::plan::secret_conflict(name))]
    SecretConflict { name: String },
    /// A write whose precondition (a finalizer list, a resourceVersion) no longer held: the
    /// pass planned on a stale view and is redone on the newer object.
    #[error("{operation}: the object changed since this pass observed it")]
    StaleView { operation: &'static str },
    #[error("mint a token: {0}")]
    Mint(String),
    #[error("issuer: {0}")]
    Issuer(#[from] crate::issuer::http::IssuerError),
    #[error("admin token: {0}")]
    AdminSecret(String),
    /// `spec.issuerRef` names an issuer this WorkspaceToken may not use now.
    #[error("{message}")]
    IssuerUnusable {
        reason: &'static str,
        message: String,
    },
    #[error("Secret {name} has no usable token (key {key:?} missing)")]
    MissingTokenData { name: String, key: &'static str },
}

impl From<crate::issuer::resolve::IssuerProblem> for Error {
    fn from(problem: crate::issuer::resolve::IssuerProblem) -> Error {
        Error::IssuerUnusable {
            reason: problem.reason,
            message: problem.message,
        }
    }
}

impl Error {
    pub fn kube(operation: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { operation, source }
    }

    /// A write refused with 409 Conflict because the object changed since it was read (a
    /// resourceVersion precondition): the pass planned on a stale view. Not a fault to
    /// surface: the pass is redone on fresh data. A create refused with AlreadyExists is not
    /// one: it is handled (or reported) where it happens.
    pub fn is_stale_view(&self) -> bool {
        matches!(self, Error::StaleView { .. })
            || matches!(self, Error::Kube { source: kube::Error::Api(s), .. }
            if s.code == 409 && s.reason == "Conflict")
    }

    /// A pass that only needs redoing, soon and without a word: it planned on a stale view,
    /// or the platform had every slot busy (nothing was sent).
    pub fn is_quiet_retry(&self) -> bool {
        self.is_stale_view()
            || matches!(
                self,
                Error::Issuer(crate::issuer::http::IssuerError::Busy { .. })
            )
    }

    /// The same error with every token in `hashes` cut from the text that came from
    /// elsewhere: the API server's answer (an admission policy or webhook may quote the Secret
    /// it refused) and the reasons quoted from a platform's answer.
    pub fn redacted(self, hashes: &std::collections::BTreeSet<String>) -> Error {
        use crate::issuer::http::IssuerError;
        let cut = |text: String| crate::redact::redact(&text, hashes);
        match self {
            Error::Kube {
                operation,
                source: kube::Error::Api(mut status),
            } => {
                // Field by field, as the server wrote them: JSON escapes (`\n`) would glue a
                // quoted token to its neighbours.
                status.message = cut(std::mem::take(&mut status.message));
                status.reason = cut(std::mem::take(&mut status.reason));
                if let Some(details) = status.details.as_mut() {
                    details.name = cut(std::mem::take(&mut details.name));
                    for cause in &mut details.causes {
                        cause.message = cut(std::mem::take(&mut cause.message));
                        cause.field = cut(std::mem::take(&mut cause.field));
                    }
                }
                Error::Kube {
                    operation,
                    source: kube::Error::Api(status),
                }
            }
            Error::Issuer(IssuerError::Unreachable { operation, reason }) => {
                Error::Issuer(IssuerError::Unreachable {
                    operation,
                    reason: cut(reason),
                })
            }
            Error::Issuer(IssuerError::Malformed { operation, reason }) => {
                Error::Issuer(IssuerError::Malformed {
                    operation,
                    reason: cut(reason),
                })
            }
            Error::Issuer(IssuerError::WrongWorkspace { expected, got }) => {
                Error::Issuer(IssuerError::WrongWorkspace {
                    expected,
                    got: cut(got),
                })
            }
            Error::Mint(reason) => Error::Mint(cut(reason)),
            Error::AdminSecret(reason) => Error::AdminSecret(cut(reason)),
            other => other,
        }
    }

    /// A short label for metrics and condition reasons (PascalCase).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code == 403 => "Forbidden",
                kube::Error::Api(s) if s.code == 409 => "Conflict",
                kube::Error::Api(s) if s.code == 404 => "NotFound",
                _ => "KubeApiError",
            },
            Error::SecretConflict { .. } => "SecretConflict",
            Error::StaleView { .. } => "Conflict",
            Error::Mint(_) => "MintFailed",
            Error::Issuer(e) => e.reason(),
            Error::AdminSecret(_) => "AdminSecretMissing",
            Error::IssuerUnusable { reason, .. } => reason,
            Error::MissingTokenData { .. } => "MissingTokenData",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
