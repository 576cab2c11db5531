"""The deployment's pieces fit each other and the code, checked across resources rather than
property by property:

* configuration parity: every Cloud Run service and job of terraform/stack, given exactly the
  environment and secrets the Terraform gives it (secret values and cloud resource names
  stood in for), passes the production profile's settings validation, in every environment;
* the first apply: every secret a revision mounts has a version by the time the revision is
  created, from Terraform or from a runbook step that comes before the full apply;
* long-lived routes end on their own before the API's request timeout would cut them;
* the delivery-attempt budget outlasts a GPU worker's cold start, so a burst that meets a
  worker scaled to zero is not dead-lettered while the first instance loads its model.

The HCL is read with the helpers of test_terraform.py; expressions are evaluated by a small
interpreter that knows the forms the stack uses (variables, locals, conditionals, tostring,
templates) and stands a placeholder in for every module output, which Terraform only knows at
apply time.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dal.settings import Settings
from tests.unit.infra.test_terraform import (
    ENVIRONMENTS,
    MODULES,
    ROOT,
    STACK,
    environment_tfvars,
    merged,
    module_call,
    module_input,
    one,
    resources,
    variable_default,
)

API_ROUTES = ROOT / "api" / "routes"
RUNBOOK = ROOT / "docs" / "deploy-cloud-run.md"
SETTING_NAMES = {name.upper() for name in Settings.model_fields}

# Stand-ins for what only Secret Manager holds: long random-looking values, and URLs of the
# right scheme for the two connection strings.
SECRET_STAND_INS = {
    "REDIS_URL": "redis://:auth@10.10.0.3:6379/0",
    "DATABASE_URL": "postgresql+psycopg://txt2img:password@10.20.0.5:5432/txt2img?sslmode=require",
}
STRONG_SECRET = "s3cr3t-" + "k" * 41
# What Cloud Build passes on the command line (the stack's variables without a default).
COMMAND_LINE = {
    "project_id": "txt2img-test",
    "api_image": "us-central1-docker.pkg.dev/txt2img-test/txt2img/api:abc1234",
    "worker_image": "us-central1-docker.pkg.dev/txt2img-test/txt2img/gpu-worker:abc1234",
}

# Before its container starts, a GPU instance is scheduled and its image pulled (streamed);
# Google quotes about 5 s for the instance with drivers
# (https://cloud.google.com/run/docs/configuring/services/gpu), and a multi-GB image takes
# tens of seconds more. The startup probe's window covers the rest (model load, warm-up).
INSTANCE_START_ALLOWANCE_S = 60


# --- evaluating the stack's expressions ----------------------------------------------------


class Unresolvable(Exception):
    pass


Lookup = Callable[[str], Any]


def _matching_close(text: str, start: int) -> int:
    """Index of the brace that closes the `{` at `start`."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise Unresolvable(f"unbalanced braces in {text!r}")


