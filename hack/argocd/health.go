// Package argocd runs resource health checks and actions the way Argo CD does (util/lua in
// argoproj/argo-cd): a sandboxed gopher-lua state with only the package, base and table
// libraries (custom checks run without the standard library unless useOpenLibs is set), a
// one-second deadline, the object as the global `obj`, and the returned table read as
// {status, message}.
package argocd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Health is Argo CD's health.HealthStatus.
type Health struct {
	Status  string
	Message string
}

// The health codes Argo CD accepts from a Lua check; anything else becomes Unknown.
var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

// Evaluate runs script against the Kubernetes object given as JSON.
func Evaluate(script string, objectJSON []byte) (Health, error) {
	l, err := run(script, objectJSON, false)
	if err != nil {
		return Health{}, err
	}
	defer l.Close()
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	var h Health
	for key, field := range map[string]*string{"status": &h.Status, "message": &h.Message} {
		switch v := table.RawGetString(key).(type) {
		case lua.LString:
			*field = string(v)
		case *lua.LNilType:
		default:
			return Health{}, fmt.Errorf("hs.%s is a %s, not a string", key, v.Type())
		}
	}
	if !validStatuses[h.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// run loads the sandbox (with Argo CD's safe os module for actions: os.date and os.time
// only), sets `obj` and runs script under a one-second deadline; the caller closes the state.
func run(script string, objectJSON []byte, withOs bool) (*lua.LState, error) {
	obj, err := unstructured(objectJSON)
	if err != nil {
		return nil, err
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	libs := []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	}
	if withOs {
		libs = append(libs, struct {
			name string
			open lua.LGFunction
		}{lua.OsLibName, openSafeOs})
	}
	for _, lib := range libs {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			l.Close()
			return nil, err
		}
	}
	if withOs {
		// `local os = require("os")` finds the same safe table.
		l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
			l.Push(l.GetGlobal(lua.OsLibName))
			return 1
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// openSafeOs sets the global os to gopher-lua's own os.date and os.time and nothing else:
// what Argo CD offers actions (no exit, no files, no environment).
func openSafeOs(l *lua.LState) int {
	lua.OpenOs(l)
	full, ok := l.GetGlobal(lua.OsLibName).(*lua.LTable)
	if !ok {
		l.RaiseError("no os library")
	}
	safe := l.NewTable()
	for _, name := range []string{"date", "time"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	l.SetGlobal(lua.OsLibName, safe)
	l.Push(safe)
	return 1
}

// unstructured decodes JSON the way apimachinery's unstructured objects hold it: integers
// as int64, other numbers as float64.
func unstructured(data []byte) (any, error) {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	var value any
	if err := decoder.Decode(&value); err != nil {
		return nil, err
	}
	return numbers(value), nil
}

func numbers(value any) any {
	switch v := value.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = numbers(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = numbers(v[k])
		}
	}
	return value
}

// decodeValue is Argo CD's conversion of an unstructured object into a Lua value.
func decodeValue(L *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []any:
		arr := L.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(L, item))
		}
		return arr
	case map[string]any:
		tbl := L.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(L, item))
		}
		return tbl
	case nil:
		return lua.LNil
	}
	return lua.LNil
}
