"""The IAM matrix: for every identity the deployment runs as, the permissions its code paths
and the Terraform it applies need, each checked against the roles the Terraform grants it, at
the scope the need applies to (a bucket, a topic, a service account, the project).

The needs are derived, not listed:

* the processes (the API service, its outbox-sweep job, the GPU worker on Cloud Run and on GKE):
  from the source, walked from each process's entry function with the settings the Terraform
  gives it (tests/unit/infra/code_paths.py), to the client-library calls it can make; plus the
  secrets and volumes its Cloud Run resource reads as its account;
* the push identity (the jobs subscription and the dead-letter recorder) and the scheduler: from
  the subscriptions and the scheduler job that authenticate as them;
* the Pub/Sub service agent: from the dead-letter policies and OIDC push configurations;
* the deployer (Cloud Build's account): from every resource and data source type in
  terraform/stack's modules and terraform/gke, and every service account they attach.

What each call, resource type and role means in permissions is Google's documentation, copied
into tests/unit/infra/iam_reference.py. A new resource type, a new client-library call or a
signing call in code a process reaches, made without its grant, fails here, naming the need,
the identity and the path that needs it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from api.admin_cli import _parser as admin_parser
from dal.settings import PROFILES, Settings
from tests.unit.infra.code_paths import SOME, Node, Program, Reach
from tests.unit.infra.iam_reference import (
    CLIENT_LIBRARIES,
    DISTINCTIVE_CALLS,
    LIBRARY_CALLS,
    LIBRARY_CLASSES,
    NOT_API_CLIENTS,
    PROJECT_WIDE,
    RESOURCE_PERMISSIONS,
    ROLE_PERMISSIONS,
    SCOPED_BY_SETTING,
    SIGN_BLOB,
    SIGNS_THROUGH_IAM,
)
from tests.unit.infra.test_terraform import (
    ENVIRONMENTS,
    GKE,
    ROOT,
    STACK,
    environment_value,
    merged,
    parse,
    variable_default,
)

PROJECT = "project"
PUBSUB_AGENT = "pubsub_agent"
# The deployer is Cloud Build's account (and the deployers that share its roles).
DEPLOYER = "build"
ACCOUNT = re.compile(r"^service_accounts:google_service_account\.this\[(\w+)\]$")
PROGRAM_PACKAGES = ("dal", "gpu_worker", "api")
# Google's service agents, recognised by their email's domain.
SERVICE_AGENTS = {"gcp-sa-pubsub": PUBSUB_AGENT}


# --- reading the Terraform ---------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where an expression is evaluated: the stack, a module the stack calls, or terraform/gke."""

    root: str  # "stack", "gke", or the name of the stack's module call
    directory: Path

    @property
    def label(self) -> str:
        """Addresses are prefixed with the module's directory name (or stack, gke)."""
        return self.directory.name


STACK_WHERE = Where("stack", STACK)
GKE_WHERE = Where("gke", GKE)


def module_where(call: str) -> Where:
    source = merged(STACK, "module")[call]["source"]
    return Where(call, (STACK / source).resolve())


def stack_module_calls() -> list[Where]:
    return [module_where(call) for call in merged(STACK, "module")]


def configurations() -> list[Where]:
    """Every configuration Cloud Build applies: the stack, its modules, terraform/gke."""
    return [STACK_WHERE, *stack_module_calls(), GKE_WHERE]


@dataclass(frozen=True)
class Each:
    """One instance of a for_each: each.key and each.value, and where the value came from."""

    key: str | None
    value: Any
    where: Where


REF = re.compile(
    r"(?P<module>module\.(?P<call>\w+)(?:\[\d+\])?\.(?P<output>\w+)"
    r"(?:\[\"(?P<mkey>[^\"]+)\"\]|\.(?P<mattr>\w+))?)"
    r"|(?P<env>local\.env\.(?P<eoutput>\w+)(?:\[\"(?P<ekey>[^\"]+)\"\])?)"
    r"|(?P<var>var\.(?P<vname>\w+))"
    r"|(?P<local>local\.(?P<lname>\w+))"
    r"|(?P<each>each\.(?P<eattr>key|value)(?:\.(?P<efield>\w+))?)"
    r"|(?<![\w.])(?P<resource>(?P<rtype>google_\w+)\.(?P<rname>\w+)(?:\[(?P<rkey>[^\]]+)\])?)"
)
FOR_OVER_RESOURCE = re.compile(r"for \w+, \w+ in (google_\w+)\.(\w+)")


def local_value(reference: Any, where: Where) -> Any:
    """What a "${local.NAME}" reference names in `where` (anything else as it is)."""
    if isinstance(reference, str) and (name := re.fullmatch(r"\$\{local\.(\w+)\}", reference)):
        return merged(where.directory, "locals").get(name[1])
    return reference


