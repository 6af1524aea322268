//! How the Secret index packs a token's hashed Secrets (`crate::packed`): together, in one
//! frame, and with their data values as text where they are UTF-8 - every value a hashed
//! Secret holds (hashes, prefixes, versions, ids) - not as the base64 the API carries. zstd
//! codes the hex of a hash as hex; base64 of that hex it barely compresses. A token's Secrets
//! repeat its uid, hashes, trace id and names: one frame holds them once.
//! `bench/examples/cache_memory.rs` (random hashes, uids and trace ids) at 10k: 466 bytes a
//! Secret packed one by one as the API carries it, 236 grouped with text values (the index's
//! key and entries included). A value that is not UTF-8 stays base64, marked, so nothing
//! is lost either way.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::contract::{
    ENVIRONMENT_LABEL, ISSUER_TOKEN_ID_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL,
    PREVIOUS_TOKEN_KEY, PREVIOUS_TOKEN_VERSION_KEY, SPEC_HASH_ANNOTATION, TEMPLATE_KEYS_ANNOTATION,
    TOKEN_KEY, TOKEN_LABEL, TOKEN_SHA256_ANNOTATION, TOKEN_VERSION_KEY, TRACE_ID_ANNOTATION,
    VERSION_LABEL, WORKSPACE_ID_KEY,
};

/// The index keeps a token's first characters under this key (for status prefixes) beside
/// its hash (`hash_in_place` in the Secret index); never a key of a Secret in the cluster.
pub(crate) const PREFIX_KEY: &str = "tokenwarden.dev/prefix";
pub(crate) const PREVIOUS_PREFIX_KEY: &str = "tokenwarden.dev/previous-prefix";

/// A Secret in the form it is packed in: the object's own fields, data values as text.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PackedForm {
    metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    immutable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    string_data: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<String>,
}

/// One data value: its text, or (not UTF-8) its bytes as base64 under `base64`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Bytes { base64: ByteString },
}

impl From<ByteString> for Value {
    fn from(bytes: ByteString) -> Self {
        match String::from_utf8(bytes.0) {
            Ok(text) => Value::Text(text),
            Err(e) => Value::Bytes {
                base64: ByteString(e.into_bytes()),
            },
        }
    }
}

impl From<Value> for ByteString {
    fn from(value: Value) -> Self {
        match value {
            Value::Text(text) => ByteString(text.into_bytes()),
            Value::Bytes { base64 } => base64,
        }
    }
}

/// The Secrets of one token, as the Secret index packs them: in one frame.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SecretGroup(pub Vec<Secret>);

impl crate::packed::Packable for SecretGroup {
    fn dictionary() -> &'static [u8] {
        &DICTIONARY
    }

    fn to_packed_json(&self) -> Vec<u8> {
        let forms: Vec<PackedForm> = self.0.iter().map(PackedForm::from).collect();
        serde_json::to_vec(&forms).expect("a cached Secret serializes")
    }

    fn from_packed_json(json: &[u8]) -> Self {
        let forms: Vec<PackedForm> = serde_json::from_slice(json).expect("packed by Packed::pack");
        SecretGroup(forms.into_iter().map(Secret::from).collect())
    }
}

impl From<&Secret> for PackedForm {
    fn from(secret: &Secret) -> Self {
        PackedForm {
            metadata: secret.metadata.clone(),
            data: (secret.data.clone())
                .map(|data| data.into_iter().map(|(k, v)| (k, v.into())).collect()),
            immutable: secret.immutable,
            string_data: secret.string_data.clone(),
            type_: secret.type_.clone(),
        }
    }
}

impl From<PackedForm> for Secret {
    fn from(form: PackedForm) -> Self {
        Secret {
            metadata: form.metadata,
            data: (form.data).map(|data| data.into_iter().map(|(k, v)| (k, v.into())).collect()),
            immutable: form.immutable,
            string_data: form.string_data,
            type_: form.type_,
        }
    }
}

