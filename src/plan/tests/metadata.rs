//! The labels and annotations of the Secrets tokenwarden owns.

use super::*;

// ----------------------------------------------------------------------------------------------
// Metadata
// ----------------------------------------------------------------------------------------------

#[test]
fn desired_metadata_carries_ownership_version_environment_and_template() {
    let spec = spec(json!({
        "environment": "staging",
        "secretTemplate": { "labels": { "team": "a" }, "annotations": { "owner": "platform" } },
    }));
    let versioned = desired_metadata(&spec, NAME, Some(3));
    let labels: Vec<_> = versioned
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            (MANAGED_BY_LABEL, "tokenwarden"),
            ("team", "a"),
            (ENVIRONMENT_LABEL, "staging"),
            (TOKEN_LABEL, NAME),
            (VERSION_LABEL, "3"),
        ]
    );
    assert_eq!(
        versioned.annotations.get("owner").map(String::as_str),
        Some("platform")
    );
    assert_eq!(
        versioned
            .annotations
            .get(TEMPLATE_KEYS_ANNOTATION)
            .map(String::as_str),
        Some("l:team,a:owner")
    );
    let mounted = desired_metadata(&spec, NAME, None);
    assert!(!mounted.labels.contains_key(VERSION_LABEL));
}

#[test]
fn metadata_is_current_when_every_desired_key_matches_and_no_stale_environment_lingers() {
    let desired = desired_metadata(
        &spec(json!({ "secretTemplate": { "labels": { "team": "a" } } })),
        NAME,
        None,
    );
    let with = |f: fn(&mut SecretMetadata)| {
        let mut m = desired.clone();
        f(&mut m);
        m
    };
    let table: [(&str, SecretMetadata, bool); 5] = [
        ("exactly desired", desired.clone(), true),
        (
            "extra keys of others",
            with(|m| {
                m.labels
                    .insert("kubectl.kubernetes.io/x".into(), "y".into());
                m.annotations
                    .insert(TOKEN_SHA256_ANNOTATION.into(), "abc".into());
            }),
            true,
        ),
        (
            "a template label changed",
            with(|m| {
                m.labels.insert("team".into(), "b".into());
            }),
            false,
        ),
        (
            "ownership label missing",
            with(|m| {
                m.labels.remove(MANAGED_BY_LABEL);
            }),
            false,
        ),
        (
            "environment label no longer wanted",
            with(|m| {
                m.labels.insert(ENVIRONMENT_LABEL.into(), "staging".into());
            }),
            false,
        ),
    ];
    for (what, actual, current) in table {
        assert_eq!(metadata_current(&actual, &desired), current, "{what}");
    }
}