def call_argument(where: Where, name: str) -> Any:
    """What the stack passes a module variable, or the variable's default (None: neither)."""
    call = merged(STACK, "module")[where.root]
    if name in call:
        return call[name]
    variable = merged(where.directory, "variable").get(name, {})
    return variable.get("default")


def addresses(
    value: Any, where: Where, each: Each | None = None, key: str | None = None
) -> set[str]:
    """The resources an expression refers to, followed through module calls, outputs, locals
    and terraform/gke's remote state, as "DIRECTORY:TYPE.NAME[KEY]" ("project" for the
    project itself). `key` picks one entry of a map-valued output (secret_ids["x"])."""
    if isinstance(value, dict):
        if key is not None and key in value:
            return addresses(value[key], where, each)
        return {
            a for k, v in value.items() if not k.startswith("__") for a in addresses(v, where, each)
        }
    if isinstance(value, list):
        return {a for item in value for a in addresses(item, where, each)}
    if not isinstance(value, str):
        return set()
    found: set[str] = set()
    for ref in REF.finditer(value):
        if ref["module"]:
            inner = module_where(ref["call"])
            output = merged(inner.directory, "output")[ref["output"]]["value"]
            found |= output_addresses(output, inner, ref["mkey"] or ref["mattr"])
        elif ref["env"]:
            output = merged(STACK, "output")[ref["eoutput"]]["value"]
            found |= addresses(output, STACK_WHERE, key=ref["ekey"])
        elif ref["var"]:
            found |= variable_addresses(ref["vname"], where)
        elif ref["local"]:
            local = merged(where.directory, "locals").get(ref["lname"])
            found |= addresses(local, where, each)
        elif ref["each"] and each is not None:
            found |= each_addresses(each, ref["eattr"], ref["efield"])
        elif ref["resource"]:
            found.add(resource_address(where, ref["rtype"], ref["rname"], ref["rkey"], each))
    return found


def output_addresses(output: Any, where: Where, key: str | None) -> set[str]:
    """A module output, or one key of a map output: an entry built by a for over a resource,
    or written out in a merge({KEY = ...}, ...)."""
    if key is not None and isinstance(output, str):
        if loop := FOR_OVER_RESOURCE.search(output):
            return {f"{where.label}:{loop[1]}.{loop[2]}[{key}]"}
        if entry := re.search(rf"\b{re.escape(key)}\s*=\s*([^,}}]+)", output):
            return addresses("${" + entry[1] + "}", where)
    return addresses(output, where)


def variable_addresses(name: str, where: Where) -> set[str]:
    if name == "project_id":
        return {PROJECT}
    if where.root in ("stack", "gke"):
        return set()
    return addresses(call_argument(where, name), STACK_WHERE)


def each_addresses(each: Each, attribute: str, field: str | None) -> set[str]:
    if attribute == "key":
        return set()
    value = each.value
    if isinstance(value, AddressSet):
        return set(value.addresses)
    if field is not None:
        value = value.get(field) if isinstance(value, dict) else None
    return addresses(value, each.where)


def resource_address(where: Where, kind: str, name: str, key: str | None, each: Each | None) -> str:
    if key is not None:
        key = key.strip('"')
        if key.startswith("each.") and each is not None:
            picked = each.key if key == "each.key" else each.value
            if isinstance(picked, dict) and "." in key.removeprefix("each.value"):
                picked = picked.get(key.rsplit(".", 1)[1])
            key = str(picked)
        if key.isdigit():
            key = None
    return f"{where.label}:{kind}.{name}" + (f"[{key}]" if key else "")


@dataclass(frozen=True)
class AddressSet:
    """each.value of a for_each whose collection the matrix cannot enumerate: any of the
    resources the collection's expression refers to."""

    addresses: frozenset[str]


def identity(member: Any, where: Where, each: Each | None = None) -> str | None:
    """Which identity of the matrix an IAM member is: a service account of the stack (by its
    key: api, worker, ...), a service agent, or None (someone the matrix does not check)."""
    text = _expanded(member, where) if isinstance(member, str) else ""
    for marker, agent in SERVICE_AGENTS.items():
        if marker in text:
            return agent
    return _one_account(frozenset(addresses(member, where, each)))


def _expanded(text: str, where: Where) -> str:
    """The expression with the module locals it names written out (a service agent's email)."""
    locals_ = merged(where.directory, "locals")
    return text + "".join(str(locals_.get(name, "")) for name in re.findall(r"local\.(\w+)", text))


def _one_account(found: frozenset[str]) -> str | None:
    accounts = {m[1] for a in found if (m := ACCOUNT.match(a))}
    return accounts.pop() if len(accounts) == 1 else None


