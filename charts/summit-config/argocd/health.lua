-- Argo CD health of a summit-config object: a ConfigEntry, ConfigChange,
-- SecretRotationPolicy or DriftCheck. Every kind reports the kstatus conditions
-- (Stalled, Reconciling) and Ready; a failed rotation and found drift are Degraded
-- too. Configure it in argocd-cm for each kind, e.g.
--   resource.customizations.health.config.summit.io_ConfigEntry: |
--     <this file>
local health = {status = "Progressing", message = "waiting for the operator"}
if obj.status == nil then
  return health
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  health.message = "the operator has not seen this generation yet"
  return health
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions or {}) do
  conditions[condition.type] = condition
end
local function holds(type)
  return conditions[type] ~= nil and conditions[type].status == "True"
end
local function says(status, type)
  health.status = status
  local condition = conditions[type]
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    health.message = condition.message
  end
  return health
end
if holds("Stalled") then
  return says("Degraded", "Stalled")
end
if holds("RotationFailed") then
  return says("Degraded", "RotationFailed")
end
if holds("Drifted") then
  return says("Degraded", "Drifted")
end
if holds("Reconciling") then
  return says("Progressing", "Reconciling")
end
if holds("Ready") then
  return says("Healthy", "Ready")
end
return says("Progressing", "Ready")