def evaluate(value: Any, lookup: Lookup) -> Any:
    """A parsed HCL value: a whole `${expr}` yields the expression's value, a template its
    string, anything else itself."""
    if isinstance(value, dict):
        return {k: evaluate(v, lookup) for k, v in value.items() if k != "__comments__"}
    if isinstance(value, list):
        return [evaluate(v, lookup) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    if value.startswith("${") and _matching_close(value, 1) == len(value) - 1:
        return expression(value[2:-1], lookup)
    out, index = [], 0
    while (start := value.find("${", index)) != -1:
        close = _matching_close(value, start + 1)
        out.append(value[index:start])
        out.append(str(expression(value[start + 2 : close], lookup)))
        index = close + 1
    out.append(value[index:])
    return "".join(out)


def expression(text: str, lookup: Lookup) -> Any:
    text = text.strip()
    condition = r"var\.\w+(?:\s*>\s*\d+)?"
    if conditional := re.fullmatch(rf"({condition})\s*\?\s*(.+?)\s+:\s+(.+)", text, flags=re.S):
        chosen = conditional[2] if expression(conditional[1], lookup) else conditional[3]
        return expression(chosen, lookup)
    if compared := re.fullmatch(r"(var\.\w+)\s*>\s*(\d+)", text):
        return float(lookup(compared[1])) > int(compared[2])
    if re.fullmatch(r"[\w.]+(?:\s*\*\s*[\w.]+)+", text):
        product = 1
        for factor in re.split(r"\s*\*\s*", text):
            product *= int(factor) if factor.isdigit() else int(lookup(factor))
        return product
    if converted := re.fullmatch(r"tostring\((.+)\)", text, flags=re.S):
        inner = expression(converted[1], lookup)
        return str(inner).lower() if isinstance(inner, bool) else str(inner)
    if quoted := re.fullmatch(r'"(.*)"', text, flags=re.S):
        return evaluate(quoted[1], lookup)
    if re.fullmatch(r'[\w.\[\]"-]+', text):
        return lookup(text)
    raise Unresolvable(text)


def stack_lookup(environment: str, overrides: dict[str, Any]) -> Lookup:
    locals_ = merged(STACK, "locals")

    def lookup(ref: str) -> Any:
        kind, _, name = ref.partition(".")
        if kind == "var":
            if name in overrides:
                return overrides[name]
            if name in COMMAND_LINE:
                return COMMAND_LINE[name]
            tfvars = environment_tfvars(environment)
            return tfvars[name] if name in tfvars else variable_default(STACK, name)
        if kind == "local":
            return evaluate(locals_[name], lookup)
        if kind == "module":
            return f"tf-{name}"  # a module output: a resource name Terraform knows at apply
        raise Unresolvable(ref)

    return lookup


def module_lookup(environment: str, module: str, overrides: dict[str, Any]) -> Lookup:
    call = module_call(environment, module)
    source = (STACK / call["source"]).resolve()
    locals_ = merged(source, "locals")
    outer = stack_lookup(environment, overrides)

    def lookup(ref: str) -> Any:
        kind, _, name = ref.partition(".")
        if kind == "var":
            if name in call:
                return evaluate(call[name], outer)
            return variable_default(source, name)
        if kind == "local":
            return evaluate(locals_[name], lookup)
        raise Unresolvable(ref)

    return lookup


def secret_env_names(value: Any, lookup: Lookup) -> set[str]:
    """The env names of a secret map: a literal map, or the stack's merge() of locals, literal
    maps and conditional ones."""
    if isinstance(value, dict):
        return set(value)
    text = str(value)
    names: set[str] = set()
    for local_name in re.findall(r"\blocal\.(\w+)", text):
        names |= secret_env_names(merged(STACK, "locals")[local_name], lookup)
    for condition, name in re.findall(r"(var\.\w+)\s*\?\s*\{\s*(\w+)\s*=", text):
        if lookup(condition):
            names.add(name)
    unconditional = re.sub(r"var\.\w+\s*\?\s*\{[^?]*?\}\s*\}\s*:\s*\{\}", "", text)
    names |= set(re.findall(r"\{\s*(\w+)\s*=\s*\{\s*secret\b", unconditional))
    return names


# --- what each Cloud Run resource is given -----------------------------------------------


SERVICES = {
    # (module, resource type, resource name)
    "api": ("api", "google_cloud_run_v2_service", "api"),
    "outbox-sweep job": ("api", "google_cloud_run_v2_job", "outbox_sweep"),
    "gpu worker": ("worker", "google_cloud_run_v2_service", "worker"),
}


def containers(body: dict[str, Any]) -> list[dict[str, Any]]:
    template = one(body, "template")
    if "template" in template:  # a job: execution template → task template
        template = one(template, "template")
    found = template["containers"]
    assert isinstance(found, list)
    return found


def runtime_env(environment: str, service: str, overrides: dict[str, Any]) -> dict[str, str]:
    """The environment the resource's container gets: plain values and secret stand-ins."""
    module, kind, name = SERVICES[service]
    source = (STACK / module_call(environment, module)["source"]).resolve()
    body = resources(source, kind)[name]
    lookup = module_lookup(environment, module, overrides)
    (container,) = containers(body)
    env: dict[str, str] = {}
    for block in container.get("dynamic", []):
        if "env" not in block:
            continue
        spec = block["env"]
        content = one(spec, "content")
        for_each = spec["for_each"]
        if "value_source" in content:
            # The map is built by merge() in the stack: read its expression, not its value.
            forwarded = re.fullmatch(r"\$\{var\.(\w+)\}", for_each)
            assert forwarded, for_each
            raw = module_call(environment, module)[forwarded[1]]
            outer = stack_lookup(environment, overrides)
            for secret in secret_env_names(raw, outer):
                env[secret] = SECRET_STAND_INS.get(secret, STRONG_SECRET)
            continue
        plain = plain_env(for_each, lookup)
        env.update(plain)
    return env


def plain_env(for_each: str, lookup: Lookup) -> dict[str, str]:
    """`local.env` of the Cloud Run modules: merge(var.env, local.module_env) without null or
    empty values."""
    assert for_each == "${local.env}", for_each
    combined: dict[str, Any] = {}
    for part in ("var.env", "local.module_env"):
        mapping = lookup(part)  # evaluated in the scope that wrote it
        assert isinstance(mapping, dict), part
        combined.update(mapping)
    return {k: str(v) for k, v in combined.items() if v is not None and v != ""}


def cases() -> list[Any]:
    return list(_cases())


def _cases() -> Iterator[Any]:
    for environment in ENVIRONMENTS:
        for use_cloud_sql in (False, True):
            for service in SERVICES:
                yield pytest.param(
                    environment,
                    service,
                    {"use_cloud_sql": use_cloud_sql, "worker_platform": "cloud_run"},
                    id=f"{environment}-{'cloudsql' if use_cloud_sql else 'firestore'}-{service}",
                )


def settings_from(env: dict[str, str]) -> Settings:
    """The settings a process started with exactly `env` gets (the field names are the
    variables' names, lower-cased)."""
    return Settings.model_validate({name.lower(): value for name, value in env.items()})


@pytest.fixture
def no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read only what the case gives them, never this machine's environment."""
    import os

    for name in list(os.environ):
        if name.upper() in SETTING_NAMES:
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_ambient_settings")
@pytest.mark.parametrize(("environment", "service", "overrides"), cases())
def test_each_cloud_run_resource_gets_settings_the_production_profile_accepts(
    environment: str, service: str, overrides: dict[str, Any]
) -> None:
    """What the Terraform gives a service or job, and nothing else, is a valid production
    configuration: a setting the code requires there (the account that signs image URLs, a
    secret, a push audience) cannot be left out of one resource while the others have it."""
    env = runtime_env(environment, service, overrides)
    unknown = sorted(set(env) - SETTING_NAMES - {"PORT"})
    assert unknown == [], f"{service} gets variables no setting reads: {unknown}"
    settings = settings_from(env)
    assert settings.app_env == environment
    assert settings.is_production


# --- the first apply: every mounted secret has a version --------------------------------


def module_default_lookup(module: Path) -> Lookup:
    return lambda ref: variable_default(module, ref.removeprefix("var."))


def terraform_versioned_secrets() -> dict[str, str]:
    """Secret resources that Terraform itself gives a version, by the module that owns them."""
    versioned: dict[str, str] = {}
    for module in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        versions = resources(module, "google_secret_manager_secret_version")
        for version in versions.values():
            ref = re.fullmatch(r"\$\{google_secret_manager_secret\.(\w+)\.id\}", version["secret"])
            assert ref, version["secret"]
            secret = resources(module, "google_secret_manager_secret")[ref[1]]
            secret_id = evaluate(secret["secret_id"], module_default_lookup(module))
            versioned[str(secret_id)] = module.name
    return versioned


def runbook_versions_before_the_full_apply() -> set[str]:
    text = RUNBOOK.read_text()
    full_apply = text.index("## 6. Apply everything")
    return set(re.findall(r"gcloud secrets versions add ([\w-]+)", text[:full_apply]))


def secret_ids_mounted(environment: str, overrides: dict[str, Any]) -> dict[str, set[str]]:
    """Secret ids each Cloud Run service mounts, by the module that declares the secret."""
    secrets_declared = variable_default(MODULES / "secrets", "secrets")
    by_env_name = {
        "DATABASE_URL": ("cloud_sql", variable_default(MODULES / "cloud_sql", "url_secret_id")),
        "REDIS_URL": ("memorystore", variable_default(MODULES / "memorystore", "url_secret_id")),
    }
    mounted: dict[str, set[str]] = {}
    for service in SERVICES:
        env = runtime_env(environment, service, overrides)
        for name in env:
            key = name.lower()
            if key in secrets_declared:
                mounted.setdefault(service, set()).add(secrets_declared[key]["secret_id"])
            elif name in by_env_name:
                mounted.setdefault(service, set()).add(by_env_name[name][1])
    return mounted


@pytest.mark.parametrize("use_cloud_sql", [False, True], ids=["firestore", "cloudsql"])
def test_every_secret_a_revision_mounts_has_a_version_at_the_first_full_apply(
    use_cloud_sql: bool,
) -> None:
    """Cloud Run refuses to create a revision that mounts a secret without a version, so each
    secret either gets its version from Terraform (in a module the services depend on), or the
    runbook adds one before its first full apply."""
    overrides = {"use_cloud_sql": use_cloud_sql, "worker_platform": "cloud_run"}
    by_terraform = terraform_versioned_secrets()
    by_hand = runbook_versions_before_the_full_apply()
    stack_modules = merged(STACK, "module")
    for service, secret_ids in secret_ids_mounted("staging", overrides).items():
        module = SERVICES[service][0]
        depends_on = str(stack_modules[module].get("depends_on", ""))
        for secret_id in sorted(secret_ids):
            if secret_id in by_terraform:
                owner = by_terraform[secret_id]
                assert f"module.{owner}" in depends_on, (
                    f"{service} mounts {secret_id}, versioned by module {owner}, but does not "
                    "depend on it: the revision may be created first"
                )
            else:
                assert secret_id in by_hand, (
                    f"{service} mounts {secret_id}: Terraform gives it no version and "
                    "docs/deploy-cloud-run.md adds none before '6. Apply everything'"
                )


# --- long-lived requests fit inside the API's request timeout ----------------------------

# Every way an API route holds a request open, and the setting that bounds how long.
HELD_REQUESTS = {
    "events.py": "events_stream_max_s",  # the SSE stream ends itself after this long
    "jobs.py": "prefer_wait_max_s",  # `Prefer: wait=N` is cut to this
    "openai_images.py": "sync_wait_max_s",  # past it the answer names the job (504)
    "a1111.py": "sync_wait_max_s",  # likewise, on /sdapi/v1/txt2img
}


def routes_that_hold_requests() -> set[str]:
    """Route modules that stream a response or wait for a job."""
    holding = set()
    for path in API_ROUTES.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {
            node.id if isinstance(node, ast.Name) else node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Name | ast.Attribute)
        }
        if names & {
            "StreamingResponse",
            "EventSourceResponse",
            "job_waits",
            "wait_until_finished",  # api/job_submission.py
            "run_to_completion",
        }:
            holding.add(path.name)
    return holding


