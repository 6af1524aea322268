#!/usr/bin/env python3
"""A stand-in for kube-linter's built-in checks, for rendered manifests (stdin or files).

kube-linter (golang.stackrox.io/kube-linter) cannot be built here: its module host is not
reachable through the Go module proxy. This implements, under kube-linter's names and with
its semantics, the built-in checks that can apply to this chart's objects (Deployment,
Service, PDB, RBAC, ServiceAccount, ServiceMonitor, CRD), reads the same .kube-linter.yaml
(checks.exclude) and honours `ignore-check.kube-linter.io/<check>` annotations. Exit 1 on
any finding. When a real `kube-linter` is on PATH, hack/chart-check.sh runs that too.
"""

import argparse
import sys

try:
    import yaml
except ImportError:
    sys.exit("kube-lint: needs PyYAML (apt-get install python3-yaml)")

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
SENSITIVE_MOUNTS = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr", "/var/run/docker.sock")


def pod_spec(obj):
    spec = obj.get("spec") or {}
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def pod_labels(obj):
    if obj["kind"] == "Pod":
        return obj.get("metadata", {}).get("labels") or {}
    return (obj.get("spec") or {}).get("template", {}).get("metadata", {}).get("labels") or {}


def containers(spec):
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def effective(container, spec, key):
    value = (container.get("securityContext") or {}).get(key)
    return value if value is not None else (spec.get("securityContext") or {}).get(key)