# --- grants ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    identity: str
    role: str
    scope: str
    source: str


# Each IAM member type: the argument naming what it grants on, and that resource's type.
SCOPE_ATTRIBUTE = {
    "google_project_iam_member": ("project", None),
    "google_service_account_iam_member": ("service_account_id", "google_service_account"),
    "google_storage_bucket_iam_member": ("bucket", "google_storage_bucket"),
    "google_pubsub_topic_iam_member": ("topic", "google_pubsub_topic"),
    "google_pubsub_subscription_iam_member": ("subscription", "google_pubsub_subscription"),
    "google_secret_manager_secret_iam_member": ("secret_id", "google_secret_manager_secret"),
    "google_cloud_run_v2_service_iam_member": ("name", "google_cloud_run_v2_service"),
    "google_cloud_run_v2_job_iam_member": ("name", "google_cloud_run_v2_job"),
    "google_artifact_registry_repository_iam_member": (
        "repository",
        "google_artifact_registry_repository",
    ),
}


def of_type(found: set[str], kind: str | None) -> set[str]:
    """The addresses of one resource type (the project, for None)."""
    if kind is None:
        return found & {PROJECT}
    return {a for a in found if a.split(":", 1)[-1].startswith(f"{kind}.")}


def resource_blocks(
    directory: Path, block: str = "resource"
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in sorted(directory.glob("*.tf")):
        for entry in parse(path).get(block, []):
            for kind, named in entry.items():
                for name, body in named.items():
                    yield kind, name, body


def instances(body: dict[str, Any], where: Where) -> list[Each | None]:
    """The for_each instances of a resource the matrix can tell apart."""
    collection = body.get("for_each")
    if collection is None:
        return [None]
    if isinstance(collection, str) and (
        listed := re.fullmatch(r"\$\{toset\((\[.*\])\)\}", collection)
    ):
        return [Each(item, item, where) for item in re.findall(r'"([^"]+)"', listed[1])]
    if isinstance(collection, dict):
        return [Each(k, v, where) for k, v in collection.items() if not k.startswith("__")]
    for ref in REF.finditer(str(collection)):
        value = (
            call_argument(where, ref["vname"])
            if ref["var"] and where.root not in ("stack", "gke")
            else None
        )
        value = local_value(value, STACK_WHERE)
        if isinstance(value, dict):
            return [Each(k, v, STACK_WHERE) for k, v in value.items() if not k.startswith("__")]
    return [Each(None, AddressSet(frozenset(addresses(collection, where))), where)]


# Grants built by for-expressions over a module's inputs, which the generic reader cannot
# enumerate; the readers below read those inputs instead.
READ_BY_THEIR_MODULE = {
    "service_accounts/google_project_iam_member.this",
    "service_accounts/google_service_account_iam_member.deployers_act_as",
    "secrets/google_secret_manager_secret_iam_member.accessors",
}


def iam_members() -> Iterator[tuple[Where, str, str, dict[str, Any]]]:
    for where in configurations():
        for kind, name, body in resource_blocks(where.directory):
            if (
                kind in SCOPE_ATTRIBUTE
                and f"{where.label}/{kind}.{name}" not in READ_BY_THEIR_MODULE
            ):
                yield where, kind, name, body


def unreadable(body: dict[str, Any], each: Each | None) -> bool:
    """A grant whose role or scope depends on fields of an each.value the reader could not
    enumerate."""
    opaque = each is not None and isinstance(each.value, AddressSet)
    return opaque and "each.value." in str(body)


def grant_scopes(kind: str, body: dict[str, Any], where: Where, each: Each | None) -> set[str]:
    attribute, scope_type = SCOPE_ATTRIBUTE[kind]
    return of_type(addresses(body[attribute], where, each), scope_type)


def iam_member_grants(where: Where, kind: str, name: str, body: dict[str, Any]) -> Iterator[Grant]:
    for each in instances(body, where):
        role = body["role"]
        if each is not None and role in ("${each.value}", "${each.value.role}"):
            role = each.value if role == "${each.value}" else each.value["role"]
        who = identity(body["member"], where, each)
        for scope in grant_scopes(kind, body, where, each):
            if who is not None:
                yield Grant(who, str(role), scope, f"{where.label}/{kind}.{name}")


def service_account_module_grants() -> Iterator[Grant]:
    """modules/service_accounts builds its grants with for-expressions over its inputs: read
    the inputs (the runtime roles and the accounts they go to, the deployer roles, the accounts
    deployers may act as)."""
    where = module_where("service_accounts")
    locals_ = merged(where.directory, "locals")
    (runtimes,) = re.findall(
        r"setproduct\(\[([^\]]*)\], local\.runtime_roles\)", locals_["project_grants"]
    )
    for role in re.findall(r"roles/[\w.]+", locals_["runtime_roles"]):
        for runtime in re.findall(r'"(\w+)"', runtimes):
            yield Grant(runtime, role, PROJECT, "service_accounts/runtime_roles")
    # The stack passes build_project_roles = null (the default set) when it grants them.
    if any(environment_value(env, "grant_build_deploy_roles") for env in ENVIRONMENTS):
        for role in variable_default(where.directory, "build_project_roles"):
            yield Grant(DEPLOYER, role, PROJECT, "service_accounts/build_project_roles")
    (act_as,) = [
        body
        for kind, name, body in resource_blocks(where.directory)
        if f"{where.label}/{kind}.{name}" in READ_BY_THEIR_MODULE
        and kind == "google_service_account_iam_member"
    ]
    (accounts,) = re.findall(
        r"setproduct\(keys\(local\.deployers\), \[([^\]]*)\]\)", act_as["for_each"]
    )
    for account in re.findall(r'"(\w+)"', accounts):
        yield Grant(
            DEPLOYER,
            act_as["role"],
            f"service_accounts:google_service_account.this[{account}]",
            "service_accounts/deployers_act_as",
        )


def secrets_module_grants() -> Iterator[Grant]:
    """modules/secrets grants each declared secret to the accessors it lists."""
    where = module_where("secrets")
    declared = call_argument(where, "secrets")
    members = local_value(call_argument(where, "accessor_members"), STACK_WHERE)
    for key, secret in declared.items():
        if key.startswith("__"):
            continue
        for accessor in secret["accessors"]:
            who = identity(members[accessor], STACK_WHERE)
            if who is not None:
                yield Grant(
                    who,
                    "roles/secretmanager.secretAccessor",
                    f"secrets:google_secret_manager_secret.this[{key}]",
                    "secrets/accessors",
                )


@cache
def grants() -> tuple[Grant, ...]:
    found = [g for member in iam_members() for g in iam_member_grants(*member)]
    found += service_account_module_grants()
    found += secrets_module_grants()
    return tuple(found)


def covers(grant: Grant, need: Need) -> bool:
    return (
        grant.identity == need.identity
        and need.permission in ROLE_PERMISSIONS.get(grant.role, frozenset())
        and grant.scope in (need.scope, PROJECT)
    )


# --- needs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    identity: str
    permission: str
    scope: str
    why: str


@dataclass(frozen=True, eq=False)
class Deployment:
    """A process the Terraform runs: as whom, from which entry, with which settings."""

    name: str
    identity: str
    account: str
    entry: Node
    argv: tuple[str, ...]
    env: Mapping[str, tuple[Any, Where]]  # environment variable -> expression, where it is read
    secrets: frozenset[str]  # Secret Manager secrets the platform reads as the identity
    secret_settings: frozenset[str]  # the settings those secrets fill in
    volumes: frozenset[str]  # buckets mounted as volumes, read as the identity


@cache
def program() -> Program:
    return Program(ROOT, PROGRAM_PACKAGES)


def entry_of(argv: list[str]) -> tuple[Node, tuple[str, ...]]:
    """The function a container's command runs: `python -m PACKAGE` or a console script."""
    if argv[:2] == ["python", "-m"]:
        return Node(f"{argv[2]}.__main__", "main"), tuple(argv[3:])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts[argv[0]].split(":")
    return Node(module, function), tuple(argv[1:])


def dockerfile_command(dockerfile: Path) -> list[str]:
    (command,) = re.findall(r"^CMD (\[.*\])\s*$", dockerfile.read_text(), re.MULTILINE)
    return [part.strip().strip('"') for part in command.strip("[]").split(",")]


# The image each Cloud Run module runs (cloudbuild.yaml builds them from these Dockerfiles).
IMAGES = {
    "cloud_run_api": ROOT / "api" / "Dockerfile",
    "cloud_run_worker": ROOT / "gpu_worker" / "Dockerfile",
}


def secret_settings(value: Any, where: Where) -> set[str]:
    """The environment variables a secret_env map (or a merge of such maps) fills in."""
    if isinstance(value, dict):
        return {k for k in value if not k.startswith("__")}
    names = set(re.findall(r"(\w+)\s*=\s*\{\s*secret\s*=", str(value)))
    for ref in REF.finditer(str(value)):
        if ref["local"]:
            names |= secret_settings(merged(where.directory, "locals").get(ref["lname"]), where)
    return names


def container_env(
    where: Where, container: dict[str, Any]
) -> tuple[dict[str, tuple[Any, Where]], frozenset[str], frozenset[str]]:
    """A Cloud Run container's plain settings (the maps its env local merges: the call's env
    and the module's own), the secrets its secret_key_ref entries read and their settings."""
    plain: dict[str, tuple[Any, Where]] = {}
    secrets: set[str] = set()
    names: set[str] = set()
    for block in container.get("dynamic", []):
        spec = block.get("env")
        if spec is None:
            continue
        if "value_source" in spec["content"][0]:
            secret_env = call_argument(
                where, spec["for_each"].removeprefix("${var.").removesuffix("}")
            )
            secrets |= {
                a for a in addresses(secret_env, STACK_WHERE) if "secret_manager_secret" in a
            }
            names |= secret_settings(local_value(secret_env, STACK_WHERE), STACK_WHERE)
            continue
        for ref in REF.finditer(str(local_value(spec["for_each"], where))):
            if ref["var"]:
                part, origin = (
                    local_value(call_argument(where, ref["vname"]), STACK_WHERE),
                    STACK_WHERE,
                )
            elif ref["local"]:
                part, origin = merged(where.directory, "locals").get(ref["lname"]), where
            else:
                continue
            if isinstance(part, dict):
                plain.update({k: (v, origin) for k, v in part.items() if not k.startswith("__")})
    return plain, frozenset(secrets), frozenset(names)


def cloud_run_deployments() -> Iterator[Deployment]:
    for where in stack_module_calls():
        for kind, name, body in resource_blocks(where.directory):
            if kind not in ("google_cloud_run_v2_service", "google_cloud_run_v2_job"):
                continue
            template = body["template"][0]
            if kind == "google_cloud_run_v2_job":
                template = template["template"][0]
            (container,) = template["containers"]
            command = [*container.get("command", []), *container.get("args", [])]
            entry, argv = entry_of(command or dockerfile_command(IMAGES[where.label]))
            account = frozenset(addresses(template["service_account"], where))
            env, secrets, names = container_env(where, container)
            volumes = {
                bucket
                for block in template.get("dynamic", [])
                if "volumes" in block
                for gcs in block["volumes"]["content"][0].get("gcs", [])
                for bucket in addresses(gcs["bucket"], where)
            }
            yield Deployment(
                name=f"{where.label}/{kind}.{name}",
                identity=_one_account(account) or "?",
                account=min(account),
                entry=entry,
                argv=argv,
                env=env,
                secrets=secrets,
                secret_settings=names,
                volumes=frozenset(volumes),
            )


def gke_deployment() -> Deployment:
    """The GKE worker: the manifest's command, terraform/gke's settings, and the account its
    Kubernetes service account acts as (Workload Identity)."""
    manifest = (GKE / "manifests" / "gpu-worker.yaml.tftpl").read_text()
    (command,) = re.findall(r"exec (python -m .+)$", manifest, re.MULTILINE)
    entry, argv = entry_of(shlex.split(command))
    (binding,) = [
        body
        for kind, _, body in resource_blocks(GKE)
        if kind == "google_service_account_iam_member"
        and body["role"] == "roles/iam.workloadIdentityUser"
    ]
    account = frozenset(addresses(binding["service_account_id"], GKE_WHERE) - {PROJECT})
    locals_ = merged(GKE, "locals")
    return Deployment(
        name="gke/gpu-worker",
        identity=_one_account(account) or "?",
        account=min(account),
        entry=entry,
        argv=argv,
        env={
            k: (v, GKE_WHERE)
            for k, v in locals_["worker_env_all"].items()
            if not k.startswith("__")
        },
        # The CSI drivers mount the secrets and the models bucket as the Kubernetes service
        # account, not as the worker's account (test_terraform checks those grants).
        secrets=frozenset(),
        secret_settings=frozenset(secret_settings(locals_["secret_env"], GKE_WHERE)),
        volumes=frozenset(),
    )


@cache
def deployments() -> tuple[Deployment, ...]:
    return (*cloud_run_deployments(), gke_deployment())


TERNARY = re.compile(r'^\$\{[^?]+\?\s*"([^"]*)"\s*:\s*"([^"]*)"\s*\}$')


def setting_values(expression: Any, where: Where) -> frozenset[object] | None:
    """The values a setting may take in some environment (None: the matrix cannot tell)."""
    if not isinstance(expression, str):
        return frozenset({expression})
    if "${" not in expression:
        return frozenset({expression})
    if ternary := TERNARY.match(expression):
        return frozenset(ternary.groups())
    variable = re.fullmatch(r"\$\{(?:tostring\()?var\.(\w+)\)?\}", expression)
    declared = merged(STACK, "variable").get(variable[1], {}) if variable else {}
    if variable and where.root == "stack" and "default" in declared:
        return frozenset(str(environment_value(env, variable[1])) for env in ENVIRONMENTS)
    output = re.fullmatch(r"\$\{local\.env\.(\w+)\}", expression)
    if output and where.root == "gke":
        return setting_values(merged(STACK, "output")[output[1]]["value"], STACK_WHERE)
    return None


def facts(deployment: Deployment) -> dict[str, frozenset[object]]:
    """What the deployment's settings and command line are, for the walk to decide the
    conditions on them. A setting it leaves unset has its profile's or its field's default."""
    known: dict[str, frozenset[object]] = {}
    for name, (expression, where) in deployment.env.items():
        values = setting_values(expression, where)
        if name.lower() in Settings.model_fields and values is not None:
            known[name.lower()] = values
    for name in deployment.secret_settings:
        if name.lower() in Settings.model_fields:
            # Filled in from a secret, maybe only in some environments.
            known[name.lower()] = frozenset({SOME, Settings.model_fields[name.lower()].default})
    environments = known.get("app_env", frozenset())
    for field, info in Settings.model_fields.items():
        if field in known:
            if isinstance(info.default, bool):
                known[field] = frozenset(
                    v if v is SOME else str(v).lower() in ("1", "true", "yes") for v in known[field]
                )
        elif any(field in profile for profile in PROFILES.values()):
            if environments and all(field in PROFILES[str(env)] for env in environments):
                known[field] = frozenset(PROFILES[str(env)][field] for env in environments)
        elif isinstance(info.default, str | bool | int | type(None)):
            known[field] = frozenset({info.default})
    result = {f"settings.{field}": values for field, values in known.items()}
    if deployment.entry == Node("api.admin_cli", "main"):
        arguments = vars(admin_parser().parse_args(list(deployment.argv)))
        result |= {f"args.{name}": frozenset({value}) for name, value in arguments.items()}
    return result


@cache
def reach(deployment: Deployment) -> Reach:
    return program().reach(deployment.entry, facts(deployment), CLIENT_LIBRARIES, DISTINCTIVE_CALLS)


@cache
def library_methods(library: str) -> frozenset[str]:
    """The public methods of the library's classes: the names that are calls of it."""
    names: set[str] = set()
    for spec in LIBRARY_CLASSES[library]:
        module, cls = spec.split(":")
        owner = getattr(importlib.import_module(module), cls)
        for name in dir(owner):
            attribute = inspect.getattr_static(owner, name, None)
            method = callable(attribute) or isinstance(attribute, staticmethod | classmethod)
            if not name.startswith("_") and method and not inspect.isclass(attribute):
                names.add(name)
    return frozenset(names)


def resolved_setting(deployment: Deployment, field: str) -> set[str]:
    entry = deployment.env.get(field.upper())
    if entry is None:
        return set()
    expression, where = entry
    return addresses(expression, where)


def scopes(deployment: Deployment, permission: str) -> set[str]:
    """What a permission of a client-library call applies to in this deployment: the project,
    or the resources named by the settings of that kind the process reads (GCS_BUCKET for
    storage.objects.*); a setting the deployment leaves unset names nothing of it."""
    if permission.startswith(PROJECT_WIDE):
        return {PROJECT}
    suffix = next(s for prefix, s in SCOPED_BY_SETTING.items() if permission.startswith(prefix))
    return {
        scope
        for field in reach(deployment).settings_read
        if field.endswith(suffix)
        for scope in resolved_setting(deployment, field)
    }


def signing_needs(deployment: Deployment, why: str) -> Iterator[Need]:
    """Signing through IAM: signBlob on the signing account (GCS_SIGNING_SERVICE_ACCOUNT, or
    the process's own), and that account's read access to what the URLs read."""
    signers = resolved_setting(deployment, "gcs_signing_service_account") or {deployment.account}
    for signer in sorted(signers):
        yield Need(deployment.identity, SIGN_BLOB, signer, why)
        for bucket in sorted(scopes(deployment, "storage.objects.get")):
            yield Need(
                _one_account(frozenset({signer})) or signer,
                "storage.objects.get",
                bucket,
                why + " (a signed URL reads as its signer)",
            )


def runtime_needs(deployment: Deployment) -> Iterator[Need]:
    found = reach(deployment)
    for call in sorted(found.library_calls):
        if call.attribute not in library_methods(call.library):
            continue
        path = " -> ".join(node.name for node in found.path(call.where))
        why = f"{deployment.name}: {call.attribute} in {call.where} line {call.line}, via {path}"
        library, attribute, keywords = SIGNS_THROUGH_IAM
        if (call.library, call.attribute) == (library, attribute) and call.keywords & keywords:
            yield from signing_needs(deployment, why)
        for permission in sorted(LIBRARY_CALLS[call.library].get(call.attribute, frozenset())):
            for scope in sorted(scopes(deployment, permission)):
                yield Need(deployment.identity, permission, scope, why)
    for secret in sorted(deployment.secrets):
        yield Need(
            deployment.identity,
            "secretmanager.versions.access",
            secret,
            f"{deployment.name} reads it as its account",
        )
    for bucket in sorted(deployment.volumes):
        for permission in ("storage.objects.get", "storage.objects.list"):
            yield Need(deployment.identity, permission, bucket, f"{deployment.name} mounts it")


def subscriptions() -> Iterator[tuple[str, dict[str, Any]]]:
    where = module_where("pubsub")
    for kind, name, body in resource_blocks(where.directory):
        if kind == "google_pubsub_subscription":
            yield name, body


def pubsub_needs() -> Iterator[Need]:
    """Dead-lettering (https://cloud.google.com/pubsub/docs/dead-letter-topics): the service
    agent publishes to the dead-letter topic and acknowledges on the source subscription.
    Authenticated push (https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions):
    the push identity may invoke the endpoint, and the agent mints its tokens."""
    where = module_where("pubsub")
    for name, body in subscriptions():
        subscription = f"{where.label}:google_pubsub_subscription.{name}"
        for policy in body.get("dead_letter_policy", []):
            why = f"{name} dead-letters to {policy['dead_letter_topic']}"
            for topic in addresses(policy["dead_letter_topic"], where):
                yield Need(PUBSUB_AGENT, "pubsub.topics.publish", topic, why)
            yield Need(PUBSUB_AGENT, "pubsub.subscriptions.consume", subscription, why)
        for push in body.get("push_config", []):
            for token in push.get("oidc_token", []):
                pusher = addresses(token["service_account_email"], where)
                why = (
                    f"{name} pushes to {push['push_endpoint']} as {token['service_account_email']}"
                )
                for account in pusher:
                    yield Need(PUBSUB_AGENT, "iam.serviceAccounts.getOpenIdToken", account, why)
                for service in addresses(push["push_endpoint"], where):
                    yield Need(
                        _one_account(frozenset(pusher)) or "?", "run.routes.invoke", service, why
                    )


def scheduler_needs() -> Iterator[Need]:
    """A scheduler job that calls Cloud Run's jobs.run needs run.jobs.run on that job
    (https://cloud.google.com/run/docs/execute/jobs-on-schedule); one that calls a service's
    URL, run.routes.invoke on the service."""
    for where in stack_module_calls():
        for kind, name, body in resource_blocks(where.directory):
            if kind != "google_cloud_scheduler_job":
                continue
            (target,) = body["http_target"]
            runs_job = target["uri"].endswith(":run")
            permission = "run.jobs.run" if runs_job else "run.routes.invoke"
            called = "google_cloud_run_v2_job" if runs_job else "google_cloud_run_v2_service"
            for token in (*target.get("oauth_token", []), *target.get("oidc_token", [])):
                caller = frozenset(addresses(token["service_account_email"], where))
                for resource in of_type(addresses(target["uri"], where), called):
                    yield Need(
                        _one_account(caller) or "?",
                        permission,
                        resource,
                        f"{where.label}/{kind}.{name} calls {target['uri']}",
                    )


def resource_types() -> dict[str, set[str]]:
    """Every resource and data source type Cloud Build applies -> where it is declared."""
    found: dict[str, set[str]] = {}
    for where in configurations():
        for block in ("resource", "data"):
            for kind, name, _ in resource_blocks(where.directory, block):
                found.setdefault(kind, set()).add(f"{where.label}/{kind}.{name}")
    return found


# Attributes through which a resource runs as (or hands out tokens of) a service account.
ATTACHED_ACCOUNT = re.compile(r"^(service_account|service_account_email)$")


def attached_accounts(body: Any, where: Where) -> Iterator[str]:
    if isinstance(body, dict):
        for key, value in body.items():
            if ATTACHED_ACCOUNT.match(key) and isinstance(value, str):
                yield from addresses(value, where)
            else:
                yield from attached_accounts(value, where)
    elif isinstance(body, list):
        for item in body:
            yield from attached_accounts(item, where)


def deployer_needs() -> Iterator[Need]:
    for kind, places in sorted(resource_types().items()):
        for permission in sorted(RESOURCE_PERMISSIONS.get(kind, frozenset())):
            yield Need(DEPLOYER, permission, PROJECT, f"applying {', '.join(sorted(places))}")
    # Attaching an account to a resource takes actAs on it
    # (https://cloud.google.com/iam/docs/service-accounts-actas).
    for where in configurations():
        for kind, name, body in resource_blocks(where.directory):
            for account in attached_accounts(body, where):
                yield Need(
                    DEPLOYER,
                    "iam.serviceAccounts.actAs",
                    account,
                    f"{where.label}/{kind}.{name} runs as it",
                )


@cache
def needs() -> tuple[Need, ...]:
    found: list[Need] = []
    for deployment in deployments():
        found += runtime_needs(deployment)
    found += pubsub_needs()
    found += scheduler_needs()
    found += deployer_needs()
    return tuple(dict.fromkeys(found))


IDENTITIES = ("api", "worker", "push_invoker", "scheduler", PUBSUB_AGENT, DEPLOYER)


def uncovered(who: str) -> list[str]:
    missing: dict[tuple[str, str], list[str]] = {}
    for need in needs():
        if need.identity == who and not any(covers(g, need) for g in grants()):
            missing.setdefault((need.permission, need.scope), []).append(need.why)
    return [
        f"{permission} on {scope}, for {whys[0]}"
        for (permission, scope), whys in sorted(missing.items())
    ]


# --- tests ----------------------------------------------------------------------------------------


def test_every_resource_type_says_what_applying_it_takes() -> None:
    unknown = {
        kind: places
        for kind, places in resource_types().items()
        if kind not in RESOURCE_PERMISSIONS
    }
    assert not unknown, (
        "add these types to RESOURCE_PERMISSIONS in tests/unit/infra/iam_reference.py, with the "
        f"permissions their create/get/update/delete methods check: {unknown}"
    )


def test_every_role_granted_to_a_checked_identity_is_in_the_role_table() -> None:
    unknown = {
        g.role for g in grants() if g.identity in IDENTITIES and g.role not in ROLE_PERMISSIONS
    }
    assert not unknown, (
        "add these roles to ROLE_PERMISSIONS in tests/unit/infra/iam_reference.py (from "
        f"https://cloud.google.com/iam/docs/roles-permissions): {sorted(unknown)}"
    )


def test_the_code_uses_no_google_client_the_matrix_does_not_know() -> None:
    """A new Google client library would call APIs this matrix cannot see."""
    unknown = {
        f"{module}: {name}"
        for module, imported in program().libraries.items()
        for name in imported.values()
        if name.startswith("google")
        and not any(
            name == p or name.startswith(p + ".") for p in (*CLIENT_LIBRARIES, *NOT_API_CLIENTS)
        )
    }
    assert not unknown, f"teach CLIENT_LIBRARIES (or NOT_API_CLIENTS) about: {sorted(unknown)}"


def test_distinctive_calls_are_named_by_no_method_of_this_code() -> None:
    """They are taken for the library's wherever they are used: a method of ours with one of
    those names would be taken for a Google call."""
    ours = {node.name.rsplit(".", 1)[-1] for node in program().defs}
    assert not ours & set(DISTINCTIVE_CALLS)


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d.name)
def test_every_client_library_call_a_process_makes_is_in_the_call_table(
    deployment: Deployment,
) -> None:
    unknown = {
        f"{call.library}.{call.attribute} at {call.where} line {call.line}"
        for call in reach(deployment).library_calls
        if call.attribute in library_methods(call.library)
        and call.attribute not in LIBRARY_CALLS[call.library]
    }
    assert not unknown, (
        f"add these calls to LIBRARY_CALLS with their permissions: {sorted(unknown)}"
    )


