//! The finalizer, added and removed with JSON Patches whose `test` guards only the list they
//! change, as kube-runtime's finalizer helper does. A writer of any other field (a GitOps
//! controller relabelling the object every few milliseconds) never makes them fail; a
//! changed finalizer list does, and the pass is redone on the newer object.

use json_patch::{AddOperation, PatchOperation, RemoveOperation, TestOperation};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use super::Applier;
use crate::api::WorkspaceToken;
use crate::contract::{FIELD_MANAGER, FINALIZER};
use crate::journal::Done;
use crate::{Error, Result};

impl Applier<'_> {
    pub(super) async fn add_finalizer(&mut self) -> Result<()> {
        let patch = add_finalizer_patch(self.wst.finalizers());
        self.patch_finalizers(patch, "add WorkspaceToken finalizer")
            .await?;
        self.record(Done::FinalizerAdded);
        Ok(())
    }

    pub(super) async fn remove_finalizer(&mut self) -> Result<()> {
        let Some(patch) = remove_finalizer_patch(self.wst.finalizers()) else {
            self.record(Done::FinalizerRemoved);
            return Ok(());
        };
        // Before the patch: the watch may show the object gone before it returns.
        let uid = self.wst.uid().unwrap_or_default();
        self.io
            .finalizing
            .lock()
            .expect("finalizing")
            .insert(uid.clone());
        let removed = self
            .patch_finalizers(patch, "remove WorkspaceToken finalizer")
            .await;
        if removed.is_err() {
            self.io.finalizing.lock().expect("finalizing").remove(&uid);
        }
        match removed {
            // Already gone (a pass on a cache that had not yet seen the deletion finish):
            // what removing the finalizer was for.
            Err(Error::Kube {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {}
            other => other?,
        }
        self.record(Done::FinalizerRemoved);
        Ok(())
    }

    async fn patch_finalizers(
        &mut self,
        patch: json_patch::Patch,
        operation: &'static str,
    ) -> Result<()> {
        let api: Api<WorkspaceToken> = Api::namespaced(self.io.client.clone(), &self.ns);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patched = api
            .patch(&self.name, &params, &Patch::Json::<()>(patch))
            .await
            .map_err(|e| finalizer_error(operation, e))?;
        self.writes.resource_version = patched.resource_version();
        Ok(())
    }
}

/// Appends ours to the list the pass observed, failing if the list is not that any more.
pub(super) fn add_finalizer_patch(observed: &[String]) -> json_patch::Patch {
    let ours = Value::String(FINALIZER.into());
    json_patch::Patch(if observed.is_empty() {
        vec![
            test("/metadata/finalizers", Value::Null),
            PatchOperation::Add(AddOperation {
                path: pointer("/metadata/finalizers"),
                value: Value::Array(vec![ours]),
            }),
        ]
    } else {
        // The API server does not deduplicate finalizers: if someone added ours meanwhile,
        // the test fails and the next pass sees it there.
        vec![
            test("/metadata/finalizers", observed.into()),
            PatchOperation::Add(AddOperation {
                path: pointer("/metadata/finalizers/-"),
                value: ours,
            }),
        ]
    })
}

/// Removes ours at every index the pass observed it at (highest first, so the indices hold),
/// failing if another finalizer is there now; None when the observed list does not hold ours.
pub(super) fn remove_finalizer_patch(observed: &[String]) -> Option<json_patch::Patch> {
    let at: Vec<usize> = (observed.iter().enumerate())
        .filter(|(_, f)| *f == FINALIZER)
        .map(|(i, _)| i)
        .collect();
    if at.is_empty() {
        return None;
    }
    let ops = at.iter().rev().flat_map(|i| {
        let path = format!("/metadata/finalizers/{i}");
        [
            test(&path, FINALIZER.into()),
            PatchOperation::Remove(RemoveOperation {
                path: pointer(&path),
            }),
        ]
    });
    Some(json_patch::Patch(ops.collect()))
}

fn test(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation {
        path: pointer(path),
        value,
    })
}

