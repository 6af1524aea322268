package argocd

import (
	"fmt"

	lua "github.com/yuin/gopher-lua"
)

// Discover runs a resource-action discovery script the way Argo CD does: it returns a table
// of action name to options; the result is each action and whether it is disabled.
func Discover(script string, objectJSON []byte) (map[string]bool, error) {
	l, err := run(script, objectJSON, true)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	actions := map[string]bool{}
	var bad error
	table.ForEach(func(name, options lua.LValue) {
		disabled := false
		if t, ok := options.(*lua.LTable); ok {
			disabled = t.RawGetString("disabled") == lua.LTrue
		}
		if _, ok := name.(lua.LString); !ok {
			bad = fmt.Errorf("an action named by a %s", name.Type())
		}
		actions[name.String()] = disabled
	})
	return actions, bad
}

// Act runs a resource action script the way Argo CD runs an old-style action (one that
// returns the object, which Argo CD then patches in): it returns that object as the JSON
// Argo CD would read.
func Act(script string, objectJSON []byte) (map[string]any, error) {
	l, err := run(script, objectJSON, true)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	object, ok := encodeValue(l.Get(-1)).(map[string]any)
	if !ok {
		return nil, fmt.Errorf("expect the object from the action, not %s", l.Get(-1).Type())
	}
	return object, nil
}

// encodeValue reads a Lua value back as JSON would carry it: a table with keys 1..n is an
// array, any other table an object.
func encodeValue(value lua.LValue) any {
	switch v := value.(type) {
	case lua.LBool:
		return bool(v)
	case lua.LNumber:
		return float64(v)
	case lua.LString:
		return string(v)
	case *lua.LTable:
		if n := v.Len(); n > 0 {
			items := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				items = append(items, encodeValue(v.RawGetInt(i)))
			}
			return items
		}
		object := map[string]any{}
		v.ForEach(func(key, item lua.LValue) {
			object[key.String()] = encodeValue(item)
		})
		return object
	}
	return nil
}