def test_the_matrix_reads_every_grant_to_an_identity_it_checks() -> None:
    """A grant whose target or role the reader cannot tell would be silently left out."""
    unread = [
        f"{where.label}/{kind}.{name}"
        for where, kind, name, body in iam_members()
        for each in instances(body, where)
        if identity(body["member"], where, each) is not None
        and (unreadable(body, each) or not grant_scopes(kind, body, where, each))
    ]
    assert not unread, f"teach the matrix to read (or add to READ_BY_THEIR_MODULE): {unread}"


def test_the_matrix_has_something_to_check() -> None:
    """Guards against a walk or a reader that silently finds nothing: every identity has
    needs, and every process makes some client-library call."""
    assert {need.identity for need in needs()} >= set(IDENTITIES)
    for deployment in deployments():
        assert any(
            call.attribute in LIBRARY_CALLS[call.library]
            for call in reach(deployment).library_calls
        ), deployment.name


@pytest.mark.parametrize("who", IDENTITIES)
def test_each_identity_is_granted_what_it_needs(who: str) -> None:
    missing = uncovered(who)
    assert not missing, f"{who} lacks:\n  " + "\n  ".join(missing)


def test_the_runtime_accounts_sign_only_as_themselves() -> None:
    """signBlob on another account would let a process sign URLs that read whatever that
    account may read: each runtime account holds it on its own account only."""
    for grant in grants():
        if grant.identity in ("api", "worker") and SIGN_BLOB in ROLE_PERMISSIONS.get(
            grant.role, frozenset()
        ):
            assert (
                grant.scope == f"service_accounts:google_service_account.this[{grant.identity}]"
            ), grant