def check_workload(obj, objects, report):
    spec = pod_spec(obj)
    name = obj["metadata"]["name"]
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            report(f"host-{field[4:].lower()}", f"{field} is set")
    if spec.get("serviceAccount"):
        report("deprecated-service-account-field", "serviceAccount is deprecated")
    sa = spec.get("serviceAccountName") or "default"
    if sa == "default":
        report("default-service-account", "runs as the default ServiceAccount")
    elif not any(o["kind"] == "ServiceAccount" and o["metadata"]["name"] == sa for o in objects):
        report("non-existent-service-account", f"ServiceAccount {sa} is not in the bundle")
    for sysctl in (spec.get("securityContext") or {}).get("sysctls") or []:
        if sysctl.get("name", "").startswith(("kernel.", "net.")):
            report("unsafe-sysctls", f"sysctl {sysctl['name']}")
    if not spec.get("priorityClassName"):
        report("priority-class-name", "no priorityClassName")
    affinity = spec.get("affinity") or {}
    if not affinity.get("nodeAffinity"):
        report("no-node-affinity", "no node affinity")
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    if obj["kind"] in ("Deployment", "StatefulSet"):
        if replicas < 3:
            report("minimum-replicas", f"{replicas} replica(s) < 3")
        anti = affinity.get("podAntiAffinity") or {}
        if replicas > 1 and not (anti.get("preferredDuringSchedulingIgnoredDuringExecution")
                                 or anti.get("requiredDuringSchedulingIgnoredDuringExecution")):
            report("no-anti-affinity", f"{replicas} replicas without podAntiAffinity")
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        labels = pod_labels(obj)
        if any(labels.get(k) != v for k, v in selector.items()):
            report("mismatching-selector", "selector does not match the pod labels")
    for volume in spec.get("volumes") or []:
        host = (volume.get("hostPath") or {}).get("path")
        if host:
            if host.rstrip("/") in SENSITIVE_MOUNTS or host == "/":
                report("sensitive-host-mounts", f"hostPath {host}")
            if host.endswith("docker.sock"):
                report("docker-sock", f"hostPath {host}")
            report("writable-host-mount", f"hostPath {host}")
    for c in containers(spec):
        cname = c.get("name")
        where = f"container {cname}"
        image = c.get("image", "")
        if image.endswith(":latest") or (":" not in image.rsplit("/", 1)[-1] and "@" not in image):
            report("latest-tag", f"{where}: image {image} has no fixed tag")
        if "@sha256:" not in image:
            report("latest-tag-or-digest", f"{where}: image {image} is not pinned by digest")
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            report("privileged-container", where)
        if sc.get("allowPrivilegeEscalation") is not False:
            report("privilege-escalation-container", f"{where}: allowPrivilegeEscalation not false")
        if not sc.get("readOnlyRootFilesystem"):
            report("no-read-only-root-fs", where)
        drops = [d.upper() for d in (sc.get("capabilities") or {}).get("drop") or []]
        if "ALL" not in drops and "NET_RAW" not in drops:
            report("drop-net-raw-capability", f"{where}: NET_RAW not dropped")
        if not effective(c, spec, "runAsNonRoot") and not (effective(c, spec, "runAsUser") or 0) > 0:
            report("run-as-non-root", where)
        resources = c.get("resources") or {}
        for res in ("cpu", "memory"):
            if not (resources.get("requests") or {}).get(res) or (
                res == "memory" and not (resources.get("limits") or {}).get(res)
            ):
                report(f"unset-{res}-requirements", f"{where}: {res} request/limit unset")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        for p in c.get("ports") or []:
            if p.get("containerPort") == 22:
                report("ssh-port", where)
            pname = p.get("name")
            if pname and (len(pname) > 15 or not pname.replace("-", "").isalnum()):
                report("invalid-target-ports", f"{where}: port name {pname}")
        for probe, check in (("livenessProbe", "liveness-port"), ("readinessProbe", "readiness-port"),
                             ("startupProbe", "startup-port")):
            p = c.get(probe)
            if p is None:
                if probe != "startupProbe":
                    report(f"no-{probe[:-5]}-probe", where)
                continue
            port = (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
            if port is not None and port not in ports and port not in ports.values():
                report(check, f"{where}: {probe} port {port} is not a container port")
        for env in c.get("env") or []:
            if "secretKeyRef" in (env.get("valueFrom") or {}):
                report("read-secret-from-env-var", f"{where}: env {env['name']}")
            if env.get("value") and any(w in env["name"].upper() for w in ("SECRET", "PASSWORD", "TOKEN")):
                report("env-var-secret", f"{where}: env {env['name']} holds a literal")


def check_rbac(obj, objects, report):
    for rule in obj.get("rules") or []:
        verbs, resources = rule.get("verbs") or [], rule.get("resources") or []
        if "*" in verbs or "*" in resources or "*" in (rule.get("apiGroups") or []):
            report("wildcard-in-rules", f"rule {rule}")
        if "secrets" in resources and "" in (rule.get("apiGroups") or []) and \
                set(verbs) & {"get", "list", "watch", "*"}:
            report("access-to-secrets", f"reads Secrets ({', '.join(verbs)})")
        if "pods" in resources and "create" in verbs:
            report("access-to-create-pods", "creates pods")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=".kube-linter.yaml")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    with open(args.config) as f:
        config = yaml.safe_load(f) or {}
    excluded = set((config.get("checks") or {}).get("exclude") or [])
    objects = []
    sources = args.files or ["-"]
    for source in sources:
        text = sys.stdin.read() if source == "-" else open(source).read()
        objects += [d for d in yaml.safe_load_all(text) if d]

    findings, accepted = [], set()
    for obj in objects:
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        ignored = {k.split("/", 1)[1] for k in (meta.get("annotations") or {})
                   if k.startswith("ignore-check.kube-linter.io/")}

        def report(check, message, kind=kind, meta=meta, ignored=ignored):
            if check in excluded or check in ignored:
                accepted.add(check)
            else:
                findings.append(f"{kind}/{meta.get('name')}: [{check}] {message}")

        if kind in WORKLOADS:
            check_workload(obj, objects, report)
        elif kind in ("Role", "ClusterRole"):
            check_rbac(obj, objects, report)
        elif kind == "Service":
            selector = (obj.get("spec") or {}).get("selector") or {}
            if selector and not any(
                all(pod_labels(o).get(k) == v for k, v in selector.items())
                for o in objects if o.get("kind") in WORKLOADS
            ):
                report("dangling-service", f"selector {selector} matches no pod")
            if (obj.get("spec") or {}).get("type") in ("NodePort", "LoadBalancer"):
                report("exposed-services", "exposed outside the cluster")
        elif kind == "PodDisruptionBudget":
            spec = obj.get("spec") or {}
            if spec.get("maxUnavailable") in (0, "0", "0%"):
                report("pdb-max-unavailable", "maxUnavailable 0 blocks every eviction")
            if "minAvailable" in spec:
                report("pdb-min-available", "check minAvailable against replicas")
            if spec.get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
                report("pdb-unhealthy-pod-eviction-policy", "unhealthyPodEvictionPolicy not AlwaysAllow")
        elif kind in ("ClusterRoleBinding", "RoleBinding"):
            if (obj.get("roleRef") or {}).get("name") == "cluster-admin":
                report("cluster-admin-role-binding", "binds cluster-admin")
        if (obj.get("apiVersion") or "").startswith("extensions/v1beta"):
            report("no-extensions-v1beta", obj["apiVersion"])

    for f in findings:
        print(f, file=sys.stderr)
    print(f"kube-lint: {len(objects)} objects, {len(findings)} finding(s); "
          f"accepted by .kube-linter.yaml: {', '.join(sorted(accepted)) or 'none'}", file=sys.stderr)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
