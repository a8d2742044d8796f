"""The Helm chart (helm/entitlements), linted and rendered by Helm's own SDK, validated against
Kubernetes schemas.

Helm: the PyPI package `helm-python-sdk` (module `helm_python`), which binds Helm v4's Go SDK
(`helm_python.lint`, `Chart.render`: the same lint, schema validation and template engine as the
`helm` CLI, offline). Schemas: the PyPI package `kubernetes-validate` (the upstream OpenAPI
schemas of each Kubernetes release, in strict mode: unknown fields are errors).

Run: python3 -m pytest -q tests/helm   (tests/helm.rs runs it from `cargo test`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "entitlements"
SIDECAR_VALUES = CHART / "values-sidecar.yaml"
SIDECAR_POD = CHART / "examples" / "sidecar-pod.yaml"

# The Kubernetes version the manifests are validated for (kubernetes-validate ships its schemas;
# Helm lints with the same version). The chart's kubeVersion is >= 1.29 (native sidecars).
KUBE_VERSION = "1.35.0"
RELEASE = "billing"
NAMESPACE = "apps"
FULLNAME = f"{RELEASE}-entitlements"

# Custom resources kubernetes-validate has no schema for (it ships only the built-in API). The
# ServiceMonitor is checked field by field in test_service_monitor instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# Every optional feature on: ServiceMonitor, webhook Ingress, fixed replicas instead of an HPA,
# a PDB by maxUnavailable, a non-native sidecar example.
FULL_VALUES: dict[str, Any] = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "webhookIngress": {
        "enabled": True,
        "className": "nginx",
        "host": "entitlements.example.com",
        "tls": [{"hosts": ["entitlements.example.com"], "secretName": "entitlements-tls"}],
    },
    "autoscaling": {"enabled": False},
    "replicaCount": 3,
    "podDisruptionBudget": {"minAvailable": None, "maxUnavailable": 1},
    "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    "config": {"edition": "ee", "stripeLivemode": True},
    "extraEnv": [{"name": "STRIPE_PRO_MONTHLY_PRICE_ID", "value": "price_123"}],
    "sidecar": {"native": False, "example": {"enabled": True}},
}


# ------------------------------------------------------------------------------------ helpers


def sidecar_values() -> dict[str, Any]:
    return helm.values_from_yaml(SIDECAR_VALUES.read_text())


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in a render (NOTES.txt is text, not a manifest)."""
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert "apiVersion" in doc and "kind" in doc, f"{path}: not a Kubernetes object"
                docs.append(doc)
    return docs


def validate_all(docs: list[dict[str, Any]]) -> list[str]:
    """Validate each object against the Kubernetes schemas (strict); returns the problems."""
    problems = []
    for doc in docs:
        name = f"{doc['kind']}/{doc.get('metadata', {}).get('name')}"
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{name}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{name}: {e.message}")
    return problems


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    all_containers = pod_spec.get("initContainers", []) + pod_spec["containers"]
    matches = [c for c in all_containers if c["name"] == name]
    assert len(matches) == 1, f"container {name}: {[c['name'] for c in all_containers]}"
    return matches[0]


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def central(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment", FULLNAME)


def central_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return container(central(docs)["spec"]["template"]["spec"], "entitlements")


def relay_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return container(pod_spec, "entitlements-relay")


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} not in {args}"
    return args[args.index(name) + 1]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return documents(render())


@pytest.fixture(scope="module")
def sidecar_docs() -> list[dict[str, Any]]:
    return documents(render(sidecar_values()))


@pytest.fixture(scope="module")
def full_docs() -> list[dict[str, Any]]:
    return documents(render(FULL_VALUES))


# ------------------------------------------------------------------------------------ Helm lint


def test_sdk_is_helm_v4():
    assert helm.helm_sdk_version().startswith("v4."), helm.helm_sdk_version()


