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
        match self
            .patch_finalizers(patch, "remove WorkspaceToken finalizer")
            .await
        {
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
        self.writes.workspace_token = patched.resource_version();
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

/// Removes ours at the index the pass observed it at, failing if another is there now;
/// None when the observed list does not hold ours.
pub(super) fn remove_finalizer_patch(observed: &[String]) -> Option<json_patch::Patch> {
    let at = observed.iter().position(|f| f == FINALIZER)?;
    let path = format!("/metadata/finalizers/{at}");
    Some(json_patch::Patch(vec![
        test(&path, FINALIZER.into()),
        PatchOperation::Remove(RemoveOperation {
            path: pointer(&path),
        }),
    ]))
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

/// A refused finalizer patch is a stale view, like a 409 Conflict: a failed `test` (the list
/// changed), an index past the end (it shrank), or no new finalizer on an object being
/// deleted all mean the object changed since the pass observed it, and the pass is redone on
/// the newer object. The patch itself is always well-formed (see the tests below).
fn finalizer_error(operation: &'static str, error: kube::Error) -> Error {
    match error {
        kube::Error::Api(s) if s.code == 422 => Error::StaleView { operation },
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
    fn a_refused_finalizer_patch_is_a_stale_view_and_other_errors_are_not() {
        let refused = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "the server rejected our request".into(),
                reason: "Invalid".into(),
                ..Default::default()
            }))
        };
        assert!(finalizer_error("add", refused(422)).is_stale_view());
        let forbidden = finalizer_error("add", refused(403));
        assert!(!forbidden.is_stale_view());
        assert_eq!(forbidden.reason(), "Forbidden");
        assert_eq!(finalizer_error("add", refused(422)).reason(), "Conflict");
    }
}