def test_every_route_that_holds_a_request_is_bounded_by_a_setting() -> None:
    """A new streaming or waiting route must name the setting that bounds it here, so the
    timeout check below covers it."""
    assert routes_that_hold_requests() == set(HELD_REQUESTS)


@pytest.mark.usefixtures("no_ambient_settings")
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_held_requests_end_before_the_api_request_timeout(environment: str) -> None:
    """Cloud Run cuts a request at the service's timeout; every held request must end on its
    own first (with a margin for the answer itself), with the settings the API is deployed
    with."""
    env = runtime_env(environment, "api", {"worker_platform": "cloud_run"})
    settings = settings_from(env)
    timeout = float(module_input(environment, "api", "request_timeout_seconds"))
    margin_s = 30
    for route, setting in HELD_REQUESTS.items():
        held = float(getattr(settings, setting))
        assert held + margin_s <= timeout, (
            f"{route}: {setting.upper()}={held:g} s does not end before the API's request "
            f"timeout of {timeout:g} s"
        )


# --- the delivery budget outlasts a cold start --------------------------------------------


def startup_window_s(environment: str) -> float:
    """The longest a worker instance may take to turn ready before Cloud Run gives up on it:
    its startup probe's initial delay plus period x failure threshold."""
    initial = float(module_input(environment, "worker", "startup_probe_initial_delay_seconds"))
    period = float(module_input(environment, "worker", "startup_probe_period_seconds"))
    failures = float(module_input(environment, "worker", "startup_probe_failure_threshold"))
    return initial + period * failures


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_delivery_attempt_budget_outlasts_a_cold_start(environment: str) -> None:
    """At min instances 0 (the worker's setting) every burst meets a cold start; the pushes
    beyond the first instance's concurrency are refused (429) and each refusal is a delivery
    attempt. Pub/Sub waits at least minimum_backoff between two deliveries of a message (its
    retry policy is best effort above that: https://cloud.google.com/pubsub/docs/handling-failures),
    so the attempts must span the instance start and the startup probe's whole window."""
    worker = resources(MODULES / "cloud_run_worker", "google_cloud_run_v2_service")["worker"]
    scaling = one(one(worker, "template"), "scaling")
    assert scaling["min_instance_count"] == 0, "the budget below assumes scale to zero"
    attempts = int(module_input(environment, "pubsub", "max_delivery_attempts"))
    backoff = float(module_input(environment, "pubsub", "minimum_backoff_seconds"))
    patience = (attempts - 1) * backoff
    cold_start = INSTANCE_START_ALLOWANCE_S + startup_window_s(environment)
    assert patience >= cold_start, (
        f"{attempts} deliveries at least {backoff:g} s apart span {patience:g} s, less than a "
        f"cold start ({cold_start:g} s: instance start + startup probe window)"
    )


