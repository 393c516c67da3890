"""Offline checks of the rendered Kubernetes manifests, run by deploy/check.sh.

    python deploy/tools/k8s_checks.py RENDERED_DIR [--k8s-versions 1.30.0,1.37.0]

RENDERED_DIR holds one `kustomize build` output per overlay: `app-<overlay>.yaml` for
deploy/k8s/overlays/<overlay>, `kafka-topics-<overlay>.yaml` for deploy/k8s/kafka-topics/overlays/..

1. Schema: every built-in object is validated, strictly (unknown fields are errors), against the
   Kubernetes OpenAPI schemas that the kubernetes-validate package ships (no network). Strimzi
   KafkaTopics have no schema there and are checked by (3) instead.
2. Contract of the app overlays, which a schema cannot know: no Secret objects (secrets are only
   referenced); per Deployment the probes, security contexts, writable /tmp, a `migrate` init
   container on the same image, a termination grace above the services' own drain time, and a
   Service, HorizontalPodAutoscaler, PodDisruptionBudget and ServiceAccount for it; a default-deny
   NetworkPolicy; ConfigMap keys and secret-fed variables that the services really read.
3. KafkaTopics match libs/events/src/referral_events/topics.py (names, partitions, retention).
4. docs/operations.md mentions every setting the services read.
5. Monitoring (prometheus-operator CRs, no offline schema either): ServiceMonitors select the
   platform's Services on a port they have; PrometheusRule groups and rules are well formed
   (alert name, severity, summary, runbook, `for` duration); every alert expression and every
   Grafana dashboard query parses with Prometheus' own PromQL parser (deploy/tools/promqlcheck,
   `--promqlcheck`). That those queries use only metrics the services export is checked on live
   services by tests/e2e/test_observability.py.

Needs PyYAML and kubernetes-validate (deploy/check.sh runs it through `uv run --with`).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import runpy
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_BASE = ROOT / "libs/servicekit/src/servicekit/settings.py"
TOPICS_PY = ROOT / "libs/events/src/referral_events/topics.py"
DOCS = ROOT / "docs/operations.md"
# Variables read by the libraries under the services rather than by their settings classes.
EXTRA_VARIABLES = {"FORWARDED_ALLOW_IPS"}  # uvicorn: whose X-Forwarded-For to trust
EXTRA_PREFIXES = ("OTEL_",)  # OpenTelemetry SDK, standard variables
PRESTOP_SECONDS = 5
# Stages of a graceful stop, each bounded by SHUTDOWN_GRACE_SECONDS (servicekit.cli/runtime):
# uvicorn drains requests; consumers and workers stop; the outbox relay publishes and flushes.
DRAIN_STAGES = 3

# Custom resources kubernetes-validate has no schema for; checked field by field instead.
CRD_GROUPS = ("kafka.strimzi.io/", "monitoring.coreos.com/")
SEVERITIES = {"critical", "warning", "info"}
PROM_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# Grafana template variables, replaced by something PromQL accepts before parsing.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "${job}": ".*",
}

errors: list[str] = []


def error(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


# ---- what the services read ---------------------------------------------------------------------


def _fields(path: Path, class_name: str) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return {
                stmt.target.id.upper()
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and stmt.target.id != "model_config"
            }
    raise SystemExit(f"{path}: class {class_name} not found")


def service_settings() -> tuple[set[str], dict[str, set[str]]]:
    """Variables of ServiceSettings, and each service's own (its config.py's Settings)."""
    common = _fields(SETTINGS_BASE, "ServiceSettings")
    own: dict[str, set[str]] = {}
    for config in sorted(ROOT.glob("services/*/src/*/config.py")):
        service = config.parents[2].name
        own[service] = _fields(config, "Settings") - common
    return common, own


def allowed(name: str, known: set[str]) -> bool:
    return name in known or name in EXTRA_VARIABLES or name.startswith(EXTRA_PREFIXES)


# ---- helpers ------------------------------------------------------------------------------------


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def ident(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


# ---- 1. schema ----------------------------------------------------------------------------------


def check_schema(name: str, docs: list[dict[str, Any]], versions: list[str]) -> tuple[int, int]:
    checked = skipped = 0
    for doc in docs:
        if doc.get("apiVersion", "").startswith(CRD_GROUPS):
            skipped += 1  # CRD: no schema offline; see check_topics and check_monitoring
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                error(f"{name} {ident(doc)}", f"k8s {version} schema: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                error(f"{name} {ident(doc)}", f"no schema for k8s {version}: {exc}")
        checked += 1
    return checked, skipped


# ---- 2. app overlays ----------------------------------------------------------------------------


def check_app(
    name: str, docs: list[dict[str, Any]], common: set[str], own: dict[str, set[str]]
) -> int:
    for doc in docs:
        if doc.get("kind") == "Secret":
            error(name, f"{ident(doc)}: secrets are referenced, never shipped in manifests")

    # Dashboards (for Grafana's sidecar) are not settings; check_monitoring reads them.
    configmaps = {
        d["metadata"]["name"]: d.get("data", {})
        for d in by_kind(docs, "ConfigMap")
        if d["metadata"].get("labels", {}).get("grafana_dashboard") != "1"
    }
    common_cm = next(
        (data for cm, data in configmaps.items() if cm.startswith("referral-common")), None
    )
    if common_cm is None:
        error(name, "no referral-common ConfigMap")
        common_cm = {}
    all_known = common.union(*own.values())
    for cm, data in configmaps.items():
        service = next((s for s in own if cm.startswith(f"{s}-config")), None)
        known = common | own[service] if service else all_known
        for key in data:
            if not allowed(key, known):
                error(
                    name, f"ConfigMap/{cm}: {key} is not a setting {service or 'any service'} reads"
                )

    grace = float(common_cm.get("SHUTDOWN_GRACE_SECONDS", "20"))
    port = int(common_cm.get("HTTP_PORT", "0"))
    if common_cm.get("HTTP_HOST") != "0.0.0.0":  # noqa: S104 (a check, not a bind)
        error(name, "HTTP_HOST must be 0.0.0.0 in containers")

    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    accounts = {d["metadata"]["name"]: d for d in by_kind(docs, "ServiceAccount")}
    policies = by_kind(docs, "NetworkPolicy")

    if not any(
        p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        error(
            name, "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)"
        )

    deployments = by_kind(docs, "Deployment")
    for dep in deployments:
        where = f"{name} {ident(dep)}"
        dname = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        known = common | own.get(dname, set())
        if dname not in own:
            error(where, "no services/<name>/src/*/config.py for this Deployment")

        if pod.get("automountServiceAccountToken") is not False:
            error(where, "automountServiceAccountToken must be false")
        sa = accounts.get(pod.get("serviceAccountName", ""))
        if sa is None:
            error(where, "its ServiceAccount is not in the overlay")
        elif sa.get("automountServiceAccountToken") is not False:
            error(
                where,
                f"ServiceAccount/{sa['metadata']['name']}: "
                "automountServiceAccountToken must be false",
            )
        tgp = pod.get("terminationGracePeriodSeconds", 30)
        need = PRESTOP_SECONDS + DRAIN_STAGES * grace
        if tgp <= need:
            error(
                where,
                f"terminationGracePeriodSeconds {tgp} must exceed {need:g} "
                f"(preStop {PRESTOP_SECONDS} + {DRAIN_STAGES} x SHUTDOWN_GRACE_SECONDS {grace:g})",
            )
        psc = pod.get("securityContext", {})
        if (
            psc.get("runAsNonRoot") is not True
            or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault"
        ):
            error(where, "pod securityContext needs runAsNonRoot and seccompProfile RuntimeDefault")
        tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}

        containers = pod.get("containers", [])
        inits = pod.get("initContainers", [])
        for c in containers + inits:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            if not (
                sc.get("runAsNonRoot") is True
                and sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]
                and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            ):
                error(
                    cw,
                    "securityContext needs runAsNonRoot, readOnlyRootFilesystem, "
                    "allowPrivilegeEscalation false, drop ALL, seccomp RuntimeDefault",
                )
            if not any(
                m["mountPath"] == "/tmp"  # noqa: S108 (a check of the manifest)
                and m["name"] in tmp_volumes
                for m in c.get("volumeMounts", [])
            ):
                error(cw, "needs an emptyDir mounted on /tmp (read-only root filesystem)")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits", {}).get("memory"):
                error(cw, "needs resource requests and a memory limit")
            for env in c.get("env", []):
                if "value" in env and env["name"] in {
                    "DATABASE_URL",
                    "API_KEYS",
                    "IP_HASH_KEY",
                    "PRIVACY_HASH_KEY",
                    "IP_HASH_PREVIOUS_KEY",
                    "SECRETS_KEY",
                    "SECRETS_OLD_KEYS",
                    "KAFKA_SASL_PASSWORD",
                }:
                    error(cw, f"{env['name']} must come from a Secret, not an inline value")
                if not allowed(env["name"], known):
                    error(cw, f"env {env['name']} is not a setting this service reads")

        app = next((c for c in containers if c["name"] == "app"), None)
        if app is None:
            error(where, "no container named app")
            continue
        if app.get("args") != ["serve"]:
            error(where, "app container must run `serve`")
        probes = {
            kind: app.get(kind, {}).get("httpGet", {}).get("path")
            for kind in ("livenessProbe", "readinessProbe", "startupProbe")
        }
        if probes["livenessProbe"] != "/healthz" or probes["readinessProbe"] != "/readyz":
            error(where, f"liveness must hit /healthz and readiness /readyz, got {probes}")
        if not any(
            p.get("containerPort") == port and p.get("name") == "http" for p in app.get("ports", [])
        ):
            error(where, f"app must expose containerPort {port} (HTTP_PORT) named http")
        migrate = [c for c in inits if c.get("args") == ["migrate"]]
        if len(migrate) != 1 or migrate[0]["image"] != app["image"]:
            error(where, "needs one init container running `migrate` on the app's image")

        svc = services.get(dname)
        if svc is None or not labels or svc["spec"].get("selector", {}).items() - labels.items():
            error(where, "no Service of the same name selecting its pods")
        if not any(
            h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
            and h["spec"]["scaleTargetRef"].get("name") == dname
            for h in hpas
        ):
            error(where, "no HorizontalPodAutoscaler targets it")
        if "replicas" in dep["spec"]:
            error(where, "replicas is set although an HPA owns the count")
        if not any(selects(p["spec"].get("selector", {}), labels) for p in pdbs):
            error(where, "no PodDisruptionBudget selects its pods")

    for ing in by_kind(docs, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]["name"]
                if backend not in services:
                    error(f"{name} {ident(ing)}", f"routes to unknown Service {backend}")
    return len(deployments)


# ---- 3. topics ----------------------------------------------------------------------------------


def check_topics(name: str, docs: list[dict[str, Any]]) -> int:
    expected = {t.name: t for t in runpy.run_path(str(TOPICS_PY))["ALL_TOPICS"]}
    seen: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if doc.get("kind") != "KafkaTopic":
            error(name, f"{ident(doc)}: only KafkaTopics belong here")
            continue
        if doc.get("apiVersion") != "kafka.strimzi.io/v1beta2":
            error(name, f"{ident(doc)}: apiVersion must be kafka.strimzi.io/v1beta2")
        if "strimzi.io/cluster" not in doc["metadata"].get("labels", {}):
            error(name, f"{ident(doc)}: needs the strimzi.io/cluster label")
        spec = doc.get("spec", {})
        seen[spec.get("topicName") or doc["metadata"]["name"]] = spec
    for missing in sorted(expected.keys() - seen.keys()):
        error(name, f"topic {missing} (topics.py) has no KafkaTopic")
    for extra in sorted(seen.keys() - expected.keys()):
        error(name, f"KafkaTopic {extra} is not in topics.py")
    for topic, spec in seen.items():
        want = expected.get(topic)
        if want is None:
            continue
        if spec.get("partitions") != want.partitions:
            error(
                name,
                f"{topic}: partitions {spec.get('partitions')} != {want.partitions} (topics.py)",
            )
        retention = spec.get("config", {}).get("retention.ms")
        if retention is None or int(retention) != want.retention_ms:
            error(name, f"{topic}: retention.ms {retention} != {want.retention_ms} (topics.py)")
        replicas, isr = spec.get("replicas"), spec.get("config", {}).get("min.insync.replicas")
        if not isinstance(replicas, int) or isr is None or int(isr) > replicas:
            error(name, f"{topic}: needs integer replicas >= min.insync.replicas")
    return len(seen)


# ---- 5. monitoring ------------------------------------------------------------------------------


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL query of a Grafana dashboard (panels, rows' panels, templating)."""
    queries: dict[str, str] = {}

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    queries[f"panel {panel.get('title')!r} {target.get('refId')}"] = target["expr"]
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text or "")
        if var.get("type") == "query" and match:
            queries[f"variable {var['name']}"] = match.group(1)
    for where, expr in queries.items():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        queries[where] = expr
    return queries


