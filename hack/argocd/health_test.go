package argocd

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

const scriptPath = "../../docs/argocd-health.lua"

// The check of both issuer kinds (one script, pasted under both keys of argocd-cm).
const issuerScriptPath = "issuer-health.lua"

// A WorkspaceToken at metadata.generation `generation` with `status` (nil: no status yet).
func workspaceToken(t *testing.T, generation int64, status map[string]any) []byte {
	obj := map[string]any{
		"apiVersion": "tokenwarden.dev/v1alpha1",
		"kind":       "WorkspaceToken",
		"metadata":   map[string]any{"name": "agent-alpha", "namespace": "team-a", "generation": generation},
		"spec":       map[string]any{"workspaceId": "948bab9a-2cad-4a3f-af1f-01bfe260f85b"},
	}
	if status != nil {
		obj["status"] = status
	}
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func condition(typ, status, reason, message string, generation int64) map[string]any {
	return map[string]any{
		"type": typ, "status": status, "reason": reason, "message": message,
		"observedGeneration": generation, "lastTransitionTime": "2026-11-24T10:00:00Z",
	}
}

func asExpected(generation int64) map[string]any {
	return condition("Degraded", "False", "AsExpected", "the last reconcile succeeded", generation)
}

// What the operator writes once version `version` is active at `observed`.
func active(observed int64, version int, conditions ...map[string]any) map[string]any {
	return map[string]any{
		"observedGeneration": observed,
		"currentVersion":     version,
		"tokenVersion":       fmt.Sprintf("v%d", version),
		"tokenPrefix":        "wst_Ab3d",
		"tokenSha256":        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
		"versions": []any{
			map[string]any{"version": version, "secretName": "agent-alpha-v1", "state": "Active"},
		},
		"conditions": conditions,
	}
}

func notReady(observed int64, reason, message string, degraded map[string]any) map[string]any {
	return map[string]any{
		"observedGeneration": observed,
		"conditions":         []any{condition("Ready", "False", reason, message, observed), degraded},
	}
}

func TestHealthOfWorkspaceTokens(t *testing.T) {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		object  []byte
		status  string
		message string // a substring of the message
	}{
		{
			name:    "no status yet: the operator has not seen it",
			object:  workspaceToken(t, 1, nil),
			status:  "Progressing",
			message: "Waiting for tokenwarden to reconcile",
		},
		{
			name:    "status without conditions",
			object:  workspaceToken(t, 1, map[string]any{"observedGeneration": 1}),
			status:  "Progressing",
			message: "Waiting for the Ready condition",
		},
		{
			name: "conditions from an older generation: a spec change not observed yet",
			object: workspaceToken(t, 3, active(2, 2,
				condition("Ready", "True", "Active", "version 2 is active", 2), asExpected(2))),
			status:  "Progressing",
			message: "Waiting for tokenwarden to observe generation 3",
		},
		{
			name:    "first pass not done: Ready=False Pending",
			object:  workspaceToken(t, 1, notReady(1, "Pending", "not reconciled yet", asExpected(1))),
			status:  "Progressing",
			message: "not reconciled yet",
		},
		{
			name: "Ready=True: the current version is active",
			object: workspaceToken(t, 2, active(2, 3,
				condition("Ready", "True", "Active", "version 3 is active", 2), asExpected(2))),
			status:  "Healthy",
			message: "Token v3 is active",
		},
		{
			name: "Ready=True without tokenVersion names currentVersion",
			object: workspaceToken(t, 2, map[string]any{
				"observedGeneration": 2,
				"currentVersion":     4,
				"conditions": []any{
					condition("Ready", "True", "Active", "version 4 is active", 2), asExpected(2),
				},
			}),
			status:  "Healthy",
			message: "Token v4 is active",
		},
		{
			name: "Degraded=True while Ready=True: still serving a valid token, the failure is named",
			object: workspaceToken(t, 2, active(2, 3,
				condition("Ready", "True", "Active", "version 3 is active", 2),
				condition("Degraded", "True", "IssuerUnreachable", "the issuer is unreachable: connection refused", 2))),
			status:  "Healthy",
			message: "Token v3 is active; degraded: IssuerUnreachable: the issuer is unreachable",
		},
		{
			name: "a failed pass after a spec change: the old token is still served, the change is not applied",
			object: workspaceToken(t, 3, active(2, 2,
				condition("Ready", "True", "Active", "version 2 is active", 3),
				condition("Degraded", "True", "AdminSecretMissing", "Secret platform-admin not found", 3))),
			status:  "Progressing",
			message: "Generation 3 not applied yet, v2 is still active; last reconcile failed: AdminSecretMissing",
		},
		{
			name: "suspended",
			object: workspaceToken(t, 4, notReady(4, "Suspended",
				"spec.suspend is true: no writes and no rotation", asExpected(4))),
			status:  "Suspended",
			message: "spec.suspend is true",
		},
		{
			name: "a foreign Secret holds the name",
			object: workspaceToken(t, 1, notReady(1, "SecretConflict",
				"Secret agent-alpha exists and is not owned by this WorkspaceToken; it is left untouched", asExpected(1))),
			status:  "Degraded",
			message: "SecretConflict: Secret agent-alpha exists and is not owned by this WorkspaceToken",
		},
		{
			name: "an invalid cron expression",
			object: workspaceToken(t, 2, notReady(2, "InvalidSpec",
				"spec.rotation.schedule: invalid cron expression", asExpected(2))),
			status:  "Degraded",
			message: "InvalidSpec: spec.rotation.schedule: invalid cron expression",
		},
		{
			name: "a failure before any token existed (status.observedGeneration never written)",
			object: workspaceToken(t, 1, map[string]any{"conditions": []any{
				condition("Ready", "False", "AdminSecretMissing", "Secret platform-admin not found", 1),
				condition("Degraded", "True", "AdminSecretMissing", "Secret platform-admin not found", 1),
			}}),
			status:  "Degraded",
			message: "AdminSecretMissing: Secret platform-admin not found",
		},
		{
			name: "being deleted: the finalizer revokes the tokens",
			object: workspaceToken(t, 2, notReady(2, "Deleting",
				"the WorkspaceToken is being deleted", asExpected(2))),
			status:  "Progressing",
			message: "the WorkspaceToken is being deleted",
		},
		{
			name: "deletion held up by the issuer",
			object: workspaceToken(t, 2, notReady(2, "Deleting", "the WorkspaceToken is being deleted",
				condition("Degraded", "True", "IssuerTimeout", "the issuer did not answer within 45s", 2))),
			status:  "Progressing",
			message: "being deleted; last reconcile failed: IssuerTimeout",
		},
		{
			name: "Ready=Unknown",
			object: workspaceToken(t, 1, map[string]any{"observedGeneration": 1, "conditions": []any{
				condition("Ready", "Unknown", "", "", 1),
			}}),
			status:  "Progressing",
			message: "Ready is Unknown",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			health, err := Evaluate(string(script), c.object)
			if err != nil {
				t.Fatalf("the health check failed: %v", err)
			}
			if health.Status != c.status || !strings.Contains(health.Message, c.message) {
				t.Errorf("got %s %q, want %s with %q", health.Status, health.Message, c.status, c.message)
			}
		})
	}
}

