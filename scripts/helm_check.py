#!/usr/bin/env python3
"""Lint and render the Helm chart through the real Helm library (helm-sdkpy).

    .venv/bin/python scripts/helm_check.py                       # default values
    .venv/bin/python scripts/helm_check.py --values helm/state-service/ci/all-features-values.yaml
    .venv/bin/python scripts/helm_check.py --all                 # defaults + every ci/*.yaml

For each value set:

1. `helm lint` (helm_sdkpy.Lint) on a copy of the chart whose values.yaml is
   the chart defaults merged with the value files, because the library's lint
   takes no values of its own. Any WARNING or ERROR fails. The library reports
   only the path of a finding, not its text; step 2 gives the text.
2. A render: helm_sdkpy exposes no `helm template` / `--dry-run`, so the
   chart is installed (helm_sdkpy.Install) against a stub Kubernetes API
   server in this process. Helm runs its whole client side for real - values
   schema validation, templates, kind-to-resource mapping through discovery -
   and the stub records the objects Helm creates instead of running them.
3. Checks on the rendered objects that the chart promises (hardening, gRPC
   probes, grace period longer than the drain, Service port names, secrets
   only by reference).

Prints one JSON document per value set on stdout (`env` lists the container's
environment variable names, `kinds` the rendered object kinds); exits 1 on any
failure, with the reasons on stderr. Used by CI and tests/deploy_artifacts.rs.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "state-service"
RELEASE = "ci"
NAMESPACE = "state-system"

# helm.sh/helm/v4/pkg/lint/support: 0 unknown, 1 info, 2 warning, 3 error.
SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
FAIL_AT = 2

# What the stub API server advertises: the built-in APIs the chart uses plus
# the Prometheus Operator CRD. A kind rendered with a group/version missing
# here fails Helm's mapping, as it would on a real cluster.
API_RESOURCES: dict[str, dict[str, list[tuple[str, str, bool]]]] = {
    "": {
        "v1": [
            ("secrets", "Secret", True),
            ("services", "Service", True),
            ("serviceaccounts", "ServiceAccount", True),
            ("configmaps", "ConfigMap", True),
            ("namespaces", "Namespace", False),
        ]
    },
    "apps": {"v1": [("deployments", "Deployment", True)]},
    "autoscaling": {"v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)]},
    "policy": {"v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)]},
    "networking.k8s.io": {"v1": [("networkpolicies", "NetworkPolicy", True)]},
    "monitoring.coreos.com": {"v1": [("servicemonitors", "ServiceMonitor", True)]},
}


class StubKubeApi(BaseHTTPRequestHandler):
    """Just enough of the Kubernetes API for `helm install`: version,
    discovery, 404 for every lookup, and create/update that echo the object.
    JSON bodies are the chart's objects; Helm's own release records arrive as
    protobuf Secrets and are acknowledged without being decoded."""

    created: list[dict] = []
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self) -> None:
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"})

    def do_GET(self):  # noqa: N802
        path = urlparse(self.path).path
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0",
                                    "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            groups = []
            for group, versions in API_RESOURCES.items():
                if not group:
                    continue
                vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
                groups.append({"name": group, "versions": vs, "preferredVersion": vs[0]})
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        m = re.fullmatch(r"/api/(v1)|/apis/([^/]+)/([^/]+)", path)
        if m:
            group, version = ("", m.group(1)) if m.group(1) else (m.group(2), m.group(3))
            resources = API_RESOURCES.get(group, {}).get(version)
            if resources is None:
                return self._not_found()
            return self._send(200, {
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": [
                    {"name": name, "singularName": kind.lower(), "namespaced": namespaced,
                     "kind": kind, "verbs": ["create", "delete", "get", "list", "patch",
                                             "update", "watch"]}
                    for name, kind, namespaced in resources
                ],
            })
        if path.endswith("/secrets"):  # Helm's release history: none yet
            return self._send(200, {"kind": "SecretList", "apiVersion": "v1",
                                    "metadata": {}, "items": []})
        return self._not_found()

    def _read(self) -> dict:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "json" in (self.headers.get("Content-Type") or ""):
            obj = json.loads(raw)
            with self.lock:
                self.created.append(copy.deepcopy(obj))
            return obj
        name = urlparse(self.path).path.rsplit("/", 1)[-1]
        return {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name}}

    def do_POST(self):  # noqa: N802
        obj = self._read()
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", NAMESPACE)
        meta.update(uid="00000000-0000-0000-0000-000000000000", resourceVersion="1")
        self._send(201, obj)

    def do_PUT(self):  # noqa: N802
        obj = self._read()
        obj.setdefault("metadata", {})["resourceVersion"] = "2"
        self._send(200, obj)

    do_PATCH = do_PUT  # noqa: N815


def deep_merge(base: dict, override: dict) -> dict:
    """Helm's value coalescing: maps merge, everything else replaces."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_values(files: list[Path]) -> dict:
    merged: dict = {}
    for f in files:
        data = yaml.safe_load(f.read_text()) or {}
        if not isinstance(data, dict):
            raise SystemExit(f"{f}: values must be a mapping")
        merged = deep_merge(merged, data)
    return merged


