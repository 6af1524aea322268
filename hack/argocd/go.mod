// Tests docs/argocd-health.lua with the Lua engine Argo CD embeds (gopher-lua, the version
// Argo CD's go.mod pins), loaded the way Argo CD's util/lua package loads health checks.
module tokenwarden.dev/hack/argocd

go 1.26

require github.com/yuin/gopher-lua v1.1.1