def check_monitoring(name: str, docs: list[dict[str, Any]], promqlcheck: Path | None) -> str:
    services = by_kind(docs, "Service")
    monitors = by_kind(docs, "ServiceMonitor")
    rules = by_kind(docs, "PrometheusRule")
    if not (monitors or rules):
        return ""
    for mon in monitors:
        selector = mon.get("spec", {}).get("selector", {})
        chosen = [s for s in services if selects(selector, s["metadata"].get("labels", {}))]
        if not chosen:
            error(f"{name} {ident(mon)}", "selects no Service")
        for endpoint in mon.get("spec", {}).get("endpoints", []):
            for svc in chosen:
                ports = {p.get("name") for p in svc["spec"].get("ports", [])}
                if endpoint.get("port") not in ports:
                    error(
                        f"{name} {ident(mon)}", f"{ident(svc)} has no port {endpoint.get('port')}"
                    )
            if endpoint.get("path", "/metrics") != "/metrics":
                error(f"{name} {ident(mon)}", "the services serve /metrics")
    exprs: dict[str, str] = {}
    alerts = 0
    for rule_doc in rules:
        where = f"{name} {ident(rule_doc)}"
        groups = rule_doc.get("spec", {}).get("groups") or []
        if not groups:
            error(where, "no rule groups")
        group_names = [g.get("name") for g in groups]
        if len(set(group_names)) != len(group_names) or not all(group_names):
            error(where, "rule groups need unique, non-empty names")
        for group in groups:
            for rule in group.get("rules") or []:
                label = rule.get("alert") or rule.get("record")
                if bool(rule.get("alert")) == bool(rule.get("record")):
                    error(where, f"{group.get('name')}: a rule is an alert or a record: {rule}")
                    continue
                if not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
                    error(where, f"{label}: expr must be a non-empty string")
                    continue
                exprs[f"{ident(rule_doc)} {label}"] = rule["expr"]
                if "for" in rule and not PROM_DURATION.match(str(rule["for"])):
                    error(where, f"{label}: `for` is not a Prometheus duration: {rule['for']}")
                if rule.get("alert"):
                    alerts += 1
                    if rule.get("labels", {}).get("severity") not in SEVERITIES:
                        error(
                            where, f"{label}: labels.severity must be one of {sorted(SEVERITIES)}"
                        )
                    notes = rule.get("annotations", {})
                    for key in ("summary", "description", "runbook_url"):
                        if not notes.get(key):
                            error(where, f"{label}: needs annotations.{key}")
    dashboards = 0
    for cm in by_kind(docs, "ConfigMap"):
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
            continue
        for key, text in cm.get("data", {}).items():
            try:
                dashboard = json.loads(text)
            except ValueError as exc:
                error(f"{name} {ident(cm)}", f"{key} is not JSON: {exc}")
                continue
            dashboards += 1
            for where, expr in dashboard_queries(dashboard).items():
                exprs[f"{ident(cm)} {where}"] = expr
    if promqlcheck is None:
        error(name, "no --promqlcheck binary: PromQL of alerts and dashboards not parsed")
        return ""
    run = subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [str(promqlcheck)], input=json.dumps(exprs), capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        for line in run.stderr.strip().splitlines():
            error(name, f"PromQL: {line}")
        return ""
    metrics = sorted(set().union(*json.loads(run.stdout).values()))
    return (
        f"{len(monitors)} ServiceMonitor(s), {alerts} alerts, {dashboards} dashboard(s): "
        f"{len(exprs)} PromQL expressions parsed, using {len(metrics)} metrics"
    )


