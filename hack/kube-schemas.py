#!/usr/bin/env python3
"""Writes kubeconform JSON schemas generated from a live API server's OpenAPI v3.

kubeconform normally downloads its schemas; nothing can be downloaded here, so they are made
from the real kube-apiserver (and the CRDs installed in it) instead:

    KUBECONFIG=... hack/kube-schemas.py --kubectl PATH --out DIR

For every kind the server publishes, DIR/<group>/<version>/<kind>.json is a standalone
(Draft 4) schema: its own definitions (only those it reaches), `nullable` turned into a null
type, and "strict" like kubeconform's own -strict schemas: an object that lists its
properties admits no others (unless it preserves unknown fields). Use it with
    kubeconform -strict -schema-location 'DIR/{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json'
where Group is `v1` for the core group (kubeconform's own convention for "v1").
Only the standard library is used.
"""

import argparse
import json
import os
import subprocess
import sys

PREFIX = "#/components/schemas/"


def get_raw(kubectl, path):
    out = subprocess.run([kubectl, "get", "--raw", path], check=True, capture_output=True)
    return json.loads(out.stdout)


def convert(node):
    """OpenAPI v3 schema -> JSON Schema Draft 4, strict."""
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(PREFIX):
            out[key] = "#/definitions/" + value[len(PREFIX):]
        elif key in ("properties", "definitions", "patternProperties"):
            out[key] = {k: convert(v) for k, v in value.items()}
        elif key == "nullable":
            continue
        else:
            out[key] = convert(value)
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = types + ["null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def refs(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            found.add(ref[len(PREFIX):])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def closure(schemas, root):
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        found = set()
        refs(schemas[name], found)
        todo.extend(found - seen)
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    written = 0
    index = get_raw(args.kubectl, "/openapi/v3")["paths"]
    for path, entry in sorted(index.items()):
        if not (path == "api/v1" or (path.startswith("apis/") and path.count("/") == 2)):
            continue
        doc = get_raw(args.kubectl, entry["serverRelativeURL"])
        schemas = doc.get("components", {}).get("schemas", {})
        group_version = "v1" if path == "api/v1" else path[len("apis/"):]
        for name, schema in schemas.items():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                gv = gvk["version"] if not gvk["group"] else f"{gvk['group']}/{gvk['version']}"
                if gv != group_version:
                    continue
                group = gvk["group"] or "v1"
                target = os.path.join(args.out, group, gvk["version"], gvk["kind"].lower() + ".json")
                definitions = {n: convert(schemas[n]) for n in sorted(closure(schemas, name))}
                standalone = {
                    "$schema": "http://json-schema.org/draft-04/schema#",
                    "$ref": "#/definitions/" + name,
                    "definitions": definitions,
                }
                # apiVersion and kind must be exactly this kind's (as kubeconform's schemas do).
                root = definitions[name]
                props = root.get("properties", {})
                if "apiVersion" in props:
                    props["apiVersion"] = dict(props["apiVersion"], enum=[gv])
                if "kind" in props:
                    props["kind"] = dict(props["kind"], enum=[gvk["kind"]])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "w") as f:
                    json.dump(standalone, f, indent=1, sort_keys=True)
                written += 1
    if written == 0:
        sys.exit("kube-schemas: the API server published no kinds")
    print(f"kube-schemas: {written} schemas in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