@pytest.mark.parametrize("values_name", ["default", "sidecar", "full"])
def test_lint_is_clean(values_name: str):
    values = {"default": None, "sidecar": sidecar_values(), "full": FULL_VALUES}[values_name]
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}", namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 2 = warning, 3 = error (1 = info, e.g. "icon is recommended").
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_metadata():
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
        assert chart.schema is not None, "values.schema.json is missing"
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "entitlements"
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    assert meta["appVersion"] == cargo["package"]["version"], "appVersion follows Cargo.toml's version"


# ------------------------------------------------------------------------------------ schemas


def test_default_render_validates(default_docs):
    assert validate_all(default_docs) == []


def test_sidecar_render_validates(sidecar_docs):
    assert validate_all(sidecar_docs) == []


def test_full_render_validates(full_docs):
    # Everything but the ServiceMonitor (a CRD; see CRD_KINDS and test_service_monitor).
    assert validate_all(full_docs) == []
    assert ("monitoring.coreos.com/v1", "ServiceMonitor") in {(d["apiVersion"], d["kind"]) for d in full_docs}


def test_documented_sidecar_pod_validates():
    docs = [d for d in yaml.safe_load_all(SIDECAR_POD.read_text()) if d]
    assert kinds(docs) == ["Pod"]
    assert validate_all(docs) == []
    relay = relay_container(docs[0]["spec"])
    assert relay["restartPolicy"] == "Always"
    assert flag(relay["args"], "--upstream").startswith("http://")
    assert flag(relay["args"], "--grpc-addr") == "127.0.0.1:50051"


def test_values_schema_rejects_bad_values():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)
        chart.validate_schema(sidecar_values())
        chart.validate_schema(FULL_VALUES)
        for bad in [
            {"replicas": 3},  # a typo: unknown keys are rejected
            {"config": {"logFormat": "xml"}},
            {"config": {"maxTtl": "soon"}},
            {"secrets": {"existingSecret": ""}},
            {"service": {"grpcPort": 70000}},
            {"sidecar": {"upstream": "entitlements:50051"}},  # needs a scheme
            {"image": {"pullPolicy": "Sometimes"}},
        ]:
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(bad)
            with pytest.raises(helm.HelmValuesError):
                chart.render(values=bad, name=RELEASE, namespace=NAMESPACE)


# ------------------------------------------------------------------------------------ central


def test_default_objects(default_docs):
    assert kinds(default_docs) == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Job",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    )
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in default_docs)


def test_central_listens_on_every_interface(default_docs):
    c = central_container(default_docs)
    assert c["args"][0] == "serve"
    assert flag(c["args"], "--grpc-addr") == "0.0.0.0:50051"
    assert flag(c["args"], "--http-addr") == "0.0.0.0:8080"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "http": 8080}


def test_probes_are_native_grpc_health_checks(default_docs):
    c = central_container(default_docs)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert set(c[probe]) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"grpc"}, probe
        assert c[probe]["grpc"]["port"] == 50051, probe
    # Liveness asks for the server as a whole, readiness for the data plane.
    assert "service" not in c["livenessProbe"]["grpc"]
    assert c["readinessProbe"]["grpc"]["service"] == "entitlements.v1.EntitlementService"