def lint(helm, config, overrides: dict) -> tuple[list[dict], list[str]]:
    """Lints a copy of the chart whose values.yaml includes the overrides."""
    with tempfile.TemporaryDirectory(prefix="helm-lint-") as tmp:
        chart = Path(tmp) / CHART.name
        shutil.copytree(CHART, chart)
        defaults = yaml.safe_load((CHART / "values.yaml").read_text()) or {}
        (chart / "values.yaml").write_text(yaml.safe_dump(deep_merge(defaults, overrides)))
        result = asyncio.run(helm.Lint(config).run(str(chart)))
    messages = [
        {"severity": SEVERITY.get(m.get("Severity"), str(m.get("Severity"))), "path": m.get("Path")}
        for m in result.get("Messages") or []
    ]
    failures = [
        f"helm lint: {m['severity']} in {m['path']} (run the render step for the message)"
        for m, raw in zip(messages, result.get("Messages") or [])
        if (raw.get("Severity") or 0) >= FAIL_AT
    ]
    if result.get("Errors") and not failures:
        failures.append(f"helm lint reported {len(result['Errors'])} error(s)")
    return messages, failures


def render(helm, overrides: dict) -> tuple[list[dict], str, dict]:
    """Installs into the stub API server; returns the created objects."""
    StubKubeApi.created = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubKubeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        kubeconfig = yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "stub", "user": {"token": "stub"}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub",
                                                      "namespace": NAMESPACE}}],
        })
        config = helm.Configuration(namespace=NAMESPACE, kubeconfig=kubeconfig)
        result = asyncio.run(helm.Install(config).run(
            RELEASE, str(CHART), values=overrides or None, wait=False, timeout=60))
    finally:
        server.shutdown()
        server.server_close()
    return list(StubKubeApi.created), result.get("manifest", ""), result