# --- the fair dispatcher lets the worker fleet scale out -----------------------------------


@pytest.mark.usefixtures("no_ambient_settings")
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_dispatch_capacity_fills_every_worker_instance_cloud_run_may_start(
    environment: str,
) -> None:
    """Cloud Run adds worker instances as concurrent push requests pass what the running ones
    take (https://cloud.google.com/run/docs/about-instance-autoscaling). The fair dispatcher
    holds back every job past its capacity, so a capacity below the instances' concurrency
    times their maximum keeps the fleet from scaling out; every process must also count
    against the same capacity, or the line lets through more than one of them thinks."""
    overrides = {"worker_platform": "cloud_run"}
    capacities = {
        service: settings_from(runtime_env(environment, service, overrides)) for service in SERVICES
    }
    resolved = {s: c.resolved_dispatch_capacity for s, c in capacities.items()}
    assert len(set(resolved.values())) == 1, f"processes disagree on the capacity: {resolved}"
    instances = int(module_input(environment, "worker", "max_instances"))
    concurrency = int(module_input(environment, "worker", "batch_size"))
    capacity = resolved["api"]
    assert capacity >= instances * concurrency, (
        f"DISPATCH_CAPACITY={capacity} holds jobs back from {instances} instances x "
        f"{concurrency} concurrent requests"
    )
    batch = capacities["gpu worker"].max_batch_size
    assert capacity >= instances * (concurrency + batch), (
        f"DISPATCH_CAPACITY={capacity} leaves no batch waiting for each instance: the GPUs "
        f"idle between batches"
    )