def test_runs_as_non_root_with_a_read_only_root(default_docs):
    pod = central(default_docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = central_container(default_docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert central_container(default_docs)["resources"]["requests"]


def test_secret_references(default_docs):
    e = env(central_container(default_docs))
    expected = {
        "ENTITLEMENTS_DATABASE_URL": ("database-url", None),
        "ENTITLEMENTS_STRIPE_WEBHOOK_SECRETS": ("stripe-webhook-secrets", True),
        "ENTITLEMENTS_ADMIN_TOKEN": ("admin-token", True),
        "ENTITLEMENTS_RELAY_TOKEN": ("relay-token", True),
    }
    for name, (key, optional) in expected.items():
        ref = e[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "entitlements", name
        assert ref["key"] == key, name
        assert ref.get("optional") == optional, name
        assert "value" not in e[name], f"{name} must come from the Secret, never inline"


def test_secret_references_follow_values():
    docs = documents(
        render(
            {
                "secrets": {
                    "existingSecret": "billing-secrets",
                    "databaseUrl": {"key": "DATABASE_URL"},
                    "adminToken": {"key": ""},
                }
            }
        )
    )
    e = env(central_container(docs))
    assert e["ENTITLEMENTS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "billing-secrets",
        "key": "DATABASE_URL",
    }
    assert e["ENTITLEMENTS_STRIPE_WEBHOOK_SECRETS"]["valueFrom"]["secretKeyRef"]["name"] == "billing-secrets"
    assert "ENTITLEMENTS_ADMIN_TOKEN" not in e
    # The chart references Secrets; it never creates one.
    assert "Secret" not in kinds(docs)


def test_migration_job_is_a_pre_install_pre_upgrade_hook(default_docs):
    job = find(default_docs, "Job", f"{FULLNAME}-migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = container(pod, "migrate")
    assert c["args"] == ["migrate"]
    assert c["image"] == central_container(default_docs)["image"]
    ref = env(c)["ENTITLEMENTS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "entitlements", "key": "database-url"}
    # A pre-install hook runs before the chart's ServiceAccount exists.
    assert "serviceAccountName" not in pod


def test_catalog_config_map(default_docs):
    cm = find(default_docs, "ConfigMap", f"{FULLNAME}-catalog")
    example = (REPO / "examples" / "catalog.toml").read_text()
    assert (CHART / "files" / "catalog.toml").read_text() == example, (
        "helm/entitlements/files/catalog.toml must be a copy of examples/catalog.toml"
    )
    assert cm["data"]["catalog.toml"].strip() == example.strip()
    tomllib.loads(cm["data"]["catalog.toml"])

    deployment = central(default_docs)
    c = central_container(default_docs)
    assert env(c)["ENTITLEMENTS_CATALOG"]["value"] == "/etc/entitlements/catalog.toml"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "catalog")
    assert mount["mountPath"] == "/etc/entitlements" and mount["readOnly"] is True
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "catalog")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "catalog.toml", "path": "catalog.toml"}]


def test_catalog_from_values_rolls_the_pods(default_docs):
    custom = 'edition = "ce"\ndefault_plan = "free"\n[plans.free]\nrank = 0\n'
    docs = documents(render({"catalog": custom}))
    assert find(docs, "ConfigMap")["data"]["catalog.toml"] == custom.rstrip("\n")

    def checksum(d):
        return central(d)["spec"]["template"]["metadata"]["annotations"]["checksum/catalog"]

    assert checksum(docs) != checksum(default_docs)

    docs = documents(render({"existingCatalogConfigMap": "my-catalog"}))
    assert "ConfigMap" not in kinds(docs)
    volume = next(v for v in central(docs)["spec"]["template"]["spec"]["volumes"] if v["name"] == "catalog")
    assert volume["configMap"]["name"] == "my-catalog"


def test_service_ports(default_docs):
    svc = find(default_docs, "Service", FULLNAME)
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"grpc": (50051, "grpc"), "http": (8080, "http")}
    pod_labels = central(default_docs)["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_replicas_hpa_and_pdb(default_docs, full_docs):
    # Default: the HPA owns the replica count.
    assert "replicas" not in central(default_docs)["spec"]
    hpa = find(default_docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = find(default_docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == central(default_docs)["spec"]["selector"]["matchLabels"]
    # Autoscaling off: fixed replicas, no HPA.
    assert central(full_docs)["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in kinds(full_docs)
    assert find(full_docs, "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": pdb["spec"]["selector"],
    }


def test_service_monitor(default_docs, full_docs):
    assert "ServiceMonitor" not in kinds(default_docs)
    sm = find(full_docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    svc = find(full_docs, "Service", FULLNAME)
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert "http" in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_webhook_ingress_exposes_only_the_webhook(full_docs):
    ing = find(full_docs, "Ingress")
    (rule,) = ing["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/webhooks/stripe" and path["pathType"] == "Exact"
    assert path["backend"]["service"] == {"name": FULLNAME, "port": {"name": "http"}}


def test_optional_settings_reach_the_environment(full_docs):
    e = env(central_container(full_docs))
    assert e["ENTITLEMENTS_STRIPE_LIVEMODE"]["value"] == "true"
    assert e["ENTITLEMENTS_EDITION"]["value"] == "ee"
    assert e["STRIPE_PRO_MONTHLY_PRICE_ID"]["value"] == "price_123"
    assert central_container(full_docs)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


def test_notes_name_the_secret_and_the_service():
    notes = render()["entitlements/templates/NOTES.txt"]
    assert "create secret generic entitlements" in notes
    assert f"{FULLNAME}.{NAMESPACE}.svc:50051" in notes
    assert f"--upstream http://{FULLNAME}:50051" in notes


def test_tls_data_token_and_load_shedding():
    docs = documents(
        render(
            {
                "tls": {"enabled": True, "secretName": "entitlements-tls"},
                "secrets": {"dataToken": {"key": "data-token"}},
                "config": {"requestTimeout": "2s", "maxConcurrentRequests": 512, "watchHeartbeat": "10s"},
                "sidecar": {"upstreamCaConfigMap": "entitlements-ca", "example": {"enabled": True}},
            }
        )
    )
    assert validate_all(docs) == []
    c = central_container(docs)
    e = env(c)
    assert e["ENTITLEMENTS_TLS_CERT"]["value"] == "/var/run/entitlements/tls/tls.crt"
    assert e["ENTITLEMENTS_TLS_KEY"]["value"] == "/var/run/entitlements/tls/tls.key"
    assert e["ENTITLEMENTS_DATA_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "entitlements", "key": "data-token"}
    assert e["ENTITLEMENTS_REQUEST_TIMEOUT"]["value"] == "2s"
    assert e["ENTITLEMENTS_MAX_CONCURRENT_REQUESTS"]["value"] == "512"
    assert e["ENTITLEMENTS_WATCH_HEARTBEAT"]["value"] == "10s"
    pod = central(docs)["spec"]["template"]["spec"]
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "entitlements-tls"
    # The kubelet's gRPC probes cannot speak TLS: HTTP probes instead.
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Relays: an https upstream verified with the CA bundle, and their own credential sent
    # upstream (the relay token also opens a data plane that has a data token).
    app_pod = example_app(docs)["spec"]["template"]["spec"]
    relay = relay_container(app_pod)
    assert flag(relay["args"], "--upstream") == f"https://{FULLNAME}:50051"
    assert env(relay)["ENTITLEMENTS_UPSTREAM_CA"]["value"] == "/var/run/entitlements/upstream-ca/ca.crt"
    assert env(relay)["ENTITLEMENTS_UPSTREAM_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "relay-token"
    ca = next(v for v in app_pod["volumes"] if v["name"] == "entitlements-upstream-ca")
    assert ca["configMap"]["name"] == "entitlements-ca"
    # Defaults set none of these.
    default_env = env(central_container(documents(render())))
    assert not {"ENTITLEMENTS_TLS_CERT", "ENTITLEMENTS_DATA_TOKEN", "ENTITLEMENTS_REQUEST_TIMEOUT"} & set(default_env)
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"tls": {"enabled": True}})


# ------------------------------------------------------------------------------------ sidecar


def example_app(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment", f"{FULLNAME}-example-app")


def test_sidecar_render_has_the_relay_next_to_the_app(sidecar_docs):
    # The central service is still there, plus the example application.
    assert central(sidecar_docs)
    pod = example_app(sidecar_docs)["spec"]["template"]["spec"]
    relay = relay_container(pod)
    app = container(pod, "app")
    args = relay["args"]
    assert args[0] == "serve"
    assert flag(args, "--upstream") == f"http://{FULLNAME}:50051"
    assert flag(args, "--grpc-addr") == "127.0.0.1:50051"
    assert env(app)["ENTITLEMENTS_ADDR"]["value"] == "http://127.0.0.1:50051"
    # Same image as the central service; no database; from the Secret only the relay token,
    # the relay's credential for the upstream's change feed and tenant state.
    assert relay["image"] == central_container(sidecar_docs)["image"]
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in relay.get("env", []) if "valueFrom" in e}
    assert secret_env == {"ENTITLEMENTS_UPSTREAM_TOKEN": {"name": "entitlements", "key": "relay-token", "optional": True}}
    assert "ENTITLEMENTS_DATABASE_URL" not in env(relay)
    # Native sidecar: an init container that keeps running.
    assert relay in pod["initContainers"] and relay["restartPolicy"] == "Always"
    # Probes on the relay's HTTP listener (its gRPC listener is loopback-only).
    http_port = flag(args, "--http-addr").rsplit(":", 1)
    assert http_port[0] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in relay["ports"]} == {"relay-http": int(http_port[1])}
    assert relay["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "relay-http"}
    assert relay["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "relay-http"}
    # The relay resolves with the central service's catalog.
    assert env(relay)["ENTITLEMENTS_CATALOG"]["value"] == "/etc/entitlements/catalog.toml"
    volume = next(v for v in pod["volumes"] if v["name"] == "catalog")
    assert volume["configMap"]["name"] == find(sidecar_docs, "ConfigMap")["metadata"]["name"]
    assert relay["securityContext"]["readOnlyRootFilesystem"] is True


def test_sidecar_as_a_plain_container(full_docs):
    pod = example_app(full_docs)["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["app", "entitlements-relay"]
    assert "restartPolicy" not in relay_container(pod)


def test_sidecar_in_another_namespace():
    upstream = "http://entitlements.billing.svc.cluster.local:50051"
    docs = documents(
        render({"central": {"enabled": False}, "sidecar": {"upstream": upstream, "example": {"enabled": True}}})
    )
    # Only what application pods need: the catalog the relay resolves with, and the example app.
    assert kinds(docs) == ["ConfigMap", "Deployment"]
    assert validate_all(docs) == []
    relay = relay_container(example_app(docs)["spec"]["template"]["spec"])
    assert flag(relay["args"], "--upstream") == upstream


# ------------------------------------------------------------------------------------ the binary


def _cli_sources() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "src").rglob("*.rs")))


def test_env_vars_and_flags_exist_in_the_cli(full_docs, sidecar_docs):
    """Every ENTITLEMENTS_* variable and --flag the chart passes is one the binary defines."""
    src = _cli_sources()
    defined_env = set(re.findall(r'env\s*=\s*"(ENTITLEMENTS_[A-Z0-9_]+)"', src))
    used_env: set[str] = set()
    used_flags: set[str] = set()
    pods = [d["spec"]["template"]["spec"] for d in full_docs + sidecar_docs if d["kind"] in ("Deployment", "Job")]
    pods.append(yaml.safe_load(SIDECAR_POD.read_text())["spec"])
    for pod in pods:
        for c in pod.get("initContainers", []) + pod["containers"]:
            if c["name"] == "app":
                # The example application reads ENTITLEMENTS_ADDR like `entitlements check` does.
                used_env.add("ENTITLEMENTS_ADDR")
                continue
            used_env |= {n for n in env(c) if n.startswith("ENTITLEMENTS_")}
            used_flags |= {a[2:] for a in c.get("args", []) if a.startswith("--")}
    assert used_env - defined_env == set()
    for name in sorted(used_flags):
        field = name.replace("-", "_")
        assert re.search(rf'long\s*=\s*"{name}"|\b{field}\s*:', src), f"--{name} is not a flag of the binary"


def test_dockerfile():
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(stages) == 2 and stages[0] == "rust:1"
    assert "cargo build --release --locked --bin entitlements" in dockerfile
    assert re.search(r"^USER\s+(65532|nonroot)", dockerfile, re.MULTILINE)
    assert re.search(r"^EXPOSE\s+50051\s+8080\s*$", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT\s+\["/usr/local/bin/entitlements"\]', dockerfile, re.MULTILINE)
    # The build context keeps everything `cargo build` needs.
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "src", "proto", "migrations", "benches", "examples"]:
        assert needed not in ignored and f"{needed}/" not in ignored, needed
        assert (REPO / needed).exists(), needed