fn pointer(path: &str) -> json_patch::jsonptr::PointerBuf {
    json_patch::jsonptr::PointerBuf::parse(path).expect("a JSON pointer written here")
}

/// What kube-apiserver answers (v1.36, seen in a test against it) when a JSON Patch does not
/// apply: a failed `test`, an index past the end. Nothing else gives this message.
const PATCH_DID_NOT_APPLY: &str = "the server rejected our request due to an error in our request";
/// Its answer to a new finalizer on an object being deleted.
const BEING_DELETED: &str = "no new finalizers can be added if the object is being deleted";

/// A finalizer patch that did not apply is a stale view, like a 409 Conflict: the list
/// changed (or the object is being deleted) since the pass observed it, and the pass is redone
/// on the newer object. Any other refusal (an admission policy, a validation rule) is an
/// error, said with the server's own message.
fn finalizer_error(operation: &'static str, error: kube::Error) -> Error {
    match error {
        kube::Error::Api(s)
            if s.code == 422
                && (s.message == PATCH_DID_NOT_APPLY || s.message.contains(BEING_DELETED)) =>
        {
            Error::StaleView { operation }
        }
        other => Error::kube(operation)(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(patch: &json_patch::Patch) -> serde_json::Value {
        serde_json::to_value(patch).expect("patch serializes")
    }

    #[test]
    fn adding_tests_only_the_finalizer_list_it_extends() {
        assert_eq!(
            ops(&add_finalizer_patch(&[])),
            serde_json::json!([
                { "op": "test", "path": "/metadata/finalizers", "value": null },
                { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
            ])
        );
        let theirs = vec!["example.com/keep".to_string()];
        assert_eq!(
            ops(&add_finalizer_patch(&theirs)),
            serde_json::json!([
                { "op": "test", "path": "/metadata/finalizers", "value": ["example.com/keep"] },
                { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
            ])
        );
    }

    #[test]
    fn removing_tests_only_the_entry_it_removes() {
        let list = vec!["example.com/keep".to_string(), FINALIZER.to_string()];
        assert_eq!(
            ops(&remove_finalizer_patch(&list).expect("ours is there")),
            serde_json::json!([
                { "op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER },
                { "op": "remove", "path": "/metadata/finalizers/1" },
            ])
        );
        assert!(remove_finalizer_patch(&["example.com/keep".to_string()]).is_none());
    }

    #[test]
    fn removing_takes_every_copy_of_ours_highest_index_first() {
        let list: Vec<String> = [FINALIZER, "example.com/keep", FINALIZER]
            .map(String::from)
            .to_vec();
        assert_eq!(
            ops(&remove_finalizer_patch(&list).expect("ours is there")),
            serde_json::json!([
                { "op": "test", "path": "/metadata/finalizers/2", "value": FINALIZER },
                { "op": "remove", "path": "/metadata/finalizers/2" },
                { "op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER },
                { "op": "remove", "path": "/metadata/finalizers/0" },
            ])
        );
    }

    fn refused(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            reason: "Invalid".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_patch_that_did_not_apply_is_a_stale_view_any_other_refusal_an_error() {
        let deleting = "WorkspaceToken \"t\" is invalid: metadata.finalizers: Forbidden: no new \
                        finalizers can be added if the object is being deleted, found new \
                        finalizers []string{\"tokenwarden.dev/cleanup\"}";
        for stale in [PATCH_DID_NOT_APPLY, deleting] {
            let error = finalizer_error("add", refused(422, stale));
            assert!(error.is_stale_view(), "{stale}");
            assert_eq!(error.reason(), "Conflict");
        }
        let policy = "ValidatingAdmissionPolicy 'no-finalizers' denied request: not here";
        let denied = finalizer_error("add", refused(422, policy));
        assert!(!denied.is_stale_view());
        assert!(denied.to_string().contains("not here"), "{denied}");
        assert!(!finalizer_error("add", refused(403, "forbidden")).is_stale_view());
    }
}
