-- Argo CD health check for tokenwarden.dev/WorkspaceToken.
-- Runs in Argo CD's sandbox (gopher-lua with only the base, table and package libraries), so
-- it uses no string.* or os.* functions. Tested by hack/argocd (`make gitops-check`).
--
--   Progressing  status missing, Ready missing, the Ready condition older than the spec,
--                Ready=False Pending or Deleting, or Ready=True while status has not yet caught
--                up with the spec (a spec change not applied yet).
--   Healthy      Ready=True; a Degraded=True condition (the last pass failed, the current
--                token is still valid and served) is named in the message.
--   Suspended    Ready=False, reason Suspended (spec.suspend: true).
--   Degraded     Ready=False for any other reason (SecretConflict, InvalidSpec,
--                AdminSecretMissing, Forbidden, Issuer*...): the condition's message.
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

local function failure(c)
  if c ~= nil and c.status == "True" then
    return text(c.reason, "Unknown") .. ": " .. text(c.message, "")
  end
  return nil
end

local status = obj.status
local generation = obj.metadata.generation
local ready = condition(status, "Ready")
local degraded = failure(condition(status, "Degraded"))

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for tokenwarden to reconcile the WorkspaceToken"
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

-- The conditions are written for one generation; older ones say nothing about this spec.
local seen = ready.observedGeneration or status.observedGeneration
if generation ~= nil and seen ~= nil and seen < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for tokenwarden to observe generation " .. generation
  return hs
end

if ready.status == "True" then
  local version = status.tokenVersion
  if version == nil and status.currentVersion ~= nil then
    version = "v" .. status.currentVersion
  end
  version = version or "unknown"
  if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
    -- The last pass failed before it applied this spec; the previous token is still served.
    hs.status = "Progressing"
    hs.message = "Generation " .. generation .. " not applied yet, " .. version .. " is still active"
    if degraded ~= nil then
      hs.message = hs.message .. "; last reconcile failed: " .. degraded
    end
    return hs
  end
  hs.status = "Healthy"
  hs.message = "Token " .. version .. " is active"
  if degraded ~= nil then
    hs.message = hs.message .. "; degraded: " .. degraded
  end
  return hs
end

if ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = text(ready.message, "spec.suspend is true")
  return hs
end

if ready.reason == "Pending" or ready.reason == "Deleting" or ready.status ~= "False" then
  hs.status = "Progressing"
  hs.message = text(ready.message, text(ready.reason, "Ready is " .. text(ready.status, "Unknown")))
  if degraded ~= nil then
    hs.message = hs.message .. "; last reconcile failed: " .. degraded
  end
  return hs
end

hs.status = "Degraded"
hs.message = text(ready.reason, "Unknown") .. ": " .. text(ready.message, "")
return hs
