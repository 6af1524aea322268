//! The Warning events a pass publishes about the WorkspaceToken itself: a spec the schema
//! could not reject, or a Secret name someone else holds. Each is said once, when it first
//! appears (status remembers what was said), with the same text the Ready condition carries.

use super::Observed;
use crate::contract::READY;

/// One Warning event: its reason and note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub reason: &'static str,
    pub message: String,
}

/// The one message of a Secret conflict, in conditions, events and errors alike.
pub(crate) fn secret_conflict(names: &str) -> String {
    format!("Secret {names} exists and is not owned by this WorkspaceToken; it is left untouched")
}

/// The Warnings of a pass that observed `o` and found `spec_error`.
pub(super) fn warnings(o: &Observed<'_>, spec_error: Option<&str>) -> Vec<Warning> {
    let said = o
        .status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let mut warnings = Vec::new();
    if let Some(error) = spec_error
        && said.is_none_or(|c| c.message != error)
    {
        warnings.push(Warning {
            reason: "InvalidSpec",
            message: error.to_string(),
        });
    }
    if let Some(problem) = &o.issuer_problem
        && spec_error.is_none()
        && said.is_none_or(|c| c.message != problem.message)
    {
        warnings.push(Warning {
            reason: problem.reason,
            message: problem.message.clone(),
        });
    }
    if !o.foreign.is_empty() && said.is_none_or(|c| c.reason != "SecretConflict") {
        warnings.push(Warning {
            reason: "SecretConflict",
            message: secret_conflict(&o.foreign.join(", ")),
        });
    }
    warnings
}