// docs/gitops.md shows the argocd-cm entry users paste; it must be the tested script.
func TestTheArgoCDConfigMapSnippetIsTheTestedScript(t *testing.T) {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		t.Fatal(err)
	}
	got := snippet(t, "resource.customizations.health.tokenwarden.dev_WorkspaceToken: |")
	if got != strings.TrimRight(string(script), "\n") {
		t.Errorf("the argocd-cm snippet in docs/gitops.md differs from docs/argocd-health.lua; paste the script again")
	}
}

// snippet is the block docs/gitops.md indents under the line `key` (a YAML literal block).
func snippet(t *testing.T, key string) string {
	doc, err := os.ReadFile("../../docs/gitops.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(doc), "\n")
	start := -1
	for i, line := range lines {
		if strings.TrimSpace(line) == key {
			start = i + 1
			break
		}
	}
	if start < 0 {
		t.Fatalf("docs/gitops.md has no %q entry", key)
	}
	indent := len(lines[start]) - len(strings.TrimLeft(lines[start], " "))
	var block []string
	for _, line := range lines[start:] {
		if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, strings.Repeat(" ", indent)) {
			break
		}
		if len(line) >= indent {
			line = line[indent:]
		}
		block = append(block, line)
	}
	return strings.TrimRight(strings.Join(block, "\n"), "\n")
}

// Argo CD reads the returned table as JSON; a script error there is a health of Unknown.
func TestTheScriptNeverFailsOnOddShapes(t *testing.T) {
	for _, path := range []string{scriptPath, issuerScriptPath} {
		script, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		oddShapes(t, path, string(script))
	}
}

func oddShapes(t *testing.T, path, script string) {
	for _, object := range []string{
		`{"metadata":{"name":"x"}}`,
		`{"metadata":{"name":"x","generation":1},"status":{}}`,
		`{"metadata":{"name":"x","generation":1},"status":{"conditions":[]}}`,
		`{"metadata":{"name":"x","generation":1},"status":{"conditions":[{"type":"Ready","status":"False"}]}}`,
		`{"metadata":{"name":"x","generation":1},"status":{"conditions":[{"type":"Ready","status":"True"},{"type":"Degraded","status":"True"}]}}`,
		`{"kind":"TokenIssuer","metadata":{"name":"x","generation":2},"status":{"conditions":[{"type":"Ready"}]}}`,
	} {
		health, err := Evaluate(script, []byte(object))
		if err != nil || health.Status == "Unknown" {
			t.Errorf("%s on %s: %+v, %v", path, object, health, err)
		}
	}
}

