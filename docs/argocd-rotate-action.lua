-- Argo CD resource action "rotate" for tokenwarden.dev/WorkspaceToken: asks for one rotation
-- now, as `tokenwarden rotate` does, by giving the tokenwarden.dev/rotate annotation a new
-- value (the time, to the second) and saying why in tokenwarden.dev/rotate-reason. The
-- previous token stays valid through the token's gracePeriod. Argo CD's action sandbox
-- offers os.date and os.time only. Tested by hack/argocd (`make gitops-check`).
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tokenwarden.dev/rotate"] = "argocd-" .. os.date("!%Y-%m-%dT%H:%M:%SZ")
obj.metadata.annotations["tokenwarden.dev/rotate-reason"] = "Argo CD rotate action"
return obj
