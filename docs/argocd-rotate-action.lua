-- Argo CD resource action "rotate" for tokenwarden.dev/WorkspaceToken: asks for one rotation
-- now, as `tokenwarden rotate` does, by giving the tokenwarden.dev/rotate annotation a new
-- value and saying why in tokenwarden.dev/rotate-reason. The value is a W3C trace id (32 hex
-- digits: zeros, then the UTC time to the second), so the rotation's audit lines carry it
-- and the reason. The previous token stays valid through the token's gracePeriod. Argo CD's
-- action sandbox offers os.date and os.time only. Tested by hack/argocd (`make gitops-check`).
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tokenwarden.dev/rotate"] = "000000000000000000" .. os.date("!%Y%m%d%H%M%S")
obj.metadata.annotations["tokenwarden.dev/rotate-reason"] = "Argo CD rotate action"
return obj
