//! The hash of the token-shaping spec each version records: a change of it rotates.

use crate::api::WorkspaceTokenSpec;

/// Hash of the token-shaping spec (`token`, `issuerRef`, `userId`, `environment`): a change
/// rotates when `rotateOnChange` is true.
///
/// Every record carries this hash, so the same spec must hash the same in every release or an
/// upgrade rotates every token: keys are sorted and absent fields left out, whatever
/// serde_json's map order (the `preserve_order` feature) or a new optional field would do.
pub(crate) fn spec_hash(spec: &WorkspaceTokenSpec) -> String {
    // Which issuer mints shapes the token (a local token hashes as it always did: no key).
    let shaping = serde_json::json!({
        "token": spec.token,
        "issuerRef": spec.issuer_ref.as_ref().map(|r| format!("{}/{}", r.kind.as_str(), r.name)),
        "userId": spec.user_id,
        "environment": spec.environment,
    });
    let mut canonical = String::new();
    write_canonical(&shaping, &mut canonical);
    crate::token::sha256_hex(canonical.as_bytes())[..16].to_string()
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().filter(|(_, v)| !v.is_null()).collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
