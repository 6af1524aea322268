//! The labels and annotations tokenwarden decides on the Secrets it owns.

use std::collections::BTreeMap;

use crate::api::WorkspaceTokenSpec;
use crate::contract::{
    ENVIRONMENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, TEMPLATE_KEYS_ANNOTATION, TOKEN_LABEL,
    VERSION_LABEL,
};

/// The labels and annotations tokenwarden manages on a Secret it owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretMetadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The labels and annotations tokenwarden decides (per-token ones like the hash and trace id
/// are set by the apply side and not compared here).
pub(crate) fn desired_metadata(
    spec: &WorkspaceTokenSpec,
    name: &str,
    version: Option<u32>,
) -> SecretMetadata {
    let mut labels = spec.secret_template.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(TOKEN_LABEL.into(), name.into());
    if let Some(n) = version {
        labels.insert(VERSION_LABEL.into(), n.to_string());
    }
    if let Some(env) = &spec.environment {
        labels.insert(ENVIRONMENT_LABEL.into(), env.clone());
    }
    let mut annotations = spec.secret_template.annotations.clone();
    let keys: Vec<String> = spec
        .secret_template
        .labels
        .keys()
        .map(|k| format!("l:{k}"))
        .chain(
            spec.secret_template
                .annotations
                .keys()
                .map(|k| format!("a:{k}")),
        )
        .collect();
    annotations.insert(TEMPLATE_KEYS_ANNOTATION.into(), keys.join(","));
    SecretMetadata {
        labels,
        annotations,
    }
}

/// Every desired key has its value, and no key from an earlier template lingers.
pub(crate) fn metadata_current(actual: &SecretMetadata, desired: &SecretMetadata) -> bool {
    let has_all = |a: &BTreeMap<String, String>, d: &BTreeMap<String, String>| {
        d.iter().all(|(k, v)| a.get(k) == Some(v))
    };
    if !has_all(&actual.labels, &desired.labels)
        || !has_all(&actual.annotations, &desired.annotations)
    {
        return false;
    }
    // The environment label goes when spec.environment is unset.
    if !desired.labels.contains_key(ENVIRONMENT_LABEL)
        && actual.labels.contains_key(ENVIRONMENT_LABEL)
    {
        return false;
    }
    true
}
