package argocd

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

const (
	discoveryPath = "../../docs/argocd-rotate-discovery.lua"
	rotatePath    = "../../docs/argocd-rotate-action.lua"
)

func script(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A WorkspaceToken with `metadata` and `spec` merged over a minimal one.
func token(t *testing.T, metadata, spec map[string]any) []byte {
	meta := map[string]any{"name": "agent-alpha", "namespace": "team-a", "generation": 3}
	for k, v := range metadata {
		meta[k] = v
	}
	body := map[string]any{"workspaceId": "948bab9a-2cad-4a3f-af1f-01bfe260f85b"}
	for k, v := range spec {
		body[k] = v
	}
	data, err := json.Marshal(map[string]any{
		"apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
		"metadata": meta, "spec": body,
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRotateIsOfferedUnlessSuspendedOrDeleting(t *testing.T) {
	discovery := script(t, discoveryPath)
	cases := []struct {
		name     string
		object   []byte
		disabled bool
	}{
		{"a running token", token(t, nil, nil), false},
		{"suspend: false", token(t, nil, map[string]any{"suspend": false}), false},
		{"suspended", token(t, nil, map[string]any{"suspend": true}), true},
		{"being deleted", token(t, map[string]any{"deletionTimestamp": "2026-12-03T10:00:00Z"}, nil), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			actions, err := Discover(discovery, c.object)
			if err != nil {
				t.Fatal(err)
			}
			disabled, offered := actions["rotate"]
			if !offered || len(actions) != 1 {
				t.Fatalf("actions %v, want rotate only", actions)
			}
			if disabled != c.disabled {
				t.Errorf("rotate disabled = %v, want %v", disabled, c.disabled)
			}
		})
	}
}

// A W3C trace id (what the operator takes as the rotation's trace, with its reason): zeros,
// then the UTC time, 32 digits in all.
var rotateValue = regexp.MustCompile(`^0{18}20\d{12}$`)

func annotations(t *testing.T, object map[string]any) map[string]any {
	metadata, _ := object["metadata"].(map[string]any)
	found, ok := metadata["annotations"].(map[string]any)
	if !ok {
		t.Fatalf("no annotations in %v", object)
	}
	return found
}

func TestRotateSetsANewRotateAnnotationAndTheReasonAndNothingElse(t *testing.T) {
	rotate := script(t, rotatePath)
	for _, c := range []struct {
		name   string
		before map[string]any
	}{
		{"no annotations yet", nil},
		{"a rotation asked before, another annotation", map[string]any{"annotations": map[string]any{
			"tokenwarden.dev/rotate": "previous", "team": "payments",
		}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			object := token(t, c.before, map[string]any{"rotation": map[string]any{"every": "720h"}})
			after, err := Act(rotate, object)
			if err != nil {
				t.Fatal(err)
			}
			got := annotations(t, after)
			value, _ := got["tokenwarden.dev/rotate"].(string)
			if !rotateValue.MatchString(value) {
				t.Errorf("tokenwarden.dev/rotate = %q, want a trace id made of the UTC time", value)
			}
			if got["tokenwarden.dev/rotate-reason"] != "Argo CD rotate action" {
				t.Errorf("rotate-reason = %v", got["tokenwarden.dev/rotate-reason"])
			}
			var want map[string]any
			if err := json.Unmarshal(object, &want); err != nil {
				t.Fatal(err)
			}
			if c.before != nil && got["team"] != "payments" {
				t.Errorf("another annotation was lost: %v", got)
			}
			delete(after["metadata"].(map[string]any), "annotations")
			delete(want["metadata"].(map[string]any), "annotations")
			if !equalJSON(t, after, want) {
				t.Errorf("the action changed more than annotations:\n got %v\nwant %v", after, want)
			}
		})
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}

// docs/gitops.md shows the argocd-cm entry users paste; its two scripts must be the tested ones.
func TestTheArgoCDActionSnippetsAreTheTestedScripts(t *testing.T) {
	for key, path := range map[string]string{
		"discovery.lua: |": discoveryPath,
		"action.lua: |":    rotatePath,
	} {
		if got, want := snippet(t, key), script(t, path); got != strings.TrimRight(want, "\n") {
			t.Errorf("the %q block in docs/gitops.md differs from %s; paste the script again", key, path)
		}
	}
}
