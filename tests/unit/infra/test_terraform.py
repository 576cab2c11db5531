"""The Terraform keeps the deployment's promises: the GPU worker's shape, OIDC-authenticated
pushes with retries and dead letters, the IAM dead-lettering needs, private buckets, no basic
roles, described and typed variables, Firestore indexes built from firestore.indexes.json, and
formatted files.

Every .tf file is parsed with python-hcl2 (checkov has no checks for Cloud Run v2, so these
tests are what guards it); `terraform fmt` runs when the binary is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from api.admin_cli import _parser as admin_parser
from dal.firestore.job_store import _to_doc
from dal.settings import Settings
from emulators.pubsub import Topology
from tests.contracts.job_store_contract import make_job
from tests.integration.availability import missing

ROOT = Path(__file__).resolve().parents[3]
TERRAFORM = ROOT / "terraform"
MODULES = TERRAFORM / "modules"
GKE = TERRAFORM / "gke"
STACK = TERRAFORM / "stack"
ENVIRONMENTS = ("staging", "prod")
MODULE_NAMES = (
    "project_services",
    "artifact_registry",
    "service_accounts",
    "network",
    "storage",
    "firestore",
    "secrets",
    "memorystore",
    "cloud_sql",
    "cloud_run_api",
    "cloud_run_worker",
    "pubsub",
)
ROOT_CONFIGS = (
    *(MODULES / name for name in MODULE_NAMES),
    STACK,
    GKE,
)
ENVIRONMENT_OUTPUTS = {
    "api_url",
    "worker_url",
    "jobs_topic",
    "push_subscription",
    "dead_letter_topic",
    "dead_letter_subscription",
    "images_bucket",
    "models_bucket",
    "artifact_registry_repository",
    "api_service_account",
    "worker_service_account",
    "redis_host",
}
BASIC_ROLE = re.compile(r"(?<![\w./])roles/(owner|editor|viewer)\b")
VAR_REF = re.compile(r"\$\{var\.(\w+)\}")
SETTING_NAMES = {name.upper() for name in Settings.model_fields}


# --- reading the configuration -------------------------------------------------------------


@cache
def parse(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return hcl2.load(
            handle,
            serialization_options=hcl2.SerializationOptions(
                strip_string_quotes=True, explicit_blocks=False
            ),
        )


def tf_files() -> list[Path]:
    return sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)


def merged(directory: Path, kind: str) -> dict[str, Any]:
    """`variable`, `output`, `module` or `locals` blocks of a directory, by name."""
    found: dict[str, Any] = {}
    for path in sorted(directory.glob("*.tf")):
        for block in parse(path).get(kind, []):
            found.update({k: v for k, v in block.items() if k != "__comments__"})
    return found


def resources(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Resources of one type in a directory, by name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for block in parse(path).get("resource", []):
            found.update(block.get(kind, {}))
    return found


def all_resources(kind: str) -> dict[str, dict[str, Any]]:
    """Resources of one type anywhere under terraform/, by `path:name`."""
    found: dict[str, dict[str, Any]] = {}
    for path in tf_files():
        for block in parse(path).get("resource", []):
            for name, body in block.get(kind, {}).items():
                found[f"{path.relative_to(TERRAFORM)}:{name}"] = body
    return found


def one(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The single nested block `key` of a resource body."""
    blocks = body.get(key)
    assert isinstance(blocks, list), f"block {key!r} is missing"
    assert len(blocks) == 1, f"expected one {key!r} block, found {len(blocks)}"
    block = blocks[0]
    assert isinstance(block, dict)
    return block


def dynamic(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The `dynamic "name"` blocks of a body."""
    return [block[name] for block in body.get("dynamic", []) if name in block]


def strings(node: Any) -> Iterator[str]:
    """Every string in a parsed file, comments and validation blocks excepted (validations may
    name what they refuse)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key not in ("__comments__", "validation"):
                yield key
                yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def variable_default(directory: Path, name: str) -> Any:
    variable = merged(directory, "variable")[name]
    assert "default" in variable, f"{directory.name}: variable {name} has no default"
    return variable["default"]


def environment_tfvars(environment: str) -> dict[str, Any]:
    """What environments/ENV.tfvars sets."""
    values = parse(TERRAFORM / "environments" / f"{environment}.tfvars")
    return {k: v for k, v in values.items() if k != "__comments__"}


def environment_value(environment: str, name: str) -> Any:
    """A stack variable's value in an environment: its tfvars, else the stack's default."""
    tfvars = environment_tfvars(environment)
    return tfvars[name] if name in tfvars else variable_default(STACK, name)


def module_call(environment: str, name: str) -> dict[str, Any]:
    del environment  # one root configuration serves every environment
    return merged(STACK, "module")[name]


def module_input(environment: str, name: str, argument: str) -> Any:
    """The value an environment gives a module argument: a literal, the stack variable it
    forwards (as the environment's tfvars set it), or the module variable's default when it
    passes nothing."""
    call = module_call(environment, name)
    source = (STACK / call["source"]).resolve()
    if argument not in call:
        return variable_default(source, argument)
    value = call[argument]
    forwarded = VAR_REF.fullmatch(str(value))
    if forwarded:
        return environment_value(environment, forwarded[1])
    return value


def gibibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Gi|Mi)", quantity)
    assert match, f"memory {quantity!r} is not written in Gi or Mi"
    return float(match[1]) / (1024 if match[2] == "Mi" else 1)


def worker_service() -> dict[str, Any]:
    return resources(MODULES / "cloud_run_worker", "google_cloud_run_v2_service")["worker"]


def worker_container() -> dict[str, Any]:
    return one(one(worker_service(), "template"), "containers")


def subscription(name: str) -> dict[str, Any]:
    return resources(MODULES / "pubsub", "google_pubsub_subscription")[name]