/// What the JSON of a token's Secrets shares, in the order it is serialized: a mounted and a
/// versioned Secret with every key tokenwarden writes and placeholder values.
static DICTIONARY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let sample = |version: Option<&str>| -> Secret {
        let mut labels = BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (TOKEN_LABEL.to_string(), "agent".to_string()),
            (ENVIRONMENT_LABEL.to_string(), "production".to_string()),
        ]);
        let mut data = BTreeMap::from([
            (TOKEN_KEY.to_string(), ByteString(vec![b'0'; 64])),
            (PREFIX_KEY.to_string(), ByteString(b"tw_AAAAA".to_vec())),
            (TOKEN_VERSION_KEY.to_string(), ByteString(b"v1".to_vec())),
            (WORKSPACE_ID_KEY.to_string(), ByteString(b"ws".to_vec())),
        ]);
        match version {
            Some(v) => {
                labels.insert(VERSION_LABEL.into(), v.into());
            }
            None => {
                data.insert(PREVIOUS_TOKEN_KEY.into(), ByteString(vec![b'0'; 64]));
                data.insert(PREVIOUS_PREFIX_KEY.into(), ByteString(b"tw_AAAAA".to_vec()));
                data.insert(
                    PREVIOUS_TOKEN_VERSION_KEY.into(),
                    ByteString(b"v1".to_vec()),
                );
            }
        }
        let annotations = [
            TOKEN_SHA256_ANNOTATION,
            TRACE_ID_ANNOTATION,
            SPEC_HASH_ANNOTATION,
            TEMPLATE_KEYS_ANNOTATION,
            ISSUER_TOKEN_ID_ANNOTATION,
        ]
        .map(|k| (k.to_string(), String::new()));
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "agent-v1", "namespace": "default", "uid": "", "resourceVersion": "",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": labels, "annotations": BTreeMap::from(annotations),
                "ownerReferences": [{ "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
                    "name": "agent", "uid": "", "controller": true, "blockOwnerDeletion": true }],
            },
            "data": data, "immutable": version.is_some(), "type": "Opaque",
        }))
        .expect("dictionary sample")
    };
    use crate::packed::Packable;
    SecretGroup(vec![sample(None), sample(Some("1"))]).to_packed_json()
});

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;

    use super::SecretGroup;
    use crate::packed::{Packable, Packed};

    fn secret(data: serde_json::Value) -> Secret {
        serde_json::from_value(json!({
            "metadata": { "name": "agent", "namespace": "team-a" },
            "data": data, "type": "Opaque",
        }))
        .expect("a Secret")
    }

    fn round_trip(secrets: Vec<Secret>) {
        let group = SecretGroup(secrets);
        assert_eq!(Packed::pack(&group).unpack(), group);
    }

    #[test]
    fn text_values_are_packed_as_text_and_come_back_as_bytes() {
        let secret = secret(json!({ "token-version": "djI=" }));
        let group = SecretGroup(vec![secret]);
        let json = String::from_utf8(group.to_packed_json()).expect("JSON");
        assert!(json.contains(r#""token-version":"v2""#), "{json}");
        round_trip(group.0);
    }

    #[test]
    fn a_value_that_is_not_utf8_comes_back_as_it_was() {
        let mut secret = secret(json!({ "text": "djI=" }));
        let binary = ByteString(vec![0xff, 0x00, 0xfe, b'"', b'\\']);
        (secret.data.as_mut().expect("data")).insert("binary".into(), binary);
        // A text value that reads like the marker of a binary one stays text.
        (secret.data.as_mut().expect("data")).insert(
            "base64".into(),
            ByteString(br#"{"base64":"AA=="}"#.to_vec()),
        );
        round_trip(vec![secret]);
    }

    #[test]
    fn no_data_empty_data_and_string_data_stay_apart() {
        let mut without = secret(json!(null));
        without.data = None;
        let mut empty = secret(json!({}));
        empty.string_data = Some([("k".to_string(), "v".to_string())].into());
        empty.immutable = Some(true);
        round_trip(vec![without, empty]);
        round_trip(vec![]);
    }
}