def check(objects: list[dict]) -> list[str]:
    """The promises the chart makes, checked on what it rendered."""
    errors: list[str] = []
    by_kind: dict[str, list[dict]] = {}
    for o in objects:
        by_kind.setdefault(o.get("kind", "?"), []).append(o)

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        return [f"expected exactly one Deployment, got {len(deployments)}"]
    pod = deployments[0]["spec"]["template"]["spec"]
    containers = pod.get("containers", [])
    if len(containers) != 1:
        return [f"expected one container, got {len(containers)}"]
    c = containers[0]

    sc = c.get("securityContext") or {}
    if sc.get("runAsNonRoot") is not True and (pod.get("securityContext") or {}).get("runAsNonRoot") is not True:
        errors.append("runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        errors.append("capabilities.drop does not contain ALL")

    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if set(ports) != {"grpc", "metrics"}:
        errors.append(f"container ports are {sorted(map(str, ports))}, want grpc and metrics")
    tls = any(e.get("name") == "STATE_TLS_CERT" for e in c.get("env", []))
    for probe in ("livenessProbe", "readinessProbe"):
        p = c.get(probe) or {}
        if tls:
            # The kubelet's gRPC probe cannot speak TLS: the chart runs the
            # binary's own health check over TLS against the gRPC port.
            cmd = (p.get("exec") or {}).get("command") or []
            if cmd[:2] != ["/usr/local/bin/state-service", "health"]:
                errors.append(f"{probe} with server TLS is not `state-service health`: {cmd}")
            elif f"127.0.0.1:{ports.get('grpc')}" not in cmd or "--ca-file" not in cmd:
                errors.append(f"{probe} does not check the grpc port over TLS: {cmd}")
            continue
        grpc = p.get("grpc")
        if not grpc:
            errors.append(f"{probe} is not a native gRPC probe")
        elif grpc.get("port") != ports.get("grpc"):
            errors.append(f"{probe} probes port {grpc.get('port')}, the grpc port is {ports.get('grpc')}")

    env = c.get("env", [])
    names = [e["name"] for e in env]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errors.append(f"duplicate env vars: {dupes}")
    env_by_name = {e["name"]: e for e in env}
    for n in ("STATE_LISTEN", "STATE_METRICS_LISTEN"):
        want = f"0.0.0.0:{ports.get('grpc' if n == 'STATE_LISTEN' else 'metrics')}"
        if (env_by_name.get(n) or {}).get("value") != want:
            errors.append(f"{n} is not {want}")
    pw = env_by_name.get("STATE_REDIS_PASSWORD")
    if pw and not ((pw.get("valueFrom") or {}).get("secretKeyRef")):
        errors.append("STATE_REDIS_PASSWORD must come from a secretKeyRef, never a plain value")

    drain = (env_by_name.get("STATE_DRAIN_TIMEOUT") or {}).get("value", "")
    m = re.fullmatch(r"(\d+)s", drain)
    if not m:
        errors.append(f"STATE_DRAIN_TIMEOUT is {drain!r}, expected whole seconds like '10s'")
    else:
        pre_stop = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= int(m.group(1)) + pre_stop:
            errors.append(f"terminationGracePeriodSeconds {grace} is not longer than the drain "
                          f"({m.group(1)}s) plus the preStop sleep ({pre_stop}s)")

    tenants = (env_by_name.get("STATE_TENANTS_FILE") or {}).get("value")
    if tenants:
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        mounts = [vm for vm in c.get("volumeMounts", []) if vm["name"] in secret_volumes]
        if not any(tenants.startswith(vm["mountPath"].rstrip("/") + "/") for vm in mounts):
            errors.append(f"STATE_TENANTS_FILE {tenants} is not inside a mounted Secret")

    services = by_kind.get("Service", [])
    if len(services) != 1:
        errors.append(f"expected one Service, got {len(services)}")
    else:
        sp = {p.get("name"): p for p in services[0]["spec"].get("ports", [])}
        if set(sp) != {"grpc", "metrics"}:
            errors.append(f"Service ports are {sorted(map(str, sp))}, want grpc and metrics")
        elif sp["grpc"].get("appProtocol") != "grpc":
            errors.append("Service port grpc lacks appProtocol: grpc")
    return errors


def run_one(helm, files: list[Path]) -> tuple[dict, list[str]]:
    overrides = load_values(files)
    config = helm.Configuration(namespace=NAMESPACE)
    messages, failures = lint(helm, config, overrides)
    report: dict = {"values": [str(f.relative_to(REPO)) if f.is_relative_to(REPO) else str(f)
                               for f in files],
                    "lint": messages}
    try:
        objects, manifest, result = render(helm, overrides)
    except helm.HelmError as e:
        return report, failures + [f"render: {e}"]
    deployment = next((o for o in objects if o.get("kind") == "Deployment"), None)
    env = []
    if deployment:
        for c in deployment["spec"]["template"]["spec"].get("containers", []):
            env += [e["name"] for e in c.get("env", [])]
    report.update(
        kinds=sorted(o.get("kind", "?") for o in objects),
        objects=[f"{o.get('kind')}/{o.get('metadata', {}).get('name')}" for o in objects],
        env=env,
        manifest_bytes=len(manifest),
        notes="grpcurl" in json.dumps(result.get("info", {})),
    )
    return report, failures + check(objects)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--values", "-f", action="append", type=Path, default=[],
                    help="values file (repeatable, later files win)")
    ap.add_argument("--all", action="store_true",
                    help="check the defaults and then every ci/*-values.yaml")
    args = ap.parse_args()

    # Keep Helm's config/cache/data directories out of the user's home.
    scratch = tempfile.mkdtemp(prefix="helm-home-")
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        os.environ.setdefault(var, os.path.join(scratch, var.lower()))
    try:
        import helm_sdkpy as helm
    except ImportError:
        print("helm-sdkpy is not installed: run scripts/test.sh, or "
              ".venv/bin/pip install --ignore-requires-python helm-sdkpy", file=sys.stderr)
        return 2

    sets = [[f.resolve() for f in args.values]]
    if args.all:
        sets = [[]] + [[f] for f in sorted((CHART / "ci").glob("*-values.yaml"))]
    ok = True
    try:
        for files in sets:
            report, failures = run_one(helm, files)
            print(json.dumps(report))
            label = ", ".join(report["values"]) or "default values"
            for f in failures:
                print(f"FAIL [{label}] {f}", file=sys.stderr)
            ok &= not failures
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
