-- Argo CD health check for tokenwarden.dev/TokenIssuer and tokenwarden.dev/ClusterTokenIssuer.
-- Runs in Argo CD's sandbox (gopher-lua with only the base, table and package libraries), so
-- it uses no string.* or os.* functions. Tested by hack/argocd (`make gitops-check`).
--
--   Progressing  status missing, Ready missing or Unknown, or the Ready condition older than
--                the spec (the operator has not checked this generation yet).
--   Healthy      Ready=True: the admin Secret resolves and the URL is allowed.
--   Degraded     Ready=False (AdminSecretMissing, InsecureUrl, InvalidCaBundle...): the
--                condition's reason and message. WorkspaceTokens naming it mint nothing.
local hs = {}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function text(s, default)
  if s == nil or s == "" then
    return default
  end
  return s
end

local kind = text(obj.kind, "issuer")
local status = obj.status
local generation = obj.metadata.generation
local ready = condition(status, "Ready")

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for tokenwarden to check the " .. kind
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

-- The condition is written for one generation; an older one says nothing about this spec.
local seen = ready.observedGeneration or status.observedGeneration
if generation ~= nil and seen ~= nil and seen < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for tokenwarden to observe generation " .. generation
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready.message, "The " .. kind .. " is Ready")
  return hs
end

if ready.status ~= "False" then
  hs.status = "Progressing"
  hs.message = text(ready.message, "Ready is " .. text(ready.status, "Unknown"))
  return hs
end

hs.status = "Degraded"
hs.message = text(ready.reason, "Unknown") .. ": " .. text(ready.message, "")
return hs