# --- files and variables -------------------------------------------------------------------


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    """python-hcl2 reads every .tf file under terraform/."""
    assert isinstance(parse(path), dict)


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_every_module_has_its_files_and_a_readme(name: str) -> None:
    """Each module has main.tf, variables.tf, outputs.tf, versions.tf and a README naming its
    inputs and outputs."""
    module = MODULES / name
    for file in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (module / file).is_file(), f"modules/{name}/{file} is missing"
    readme = (module / "README.md").read_text()
    for kind in ("variable", "output"):
        undocumented = [n for n in merged(module, kind) if f"`{n}`" not in readme]
        assert undocumented == [], f"modules/{name}/README.md does not name {kind}s {undocumented}"


def test_every_module_is_used_by_the_environments() -> None:
    """No module is dead code: each is called by the environments."""
    sources = {Path(call["source"]).name for call in merged(STACK, "module").values()}
    assert sources == set(MODULE_NAMES)


@pytest.mark.parametrize("directory", ROOT_CONFIGS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_variable_has_a_description_and_a_type(directory: Path) -> None:
    """Every variable of every module, environment and the GKE root is typed and described."""
    variables = merged(directory, "variable")
    assert variables, f"{directory} declares no variables"
    for name, body in variables.items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"


@pytest.mark.parametrize("directory", ROOT_CONFIGS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_output_is_described(directory: Path) -> None:
    """Every output says what it is."""
    for name, body in merged(directory, "output").items():
        assert str(body.get("description", "")).strip(), f"output {name} has no description"


@pytest.mark.parametrize("directory", ROOT_CONFIGS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_terraform_and_provider_versions_are_constrained(directory: Path) -> None:
    """versions.tf requires Terraform >= 1.6 and pins the google provider to 6.x."""
    (terraform,) = parse(directory / "versions.tf")["terraform"]
    assert terraform["required_version"] == ">= 1.6"
    providers = one(terraform, "required_providers")
    assert providers["google"]["source"] == "hashicorp/google"
    version = providers["google"]["version"]
    assert version.startswith("~> 6.") or re.fullmatch(r">= 6\.\d+, < 7\.0", version), version


# --- environments --------------------------------------------------------------------------


def test_stack_state_lives_in_a_gcs_backend_configured_per_environment() -> None:
    """The stack's backend is a partial gcs configuration: each environment's prefix comes from
    its own .gcs.tfbackend (and the GKE root reads the environment's state at that prefix)."""
    (terraform,) = parse(STACK / "backend.tf")["terraform"]
    assert one(terraform, "backend")["gcs"] == {}
    (remote,) = [
        block["env"]
        for data in parse(GKE / "main.tf")["data"]
        for block in [data.get("terraform_remote_state", {})]
        if "env" in block
    ]
    for environment in ENVIRONMENTS:
        backend = (TERRAFORM / "environments" / f"{environment}.gcs.tfbackend").read_text()
        assert re.findall(r'^(\w+)\s*=\s*"([^"]*)"', backend, flags=re.MULTILINE) == [
            ("prefix", f"txt2img/{environment}")
        ]
        assert remote["config"]["prefix"].replace("${var.environment}", environment) == (
            f"txt2img/{environment}"
        )


def test_stack_pins_both_google_providers() -> None:
    """The stack pins google and google-beta to the same 6.x constraint."""
    (terraform,) = parse(STACK / "versions.tf")["terraform"]
    providers = one(terraform, "required_providers")
    assert providers["google"]["version"] == providers["google-beta"]["version"]
    assert providers["google"]["version"].startswith("~> 6.")


def test_stack_outputs_what_operators_and_ci_need() -> None:
    """URLs, topic and subscription names, buckets, accounts and the Redis host are outputs."""
    assert ENVIRONMENT_OUTPUTS - set(merged(STACK, "output")) == set()


def test_environments_are_settings_not_copies_of_the_configuration() -> None:
    """An environment is its tfvars and its backend prefix (and those of its GKE worker,
    terraform/gke); no Terraform code is repeated per environment."""
    files = sorted(p.name for p in (TERRAFORM / "environments").iterdir())
    assert files == sorted(
        name
        for env in ENVIRONMENTS
        for name in (
            f"{env}.tfvars",
            f"{env}.gcs.tfbackend",
            f"{env}.gke.tfvars",
            f"{env}.gke.gcs.tfbackend",
        )
    )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_tfvars_set_only_declared_variables(environment: str) -> None:
    """Each environment's tfvars names only the stack's variables (set or in comments) and
    leaves to the command line only the project and the images, which Cloud Build passes."""
    text = (TERRAFORM / "environments" / f"{environment}.tfvars").read_text()
    declared = merged(STACK, "variable")
    named = set(re.findall(r"^#?\s*(\w+)\s+=", text, flags=re.MULTILINE))
    assert named - set(declared) == set()
    required = {n for n, body in declared.items() if "default" not in body}
    assert required - set(environment_tfvars(environment)) == {
        "project_id",
        "api_image",
        "worker_image",
    }


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_app_env_is_the_environment(environment: str) -> None:
    """APP_ENV defaults to the environment's own name (the settings' production profiles)."""
    assert environment_value(environment, "environment") == environment
    assert merged(STACK, "locals")["shared_env"]["APP_ENV"] == "${var.environment}"


# --- the GPU worker on Cloud Run -----------------------------------------------------------


def test_worker_runs_on_an_nvidia_l4() -> None:
    """The worker asks for an L4 accelerator and one GPU."""
    template = one(worker_service(), "template")
    assert one(template, "node_selector")["accelerator"] == "nvidia-l4"
    limits = one(worker_container(), "resources")["limits"]
    assert limits["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_worker_has_at_least_4_cpus_and_16gi(environment: str) -> None:
    """Cloud Run's GPU minimums: >= 4 CPUs and >= 16 GiB, in the module and each environment."""
    limits = one(worker_container(), "resources")["limits"]
    assert limits["cpu"] == "${var.cpu}"
    assert limits["memory"] == "${var.memory}"
    assert float(variable_default(MODULES / "cloud_run_worker", "cpu")) >= 4
    assert gibibytes(variable_default(MODULES / "cloud_run_worker", "memory")) >= 16
    assert float(module_input(environment, "worker", "cpu")) >= 4
    assert gibibytes(module_input(environment, "worker", "memory")) >= 16


def test_worker_scales_to_zero_with_a_bounded_maximum() -> None:
    """min instances 0; max instances from a variable."""
    scaling = one(one(worker_service(), "template"), "scaling")
    assert scaling["min_instance_count"] == 0
    assert scaling["max_instance_count"] == "${var.max_instances}"


def test_worker_cpu_is_not_throttled() -> None:
    """cpu_idle = false (instance-based billing), with startup CPU boost."""
    resources_ = one(worker_container(), "resources")
    assert resources_.get("cpu_idle") is False
    assert resources_.get("startup_cpu_boost") is True


def test_worker_starts_taking_pushes_only_once_the_model_is_ready() -> None:
    """Startup probe on /readyz with a generous failure budget; liveness on /healthz."""
    container = worker_container()
    startup = one(container, "startup_probe")
    assert one(startup, "http_get")["path"] == "/readyz"
    threshold = variable_default(MODULES / "cloud_run_worker", "startup_probe_failure_threshold")
    assert startup["failure_threshold"] == "${var.startup_probe_failure_threshold}"
    assert threshold >= 12
    assert one(one(container, "liveness_probe"), "http_get")["path"] == "/healthz"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_worker_timeout_covers_the_ack_deadline(environment: str) -> None:
    """The request timeout is at least the push subscription's ack deadline, so a generation
    is never cut before Pub/Sub gives up on the delivery."""
    assert one(worker_service(), "template")["timeout"] == "${var.request_timeout_seconds}s"
    assert subscription("jobs_worker")["ack_deadline_seconds"] == "${var.ack_deadline_seconds}"
    timeout = module_input(environment, "worker", "request_timeout_seconds")
    ack_deadline = module_input(environment, "pubsub", "ack_deadline_seconds")
    assert ack_deadline == 600
    assert timeout >= ack_deadline
    assert variable_default(MODULES / "cloud_run_worker", "request_timeout_seconds") >= 600


def test_worker_concurrency_is_the_batch_size() -> None:
    """Request concurrency and MAX_BATCH_SIZE both come from var.batch_size."""
    template = one(worker_service(), "template")
    assert template["max_instance_request_concurrency"] == "${var.batch_size}"
    module_env = merged(MODULES / "cloud_run_worker", "locals")["module_env"]
    assert module_env["MAX_BATCH_SIZE"] == "${tostring(var.batch_size)}"
    assert variable_default(MODULES / "cloud_run_worker", "batch_size") == 8


def test_worker_gpu_zonal_redundancy_is_a_variable() -> None:
    """gpu_zonal_redundancy_disabled is set from a variable."""
    template = one(worker_service(), "template")
    assert template["gpu_zonal_redundancy_disabled"] == "${var.gpu_zonal_redundancy_disabled}"


def test_only_the_push_identity_may_invoke_the_worker() -> None:
    """roles/run.invoker on the worker goes to the push service account and to nobody else."""
    grants = resources(MODULES / "cloud_run_worker", "google_cloud_run_v2_service_iam_member")
    assert [(g["role"], g["member"]) for g in grants.values()] == [
        ("roles/run.invoker", "serviceAccount:${var.push_service_account_email}")
    ]
    for environment in ENVIRONMENTS:
        call = module_call(environment, "worker")
        assert (
            call["push_service_account_email"] == "${module.service_accounts.emails.push_invoker}"
        )


def test_outbox_sweep_job_runs_the_admin_sweep_as_the_api_on_a_schedule() -> None:
    """A Cloud Run job with the API's image, settings, secrets, network and identity runs
    `txt2img-admin outbox sweep`; Cloud Scheduler starts it through the Run Admin API with an
    OAuth token of the scheduler account, which may run that job and nothing else."""
    api = MODULES / "cloud_run_api"
    (job,) = resources(api, "google_cloud_run_v2_job").values()
    assert job["count"] == "${local.outbox_sweep ? 1 : 0}"
    task = one(one(job, "template"), "template")
    assert task["service_account"] == "${var.service_account_email}"
    container = one(task, "containers")
    assert [container["command"], container["args"]] == [["txt2img-admin"], ["outbox", "sweep"]]
    assert container["image"] == "${var.image}"
    service_container = one(
        one(resources(api, "google_cloud_run_v2_service")["api"], "template"), "containers"
    )
    assert [d["env"]["for_each"] for d in container["dynamic"]] == [
        d["env"]["for_each"] for d in service_container["dynamic"]
    ]
    service_vpc = one(
        one(resources(api, "google_cloud_run_v2_service")["api"], "template"), "vpc_access"
    )
    assert one(task, "vpc_access") == service_vpc
    # The command exists: the admin CLI parses it.
    parsed = admin_parser().parse_args(["outbox", "sweep"])
    assert (parsed.group, parsed.command) == ("outbox", "sweep")

    (scheduler,) = resources(api, "google_cloud_scheduler_job").values()
    assert scheduler["schedule"] == "${var.outbox_sweep_schedule}"
    target = one(scheduler, "http_target")
    assert target["http_method"] == "POST"
    assert target["uri"].startswith("https://run.googleapis.com/v2/projects/${var.project_id}/")
    assert target["uri"].endswith("/jobs/${google_cloud_run_v2_job.outbox_sweep[0].name}:run")
    token = one(target, "oauth_token")
    assert token["service_account_email"] == "${var.scheduler_service_account_email}"
    grants = resources(api, "google_cloud_run_v2_job_iam_member")
    assert [(g["role"], g["member"]) for g in grants.values()] == [
        ("roles/run.invoker", "serviceAccount:${var.scheduler_service_account_email}")
    ]
    assert variable_default(api, "outbox_sweep_schedule") == "*/5 * * * *"
    for environment in ENVIRONMENTS:
        call = module_call(environment, "api")
        assert call["scheduler_service_account_email"] == (
            "${module.service_accounts.emails.scheduler}"
        )
        assert call["outbox_sweep_schedule"] == "${var.outbox_sweep_schedule}"
    assert "cloudscheduler.googleapis.com" in variable_default(
        MODULES / "project_services", "services"
    )


def test_worker_reads_the_model_from_the_models_bucket_or_the_image() -> None:
    """The models bucket is mounted read-only at /models, and MODEL_PATH points inside it."""
    (volume,) = dynamic(one(worker_service(), "template"), "volumes")
    gcs = one(volume["content"][0], "gcs")
    assert gcs["bucket"] == "${var.models_bucket}"
    assert gcs["read_only"] is True
    module_env = merged(MODULES / "cloud_run_worker", "locals")["module_env"]
    assert "/${var.model_name}" in module_env["MODEL_PATH"]


# --- settings passed to the services -------------------------------------------------------


def service_env(module: str) -> set[str]:
    """Variable names a Cloud Run module sets: its own, the environment's shared settings, and
    the secrets mounted as variables."""
    names = set(merged(MODULES / module, "locals")["module_env"])
    env_locals = merged(STACK, "locals")
    names |= set(env_locals["shared_env"]) | set(env_locals["secret_env_always"])
    return names


@pytest.mark.parametrize("module", ["cloud_run_api", "cloud_run_worker"])
def test_every_variable_set_on_a_service_is_a_setting(module: str) -> None:
    """No typo reaches a service: each name is a field of dal.settings.Settings."""
    assert service_env(module) - SETTING_NAMES == set()
    locals_ = merged(STACK, "locals")
    conditional = re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", locals_["shared_secret_env"])
    conditional += re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", locals_["api_secret_env"])
    assert set(conditional) - SETTING_NAMES == set()


def test_services_get_the_production_profile_settings() -> None:
    """Both services get the cloud adapters, OIDC push settings and their secrets."""
    required = {
        "APP_ENV",
        "GCP_PROJECT",
        "JOB_STORE",
        "BLOB_STORE",
        "JOB_QUEUE",
        "RATE_LIMITER",
        "REQUEST_CACHE",
        "GCS_BUCKET",
        "PUBSUB_TOPIC",
        "PUBSUB_DEAD_LETTER_TOPIC",
        "PUBSUB_DEAD_LETTER_SUBSCRIPTION",
        "MAX_DELIVERY_ATTEMPTS",
        "PUSH_AUTH",
        "PUSH_AUDIENCE",
        "PUSH_SERVICE_ACCOUNT",
        "API_KEY_PEPPER",
        "URL_SIGNING_SECRET",
        "WEBHOOK_SIGNING_SECRET",
        "REDIS_URL",
    }
    assert required - service_env("cloud_run_api") == set()
    assert required - service_env("cloud_run_worker") == set()
    assert {"HOST", "GCS_SIGNING_SERVICE_ACCOUNT"} <= service_env("cloud_run_api")
    assert {"WORKER_HOST", "MAX_BATCH_SIZE", "MODEL_PATH"} <= service_env("cloud_run_worker")
    shared = merged(STACK, "locals")["shared_env"]
    assert shared["PUSH_AUTH"] == "oidc"
    assert shared["PUSH_AUDIENCE"] == "${var.push_audience}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_deployments_have_per_owner_quotas_on_by_default(environment: str) -> None:
    """The settings default to no quota (local use); a deployment sets both from variables
    whose defaults are limits, so a new environment never runs unmetered by accident."""
    shared = merged(STACK, "locals")["shared_env"]
    assert shared["QUOTA_MAX_IN_FLIGHT"] == "${tostring(var.quota_max_in_flight)}"
    assert shared["QUOTA_IMAGES_PER_DAY"] == "${tostring(var.quota_images_per_day)}"
    assert environment_value(environment, "quota_max_in_flight") > 0
    assert environment_value(environment, "quota_images_per_day") > 0
    assert {"quota_max_in_flight", "quota_images_per_day"} <= set(Settings.model_fields)


@pytest.mark.parametrize("module", ["cloud_run_api", "cloud_run_worker"])
def test_secrets_reach_the_services_from_secret_manager(module: str) -> None:
    """Secret settings are env vars with value_source.secret_key_ref, never plain values."""
    (secret_env,) = [
        block
        for block in dynamic(
            one(
                resources(MODULES / module, "google_cloud_run_v2_service")[
                    "api" if module == "cloud_run_api" else "worker"
                ]["template"][0],
                "containers",
            ),
            "env",
        )
        if "value_source" in block["content"][0]
    ]
    assert secret_env["for_each"] == "${var.secret_env}"
    ref = one(one(secret_env["content"][0], "value_source"), "secret_key_ref")
    assert ref == {"secret": "${env.value.secret}", "version": "${env.value.version}"}
    locals_ = merged(STACK, "locals")
    assert not set(locals_["secret_env_always"]) & set(locals_["shared_env"])
    assert {"API_KEY_PEPPER", "URL_SIGNING_SECRET", "WEBHOOK_SIGNING_SECRET", "REDIS_URL"} <= set(
        locals_["secret_env_always"]
    )


SECRETS_MODULE_REF = re.compile(r'module\.secrets\.secret_ids\["(\w+)"\]')


def secrets_module_keys(*expressions: str) -> set[str]:
    """Keys of the secrets module (e.g. api_key_pepper) that these expressions read."""
    return {key for text in expressions for key in SECRETS_MODULE_REF.findall(text)}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_secret_a_service_reads_is_granted_to_its_account(environment: str) -> None:
    """Each secret of the secrets module that the API or the worker mounts lists that
    service's account among its accessors: without the grant its revision cannot start."""
    del environment  # one root configuration serves every environment
    locals_ = merged(STACK, "locals")
    modules = merged(STACK, "module")
    assert modules["secrets"]["accessor_members"] == "${local.runtime_members}"
    for service, secret_env in (("api", "api_secret_env"), ("worker", "shared_secret_env")):
        assert modules[service]["secret_env"] == f"${{local.{secret_env}}}"
        assert modules[service]["service_account_email"] == (
            f"${{module.service_accounts.emails.{service}}}"
        )
        assert locals_["runtime_members"][service] == (
            f"${{module.service_accounts.members.{service}}}"
        )
    declared = variable_default(MODULES / "secrets", "secrets")
    always = [env["secret"] for env in locals_["secret_env_always"].values()]
    worker_reads = secrets_module_keys(*always, locals_["shared_secret_env"])
    api_reads = worker_reads | secrets_module_keys(locals_["api_secret_env"])
    assert {"api_key_pepper", "webhook_signing_secret"} <= worker_reads
    for service, reads in (("api", api_reads), ("worker", worker_reads)):
        ungranted = {key for key in reads if service not in declared[key]["accessors"]}
        assert ungranted == set(), f"{service} reads {ungranted} without secretAccessor"


def test_every_deployment_path_reads_the_same_secrets() -> None:
    """Cloud Run (both services), the GKE worker and the VM's startup script mount the same
    secrets, each from its own Secret Manager secret; the GKE worker's identity may read
    every secret it mounts."""
    cloud_run = merged(STACK, "locals")["secret_env_always"]
    gke = merged(GKE, "locals")["secret_env_always"]
    assert set(gke) == set(cloud_run)
    (grant,) = resources(GKE, "google_secret_manager_secret_iam_member").values()
    assert grant["for_each"] == "${local.secret_env}"
    assert grant["member"] == "${local.worker_principal}"
    assert grant["role"] == "roles/secretmanager.secretAccessor"
    # The VM reads PREFIX-<id without "txt2img-"> for each secret of the secrets module.
    declared = variable_default(MODULES / "secrets", "secrets")
    startup = (TERRAFORM / "vm" / "startup.sh").read_text()
    for name, env in cloud_run.items():
        for key in secrets_module_keys(env["secret"]):
            suffix = declared[key]["secret_id"].removeprefix("txt2img-")
            assert f'"$(secret "${{prefix}}-{suffix}")"' in startup, name
            assert f"env_line {name} " in startup, name


def test_webhooks_are_signed_with_a_secret_of_their_own() -> None:
    """WEBHOOK_SIGNING_SECRET comes from its own secret, readable by both processes (the API
    signs a cancel's delivery, the worker the others), not derived from URL_SIGNING_SECRET."""
    declared = variable_default(MODULES / "secrets", "secrets")["webhook_signing_secret"]
    assert declared == {
        "secret_id": "txt2img-webhook-signing-secret",
        "accessors": ["api", "worker"],
    }
    always = merged(STACK, "locals")["secret_env_always"]
    assert always["WEBHOOK_SIGNING_SECRET"] == {
        "secret": '${module.secrets.secret_ids["webhook_signing_secret"]}'
    }
    gke = merged(GKE, "locals")["secret_env_always"]
    assert gke["WEBHOOK_SIGNING_SECRET"] == '${local.env.secret_ids["webhook_signing_secret"]}'


# --- the API -------------------------------------------------------------------------------


def test_api_is_public_behind_a_variable_and_egresses_to_the_vpc() -> None:
    """Ingress ALL; allUsers may invoke only when allow_unauthenticated (default true); Direct
    VPC egress to private ranges; startup on /readyz."""
    api_dir = MODULES / "cloud_run_api"
    api = resources(api_dir, "google_cloud_run_v2_service")["api"]
    assert api["ingress"] == "INGRESS_TRAFFIC_ALL"
    public = resources(api_dir, "google_cloud_run_v2_service_iam_member")["public"]
    assert public["member"] == "allUsers"
    assert public["count"] == "${var.allow_unauthenticated ? 1 : 0}"
    assert variable_default(api_dir, "allow_unauthenticated") is True
    template = one(api, "template")
    vpc = one(template, "vpc_access")
    assert vpc["egress"] == "PRIVATE_RANGES_ONLY"
    assert one(vpc, "network_interfaces")["subnetwork"] == "${var.subnetwork}"
    startup = one(one(template, "containers"), "startup_probe")
    assert one(startup, "http_get")["path"] == "/readyz"


# --- Pub/Sub -------------------------------------------------------------------------------


def test_push_subscription_sends_an_oidc_token_to_the_worker() -> None:
    """jobs-worker pushes to WORKER_URL/pubsub/push with the push identity's token and the
    audience the worker expects."""
    push = one(subscription("jobs_worker"), "push_config")
    assert push["push_endpoint"] == "${var.push_endpoint_base_url}/pubsub/push"
    token = one(push, "oidc_token")
    assert token["service_account_email"] == "${var.push_service_account_email}"
    assert token["audience"] == "${var.push_audience}"
    assert variable_default(MODULES / "pubsub", "push_audience") == "txt2img-worker-push"


def test_push_subscription_retries_then_dead_letters() -> None:
    """Exponential retry 10 s..600 s, then the dead-letter topic after 5 deliveries."""
    jobs_worker = subscription("jobs_worker")
    retry = one(jobs_worker, "retry_policy")
    assert retry == {
        "minimum_backoff": "${var.minimum_backoff_seconds}s",
        "maximum_backoff": "${var.maximum_backoff_seconds}s",
    }
    dead_letter = one(jobs_worker, "dead_letter_policy")
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert dead_letter["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    pubsub = MODULES / "pubsub"
    assert variable_default(pubsub, "minimum_backoff_seconds") == Topology.min_backoff_s
    assert variable_default(pubsub, "maximum_backoff_seconds") == Topology.max_backoff_s
    assert variable_default(pubsub, "max_delivery_attempts") == Topology.max_delivery_attempts
    assert variable_default(pubsub, "ack_deadline_seconds") == Topology.ack_deadline_s


def test_topology_names_match_the_emulator_seed_and_the_settings() -> None:
    """Topic and subscription names equal what emulators/pubsub.py seeds and Settings expect."""
    pubsub = MODULES / "pubsub"
    expected = {
        "topic_name": Topology.topic,
        "push_subscription_name": Topology.push_subscription,
        "dead_letter_topic_name": Topology.dead_letter_topic,
        "dead_letter_subscription_name": Topology.dead_letter_subscription,
        "dead_letter_recorder_subscription_name": Topology.dead_letter_push_subscription,
    }
    for variable, name in expected.items():
        assert variable_default(pubsub, variable) == name
    defaults = Settings()
    assert variable_default(pubsub, "topic_name") == defaults.pubsub_topic
    assert variable_default(pubsub, "dead_letter_topic_name") == defaults.pubsub_dead_letter_topic


def test_dead_letters_are_kept_for_replay_and_recorded_by_the_worker() -> None:
    """The dead-letter pull subscription keeps letters 7 days; the recorder pushes each one to
    /pubsub/dead-letter with the same OIDC token."""
    assert subscription("dead_letter")["message_retention_duration"] == (
        "${var.dead_letter_retention_seconds}s"
    )
    assert variable_default(MODULES / "pubsub", "dead_letter_retention_seconds") == 7 * 86400
    assert "push_config" not in subscription("dead_letter")
    recorder = one(subscription("dead_letter_recorder"), "push_config")
    assert recorder["push_endpoint"] == "${var.push_endpoint_base_url}/pubsub/dead-letter"
    assert one(recorder, "oidc_token") == one(
        one(subscription("jobs_worker"), "push_config"), "oidc_token"
    )


def test_pull_subscription_dead_letters_like_the_push_one() -> None:
    """jobs-worker-pull (GKE) has the same retry and dead-letter policies as jobs-worker."""
    pull = subscription("jobs_worker_pull")
    assert "push_config" not in pull
    push = subscription("jobs_worker")
    for block in ("retry_policy", "dead_letter_policy"):
        assert one(pull, block) == one(push, block)
    assert variable_default(MODULES / "pubsub", "pull_subscription_name") == "jobs-worker-pull"


def test_pubsub_service_agent_may_dead_letter() -> None:
    """The Pub/Sub service agent publishes to the dead-letter topic and subscribes to every
    dead-lettered source subscription."""
    pubsub = MODULES / "pubsub"
    agent = merged(pubsub, "locals")["pubsub_service_agent"]
    assert agent == (
        "serviceAccount:service-${data.google_project.this.number}"
        "@gcp-sa-pubsub.iam.gserviceaccount.com"
    )
    publisher = resources(pubsub, "google_pubsub_topic_iam_member")["dead_letter_publisher"]
    assert publisher["topic"] == "${google_pubsub_topic.dead_letter.name}"
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["member"] == "${local.pubsub_service_agent}"
    subscriber = resources(pubsub, "google_pubsub_subscription_iam_member")[
        "dead_letter_source_subscriber"
    ]
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert subscriber["member"] == "${local.pubsub_service_agent}"
    assert subscriber["for_each"] == "${local.dead_lettered_subscriptions}"
    sources = merged(pubsub, "locals")["dead_lettered_subscriptions"]
    assert "google_pubsub_subscription.jobs_worker[0].name" in sources
    assert "google_pubsub_subscription.jobs_worker_pull[0].name" in sources


def test_pubsub_service_agent_mints_tokens_for_the_push_identity_only() -> None:
    """Token-creator rights for the agent are granted on the push account, not the project."""
    (grant,) = resources(MODULES / "pubsub", "google_service_account_iam_member").values()
    assert grant["service_account_id"] == "${var.push_service_account_id}"
    assert grant["role"] == "roles/iam.serviceAccountTokenCreator"
    assert grant["member"] == "${local.pubsub_service_agent}"


# --- buckets, IAM --------------------------------------------------------------------------


def test_every_bucket_is_private_uniform_and_has_a_lifecycle() -> None:
    """Public access prevention enforced, uniform bucket-level access, a Delete lifecycle rule."""
    buckets = all_resources("google_storage_bucket")
    assert len(buckets) >= 2
    for name, bucket in buckets.items():
        assert bucket.get("public_access_prevention") == "enforced", name
        assert bucket.get("uniform_bucket_level_access") is True, name
        actions = [one(rule, "action")["type"] for rule in bucket.get("lifecycle_rule", [])]
        assert "Delete" in actions, f"{name} has no Delete lifecycle rule"


def test_images_are_deleted_after_the_retention_period() -> None:
    """The images bucket deletes objects image_retention_days after creation."""
    images = resources(MODULES / "storage", "google_storage_bucket")["images"]
    ages = [one(rule, "condition").get("age") for rule in images["lifecycle_rule"]]
    assert "${var.image_retention_days}" in ages


def test_no_basic_roles_anywhere() -> None:
    """roles/owner, roles/editor and roles/viewer appear in no .tf file."""
    offenders = [
        (str(path.relative_to(TERRAFORM)), text)
        for path in tf_files()
        for text in strings(parse(path))
        if BASIC_ROLE.search(text)
    ]
    assert offenders == []


def test_basic_role_pattern_catches_basic_roles_only() -> None:
    """The scan above is not vacuous: it flags basic roles and spares predefined ones."""
    assert BASIC_ROLE.search("roles/editor")
    assert BASIC_ROLE.search('${toset(["roles/owner"])}')
    assert not BASIC_ROLE.search("roles/datastore.owner")
    assert not BASIC_ROLE.search("roles/monitoring.viewer")


def test_nothing_is_granted_to_all_users_but_the_public_api() -> None:
    """allUsers / allAuthenticatedUsers appear only in the API's optional public invoker."""
    public = [
        (str(path.relative_to(TERRAFORM)), text)
        for path in tf_files()
        for text in strings(parse(path))
        if text in ("allUsers", "allAuthenticatedUsers")
    ]
    assert public == [("modules/cloud_run_api/main.tf", "allUsers")]


# --- Firestore -----------------------------------------------------------------------------


def test_firestore_indexes_come_from_firestore_indexes_json() -> None:
    """The module builds every composite index and field override from the repository's
    firestore.indexes.json (one list of indexes), field by field."""
    firestore = MODULES / "firestore"
    spec_path = (firestore / "../../../firestore.indexes.json").resolve()
    assert spec_path == ROOT / "firestore.indexes.json"
    locals_ = merged(firestore, "locals")
    assert locals_["index_spec"] == (
        '${jsondecode(file("${path.module}/../../../firestore.indexes.json"))}'
    )
    assert "local.index_spec.indexes" in locals_["composite_indexes"]
    assert "local.index_spec.fieldOverrides" in locals_["unindexed_fields"]

    (index,) = resources(firestore, "google_firestore_index").values()
    assert index["for_each"] == "${local.composite_indexes}"
    assert index["collection"] == "${var.collection_prefix}${each.value.collectionGroup}"
    assert index["query_scope"] == "${each.value.queryScope}"
    (dynamic,) = index["dynamic"]
    assert dynamic["fields"]["for_each"] == "${each.value.fields}"
    assert dynamic["fields"]["content"] == [
        {"field_path": "${fields.value.fieldPath}", "order": "${fields.value.order}"}
    ]

    (field,) = resources(firestore, "google_firestore_field").values()
    assert field["for_each"] == "${local.unindexed_fields}"
    assert field["field"] == "${each.value.fieldPath}"
    assert field["index_config"] == [{}], "an empty index_config disables the indexes"


def test_firestore_indexes_name_fields_the_job_store_writes() -> None:
    """An index on a field the adapter never writes would match nothing: every indexed field
    of the jobs collection is a top-level field of the job documents, and no index repeats."""
    spec = json.loads((ROOT / "firestore.indexes.json").read_text())
    written = set(_to_doc(make_job("job-1"))) | {"__name__"}
    keys = []
    for index in spec["indexes"]:
        fields = [(f["fieldPath"], f["order"]) for f in index["fields"]]
        keys.append((index["collectionGroup"], tuple(fields)))
        if index["collectionGroup"] == "jobs":
            assert {path.split(".")[0] for path, _ in fields} <= written, fields
    assert len(keys) == len(set(keys))
    overrides = {o["fieldPath"] for o in spec["fieldOverrides"] if o["collectionGroup"] == "jobs"}
    assert overrides <= written


def test_firestore_is_native_mode_and_protected() -> None:
    """Native mode, delete protection and point-in-time recovery by default."""
    firestore = MODULES / "firestore"
    database = resources(firestore, "google_firestore_database")["this"]
    assert database["type"] == "FIRESTORE_NATIVE"
    assert variable_default(firestore, "deletion_protection") is True
    assert variable_default(firestore, "point_in_time_recovery") is True


# --- optional Cloud SQL, Memorystore -------------------------------------------------------


def test_cloud_sql_is_optional_private_and_backed_up() -> None:
    """PostgreSQL 15, no public IP, TLS only, backups with PITR, deletion protection; created
    only with use_cloud_sql."""
    instance = resources(MODULES / "cloud_sql", "google_sql_database_instance")["this"]
    assert instance["database_version"] == "POSTGRES_15"
    assert instance["deletion_protection"] == "${var.deletion_protection}"
    settings = one(instance, "settings")
    ip = one(settings, "ip_configuration")
    assert ip["ipv4_enabled"] is False
    assert ip["ssl_mode"] == "ENCRYPTED_ONLY"
    backups = one(settings, "backup_configuration")
    assert backups["enabled"] is True
    assert backups["point_in_time_recovery_enabled"] is True
    for environment in ENVIRONMENTS:
        assert module_call(environment, "cloud_sql")["count"] == "${var.use_cloud_sql ? 1 : 0}"


def test_memorystore_requires_auth_and_hands_out_its_url_as_a_secret() -> None:
    """AUTH is on and REDIS_URL (with the AUTH string) lives in Secret Manager."""
    memorystore = MODULES / "memorystore"
    redis = resources(memorystore, "google_redis_instance")["this"]
    assert redis["auth_enabled"] is True
    assert redis["authorized_network"] == "${var.network_id}"
    version = resources(memorystore, "google_secret_manager_secret_version")["redis_url"]
    assert version["secret_data"].startswith("redis://:${google_redis_instance.this.auth_string}@")


# --- GKE -----------------------------------------------------------------------------------


def test_gke_gpu_pool_is_l4_and_scales_to_zero() -> None:
    """The L4 pool's autoscaling minimum is 0, with GPU taints and Workload Identity metadata."""
    pool = resources(GKE, "google_container_node_pool")["gpu"]
    autoscaling = one(pool, "autoscaling")
    assert autoscaling["total_min_node_count"] == 0
    assert pool["initial_node_count"] == 0
    node = one(pool, "node_config")
    assert one(node, "guest_accelerator")["type"] == "nvidia-l4"
    assert one(node, "taint")["key"] == "nvidia.com/gpu"
    assert one(node, "workload_metadata_config")["mode"] == "GKE_METADATA"


def test_gke_cluster_uses_workload_identity_for_the_worker() -> None:
    """The cluster has a workload pool and the worker's KSA may act as the worker account."""
    cluster = resources(GKE, "google_container_cluster")["this"]
    assert one(cluster, "workload_identity_config")["workload_pool"] == "${local.workload_pool}"
    assert one(cluster, "private_cluster_config")["enable_private_nodes"] is True
    binding = resources(GKE, "google_service_account_iam_member")["worker_workload_identity"]
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert "${local.env.worker_service_account}" in binding["service_account_id"]


def test_gke_worker_pulls_with_the_settings_pull_mode_reads() -> None:
    """The worker env names the pull subscriptions and PULL_MAX_IN_FLIGHT, all real settings."""
    env = merged(GKE, "locals")["worker_env_all"]
    assert env["PUBSUB_JOBS_SUBSCRIPTION"] == "${local.env.pull_subscription}"
    assert env["PUBSUB_DEAD_LETTER_RECORDER_SUBSCRIPTION"] == (
        "${local.env.dead_letter_recorder_pull_subscription}"
    )
    assert "PULL_MAX_IN_FLIGHT" in env
    secrets = merged(GKE, "locals")["secret_env_always"]
    assert (set(env) | set(secrets)) - SETTING_NAMES == set()


def manifest(name: str) -> str:
    return (GKE / "manifests" / f"{name}.yaml.tftpl").read_text()


def test_gke_manifests_use_only_variables_terraform_passes() -> None:
    """Every ${...} in the templates is a key of local.template_vars (or a loop variable)."""
    provided = set(merged(GKE, "locals")["template_vars"]) | {"name", "value", "secret"}
    for name in ("gpu-worker", "keda-scaledobject", "hpa-stackdriver"):
        used = set(re.findall(r"\$\{(?:jsonencode\()?(\w+)", manifest(name)))
        assert used - provided == set(), name


def test_gke_worker_deployment_runs_pull_mode_on_a_gpu() -> None:
    """--pull, one nvidia.com/gpu, L4 node selector, GPU toleration, /readyz and /healthz."""
    deployment = manifest("gpu-worker")
    assert "exec python -m gpu_worker --pull" in deployment
    assert re.search(r"limits:\n(?:\s+.*\n)*?\s+nvidia.com/gpu: \"1\"", deployment)
    assert "cloud.google.com/gke-accelerator: nvidia-l4" in deployment
    assert "key: nvidia.com/gpu" in deployment
    assert re.search(r"startupProbe:\n\s+httpGet:\n\s+path: /readyz", deployment)
    assert re.search(r"livenessProbe:\n\s+httpGet:\n\s+path: /healthz", deployment)


def test_gke_autoscaling_reaches_zero_on_the_backlog() -> None:
    """KEDA's gcp-pubsub trigger on the pull subscription with minReplicaCount 0; the HPA
    alternative reads num_undelivered_messages through the Stackdriver adapter."""
    keda = manifest("keda-scaledobject")
    assert "minReplicaCount: 0" in keda
    assert "type: gcp-pubsub" in keda
    assert "subscriptions/${pull_subscription}" in keda
    hpa = manifest("hpa-stackdriver")
    assert "name: pubsub.googleapis.com|subscription|num_undelivered_messages" in hpa
    assert "resource.labels.subscription_id: ${pull_subscription}" in hpa


# --- runbooks name only what exists ----------------------------------------------------------

RUNBOOKS = (ROOT / "docs/deploy-cloud-run.md", GKE / "README.md")


def commands(path: Path) -> str:
    """The shell blocks of a Markdown file, comments dropped and continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.DOTALL)
    script = "\n".join(blocks).replace("\\\n", " ")
    return re.sub(r"(^|\s)#.*", "", script)


def runbook_root(chdir: str) -> Path:
    directory = ROOT / chdir
    assert directory.is_dir(), f"terraform -chdir={chdir} names no directory"
    return directory


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_runbook_terraform_commands_name_real_outputs_variables_and_modules(runbook: Path) -> None:
    """Every `terraform -chdir=DIR output|apply|destroy` names outputs, variables and targets
    that DIR declares."""
    script = commands(runbook)
    invocations = re.findall(r"terraform -chdir=(\S+) (\w+)([^\n|;&)]*)", script)
    assert invocations
    for chdir, verb, rest in invocations:
        directory = runbook_root(chdir)
        if verb == "output":
            for name in re.findall(r"-raw (\w+)", rest):
                assert name in merged(directory, "output"), f"{chdir} has no output {name}"
        for name in re.findall(r"-var[= ]\"?(\w+)=", rest):
            assert name in merged(directory, "variable"), f"{chdir} has no variable {name}"
        for name in re.findall(r"-target=module\.(\w+)", rest):
            assert name in merged(directory, "module"), f"{chdir} has no module {name}"


def test_runbook_secrets_are_the_ones_terraform_creates() -> None:
    """`gcloud secrets versions add|access` name secrets that Terraform declares."""
    script = commands(ROOT / "docs/deploy-cloud-run.md")
    named = set(re.findall(r"gcloud secrets versions add (\S+)", script))
    named |= set(re.findall(r"--secret=(\S+)", script))
    declared = {s["secret_id"] for s in variable_default(MODULES / "secrets", "secrets").values()}
    assert named
    assert named - declared == set()


def test_runbook_admin_commands_parse() -> None:
    """Every `txt2img-admin ...` line is accepted by the admin command's parser."""
    from api.admin_cli import _parser

    script = commands(ROOT / "docs/deploy-cloud-run.md")
    lines = re.findall(r"txt2img-admin ([^\n|#)]+)", script)
    assert len(lines) >= 5
    for line in lines:
        _parser().parse_args(line.split())


def test_runbook_paths_and_make_targets_exist() -> None:
    """Paths in backticks and `make` targets the runbook names exist in the repository."""
    text = (ROOT / "docs/deploy-cloud-run.md").read_text()
    paths = set(re.findall(r"`((?:terraform|docs|api|gpu_worker|dal)/[\w./-]*)`", text))
    missing_paths = [p for p in paths if "*" not in p and not (ROOT / p).exists()]
    assert missing_paths == []
    targets = set(
        re.findall(r"^make (\w[\w-]*)", commands(ROOT / "docs/deploy-cloud-run.md"), re.M)
    )
    makefile = (ROOT / "Makefile").read_text()
    assert [t for t in targets if not re.search(rf"^{t}:", makefile, re.M)] == []


def test_runbook_cloud_build_substitutions_exist() -> None:
    """Substitutions the runbook passes to Cloud Build are declared by cloudbuild.yaml."""
    script = commands(ROOT / "docs/deploy-cloud-run.md")
    passed = set(re.findall(r"\b(_[A-Z_]+)=", script))
    cloudbuild = (ROOT / "cloudbuild.yaml").read_text()
    assert passed
    assert [s for s in passed if not re.search(rf"^  {s}:", cloudbuild, re.M)] == []


# --- formatting ----------------------------------------------------------------------------


def test_terraform_files_are_formatted() -> None:
    """`terraform fmt -check -recursive terraform` passes (needs no providers)."""
    terraform = shutil.which("terraform")
    if terraform is None:
        missing(
            "terraform",
            "install Terraform >= 1.6 (developer.hashicorp.com/terraform/install); "
            "`terraform fmt` works offline",
        )
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