def test_this_file_names_only_real_paths() -> None:
    assert all(Path(p).exists() for p in (API_ROUTES, RUNBOOK, STACK))


# --- who can reach what ----------------------------------------------------------------------


def test_the_worker_is_reachable_only_by_the_push_subscriptions_of_its_project() -> None:
    """Internal ingress admits Pub/Sub push subscriptions of the same project that target the
    run.app URL (https://cloud.google.com/run/docs/securing/ingress), and the subscriptions are
    the worker's only callers: they push to its URL (module.worker[0].url), never a custom
    domain, and are created in the worker's project."""
    worker = resources(MODULES / "cloud_run_worker", "google_cloud_run_v2_service")["worker"]
    assert worker["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY", (
        "the worker is reachable from the internet; only Pub/Sub calls it"
    )
    pubsub = module_call("staging", "pubsub")
    assert "module.worker[0].url" in str(pubsub["push_endpoint_base_url"])
    assert pubsub["project_id"] == module_call("staging", "worker")["project_id"]


@pytest.mark.usefixtures("no_ambient_settings")
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_service_the_internet_reaches_keeps_its_metrics_behind_a_token(
    environment: str,
) -> None:
    """The API is public (all ingress, allUsers may invoke by default), and its production
    profile closes /metrics without METRICS_BEARER_TOKEN: the Terraform gives it one, so
    metrics are readable by whoever holds the secret and nobody else."""
    api_dir = MODULES / "cloud_run_api"
    api = resources(api_dir, "google_cloud_run_v2_service")["api"]
    assert api["ingress"] == "INGRESS_TRAFFIC_ALL"
    env = runtime_env(environment, "api", {"worker_platform": "cloud_run"})
    assert settings_from(env).metrics_bearer_token is not None, (
        "the public API gets no METRICS_BEARER_TOKEN: its /metrics is closed to every scraper "
        "(or, before the production guard, open to the internet)"
    )


# --- the region offers what the worker needs ---------------------------------------------


def cloud_run_gpu_regions() -> set[str]:
    """The regions the Cloud Run worker module accepts (its `region` validation, which cites
    Google's list of Cloud Run GPU regions)."""
    region = merged(MODULES / "cloud_run_worker", "variable")["region"]
    validations = region.get("validation", [])
    assert validations, "the Cloud Run worker accepts any region, with or without L4 GPUs"
    condition = str(validations[0]["condition"])
    listed = re.search(r"contains\(\[(.*?)\],\s*var\.region\)", condition)
    assert listed, condition
    return set(re.findall(r'"([\w-]+)"', listed[1]))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_deploys_to_a_region_with_cloud_run_gpus(environment: str) -> None:
    """The stack's region (as each environment sets it) is one where Cloud Run offers L4
    GPUs, and the runbook names the same regions."""
    regions = cloud_run_gpu_regions()
    region = stack_lookup(environment, {})("var.region")
    assert region in regions
    assert "us-central1" in regions
    runbook = RUNBOOK.read_text()
    assert all(r in runbook for r in regions), "the runbook's region list differs"