# ---- 4. docs ------------------------------------------------------------------------------------


def check_docs(common: set[str], own: dict[str, set[str]]) -> int:
    if not DOCS.exists():
        error("docs", f"{DOCS.relative_to(ROOT)} is missing")
        return 0
    text = DOCS.read_text()
    names = common.union(*own.values())
    for var in sorted(names):
        if not re.search(rf"\b{var}\b", text):
            error("docs", f"{var} is read by the services but not documented in docs/operations.md")
    return len(names)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered", type=Path)
    parser.add_argument("--k8s-versions", default="1.30.0,1.37.0")
    parser.add_argument("--promqlcheck", type=Path, default=None)
    args = parser.parse_args()
    versions = args.k8s_versions.split(",")
    common, own = service_settings()

    summary: dict[str, list[str]] = defaultdict(list)
    files = sorted(args.rendered.glob("*.yaml"))
    if not files:
        raise SystemExit(f"no rendered overlays in {args.rendered}")
    for path in files:
        name = path.stem
        docs = load(path)
        checked, skipped = check_schema(name, docs, versions)
        line = f"{len(docs)} objects, {checked} schema-valid on k8s {'+'.join(versions)}"
        if skipped:
            line += f", {skipped} custom resources (no offline schema; checked field by field)"
        if name.startswith("kafka-topics-"):
            check_topics(name, docs)
        else:
            line += f", {check_app(name, docs, common, own)} Deployments contract-checked"
            monitoring = check_monitoring(name, docs, args.promqlcheck)
            if monitoring:
                line += f"; {monitoring}"
        summary[name].append(line)
    documented = check_docs(common, own)

    for name, lines in summary.items():
        print(f"  {name}: {'; '.join(lines)}")
    print(f"  docs/operations.md: {documented} settings checked")
    if errors:
        for e in errors:
            print(f"ERROR {e}", file=sys.stderr)
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