// A TokenIssuer (namespaced) or ClusterTokenIssuer at metadata.generation `generation` with
// `status` (nil: no status yet).
func issuer(t *testing.T, kind string, generation int64, status map[string]any) []byte {
	metadata := map[string]any{"name": "platform", "generation": generation}
	if kind == "TokenIssuer" {
		metadata["namespace"] = "team-a"
	}
	obj := map[string]any{
		"apiVersion": "tokenwarden.dev/v1alpha1",
		"kind":       kind,
		"metadata":   metadata,
		"spec": map[string]any{"http": map[string]any{
			"url":                 "https://platform.example.com",
			"adminTokenSecretRef": map[string]any{"name": "platform-admin", "key": "token"},
		}},
	}
	if status != nil {
		obj["status"] = status
	}
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// What the operator writes: status.observedGeneration and the Ready condition, both at `observed`.
func checked(observed int64, status, reason, message string) map[string]any {
	return map[string]any{
		"observedGeneration": observed,
		"conditions":         []any{condition("Ready", status, reason, message, observed)},
	}
}

func TestHealthOfTokenIssuers(t *testing.T) {
	script, err := os.ReadFile(issuerScriptPath)
	if err != nil {
		t.Fatal(err)
	}
	const resolves = "the admin Secret resolves and https://platform.example.com may be called"
	for _, kind := range []string{"TokenIssuer", "ClusterTokenIssuer"} {
		cases := []struct {
			name    string
			object  []byte
			status  string
			message string // a substring of the message
		}{
			{
				name:    "no status yet: the operator has not checked it",
				object:  issuer(t, kind, 1, nil),
				status:  "Progressing",
				message: "Waiting for tokenwarden to check the " + kind,
			},
			{
				name:    "status without conditions",
				object:  issuer(t, kind, 1, map[string]any{"observedGeneration": 1}),
				status:  "Progressing",
				message: "Waiting for the Ready condition",
			},
			{
				name:    "Ready=True",
				object:  issuer(t, kind, 2, checked(2, "True", "Ready", resolves)),
				status:  "Healthy",
				message: resolves,
			},
			{
				name:    "Ready=True without a message",
				object:  issuer(t, kind, 1, checked(1, "True", "Ready", "")),
				status:  "Healthy",
				message: "The " + kind + " is Ready",
			},
			{
				name: "Ready=False: the admin Secret is missing",
				object: issuer(t, kind, 1, checked(1, "False", "AdminSecretMissing",
					"Secret tokenwarden-system/platform-admin not found")),
				status:  "Degraded",
				message: "AdminSecretMissing: Secret tokenwarden-system/platform-admin not found",
			},
			{
				name: "Ready=False: a plaintext URL",
				object: issuer(t, kind, 3, checked(3, "False", "InsecureUrl",
					"url must be https:// (http:// only with allowInsecureHttp: true)")),
				status:  "Degraded",
				message: "InsecureUrl: url must be https://",
			},
			{
				name:    "Ready=True of an older generation: an edited spec not checked yet",
				object:  issuer(t, kind, 3, checked(2, "True", "Ready", resolves)),
				status:  "Progressing",
				message: "Waiting for tokenwarden to observe generation 3",
			},
			{
				name: "Ready=False of an older generation: a fix not checked yet",
				object: issuer(t, kind, 2, checked(1, "False", "AdminSecretMissing",
					"Secret tokenwarden-system/platform-admin not found")),
				status:  "Progressing",
				message: "Waiting for tokenwarden to observe generation 2",
			},
			{
				name: "a condition without observedGeneration: status.observedGeneration decides",
				object: issuer(t, kind, 2, map[string]any{
					"observedGeneration": 1,
					"conditions": []any{map[string]any{
						"type": "Ready", "status": "True", "reason": "Ready", "message": resolves,
					}},
				}),
				status:  "Progressing",
				message: "Waiting for tokenwarden to observe generation 2",
			},
			{
				name:    "Ready=Unknown",
				object:  issuer(t, kind, 1, checked(1, "Unknown", "", "")),
				status:  "Progressing",
				message: "Ready is Unknown",
			},
		}
		for _, c := range cases {
			t.Run(kind+"/"+c.name, func(t *testing.T) {
				health, err := Evaluate(string(script), c.object)
				if err != nil {
					t.Fatalf("the health check failed: %v", err)
				}
				if health.Status != c.status || !strings.Contains(health.Message, c.message) {
					t.Errorf("got %s %q, want %s with %q", health.Status, health.Message, c.status, c.message)
				}
			})
		}
	}
}
