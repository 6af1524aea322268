-- Argo CD resource actions for tokenwarden.dev/WorkspaceToken: which are offered.
-- "rotate" is offered unless the token is suspended (nothing rotates then) or being deleted.
-- Tested by hack/argocd (`make gitops-check`).
local actions = {}
local suspended = obj.spec ~= nil and obj.spec.suspend == true
local deleting = obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil
actions["rotate"] = { ["disabled"] = suspended or deleting }
return actions
