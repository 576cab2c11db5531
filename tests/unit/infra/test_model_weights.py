"""Where the worker's weights come from, and that they get there.

* `gcloud builds submit` uploads ./model (git-ignored, so gcloud's default, which follows
  .gitignore, would leave it out) and keeps git-ignored junk and secrets out: .gcloudignore,
  read with gitignore semantics and, where gcloud is installed, by gcloud itself.
* The build stops at its first step when the model is not where _MODEL_SOURCE says.
* By default the model is baked into the worker image from the environment's models bucket,
  and the worker's MODEL_PATH is where the image holds it; with the FUSE mount chosen,
  MODEL_PATH points into the mount.
* The runbook's download fetches what the engine loads and nothing else: the fp16 files, no
  safety checker, no fp32 weights; and the engine, given that folder, asks for exactly that.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.availability import missing
from tests.unit.infra.test_cloudbuild import SUBSTITUTION, unescaped, upstream
from tests.unit.infra.test_containers import WORKER_DOCKERFILE, env_of, parse_dockerfile
from tests.unit.infra.test_terraform import (
    ENVIRONMENTS,
    MODULES,
    ROOT,
    STACK,
    dynamic,
    merged,
    module_call,
    module_input,
    one,
    variable_default,
    worker_container,
    worker_service,
)
from tests.unit.test_model_folder import SD15_INDEX

GCLOUDIGNORE = ROOT / ".gcloudignore"
CLOUDBUILD = ROOT / "cloudbuild.yaml"
RUNBOOK = ROOT / "docs" / "deploy-cloud-run.md"

UPLOADED = [
    "model/model_index.json",
    "model/unet/diffusion_pytorch_model.fp16.safetensors",
    "model/tokenizer/vocab.json",
    "cloudbuild.yaml",
    "api/app.py",
    "gpu_worker/Dockerfile",
    "tools/locks/worker.txt",
    "terraform/stack/main.tf",
    "terraform/environments/staging.tfvars",
    "tests/unit/infra/test_model_weights.py",
]
KEPT_OUT = [
    ".venv/bin/python",
    ".venv-hf/bin/hf",
    ".data/models/tiny-sd/model_index.json",
    ".git/config",
    "terraform.tfstate",
    "terraform/stack/terraform.tfstate",
    "terraform/stack/terraform.tfstate.backup",
    "terraform/stack/.terraform/providers/registry.json",
    ".terraform-staging/terraform.tfstate",
    ".gcloud-token",
    ".env",
    "vm.env",
    "gcs-signing-key.json",
    "gpu_worker/__pycache__/engine.cpython-311.pyc",
    "models/stable-diffusion/unet/diffusion_pytorch_model.fp16.safetensors",
    "model/.cache/huggingface/download/model_index.json.metadata",
]

# The files of stable-diffusion-v1-5/stable-diffusion-v1-5 on the Hugging Face hub: single-file
# checkpoints at the top, each component in fp32 and fp16, as safetensors and pickles.
SD15_REPO_FILES = [
    ".gitattributes",
    "README.md",
    "model_index.json",
    "v1-5-pruned-emaonly.ckpt",
    "v1-5-pruned-emaonly.safetensors",
    "v1-5-pruned.ckpt",
    "v1-5-pruned.safetensors",
    "v1-inference.yaml",
    "feature_extractor/preprocessor_config.json",
    "safety_checker/config.json",
    "safety_checker/model.fp16.safetensors",
    "safety_checker/model.safetensors",
    "safety_checker/pytorch_model.bin",
    "safety_checker/pytorch_model.fp16.bin",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder/pytorch_model.bin",
    "text_encoder/pytorch_model.fp16.bin",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.bin",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.bin",
    "vae/diffusion_pytorch_model.fp16.bin",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
]
# What the engine loads on a GPU: every pipeline component's config and fp16 weights.
ENGINE_LOADS = {
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


# --- .gcloudignore: what `gcloud builds submit` uploads -----------------------------------


# What gcloud uses when the uploaded folder has no .gcloudignore but a .gitignore
# (https://cloud.google.com/sdk/gcloud/reference/topic/gcloudignore).
GCLOUD_DEFAULT_IGNORE = ".gcloudignore\n.git\n.gitignore\n#!include:.gitignore\n"


def gcloudignore_patterns() -> list[str]:
    """.gcloudignore's lines (gcloud's default without one) with gcloud's `#!include:FILE`
    directives replaced by FILE's lines (FILE relative to the uploaded folder, the root)."""
    text = GCLOUDIGNORE.read_text() if GCLOUDIGNORE.is_file() else GCLOUD_DEFAULT_IGNORE
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("#!include:"):
            lines += (ROOT / line.removeprefix("#!include:").strip()).read_text().splitlines()
        else:
            lines.append(line)
    return lines


def uploaded(path: str) -> bool:
    """Whether gcloud uploads the file `path` (relative to the root), by gitignore rules."""
    try:
        import pathspec
    except ImportError:
        missing("pathspec", "pip install pathspec (mypy brings it)")
    spec = pathspec.GitIgnoreSpec.from_lines(gcloudignore_patterns())
    return not spec.match_file(path)


class TestGcloudignore:
    @pytest.mark.parametrize("path", UPLOADED)
    def test_uploads_the_source_and_the_model_folder(self, path: str) -> None:
        """./model is git-ignored; without .gcloudignore gcloud follows .gitignore and drops
        it, so _MODEL_SOURCE=context would build without it."""
        assert uploaded(path)

    @pytest.mark.parametrize("path", KEPT_OUT)
    def test_keeps_git_ignored_files_secrets_and_state_out(self, path: str) -> None:
        assert not uploaded(path)

    def test_gcloud_itself_uploads_exactly_that(self, tmp_path: Path) -> None:
        """`gcloud meta list-files-for-upload` on a tree of those files and the repository's
        ignore files: gcloud's own reading, not a model of it."""
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            missing("gcloud", "install the Google Cloud CLI")
        ignore_files = [".gcloudignore", ".gitignore", "terraform/.gitignore"]
        for name in [*UPLOADED, *KEPT_OUT, *ignore_files]:
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name in ignore_files and (ROOT / name).is_file():
                shutil.copyfile(ROOT / name, target)
            else:
                target.write_text("")
        listed = subprocess.run(
            [gcloud, "meta", "list-files-for-upload", str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        ).stdout.split()
        files = {path.replace(os.sep, "/") for path in listed}
        assert files >= set(UPLOADED)
        assert files & set(KEPT_OUT) == set()


# --- cloudbuild.yaml: the model is where _MODEL_SOURCE says, before anything runs -----------


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    with CLOUDBUILD.open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def step(build: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in build["steps"] if s["id"] == step_id)


def run_check(
    build: dict[str, Any], workspace: Path, **substitutions: str
) -> subprocess.CompletedProcess[str]:
    """The check-substitutions step's script, run by bash in `workspace` (Cloud Build runs
    steps in /workspace, the uploaded source) with `substitutions` over the file's defaults, and
    a `gcloud` stand-in that answers GCLOUD_EXIT and records its arguments."""
    values = {"SHORT_SHA": "abc1234", "PROJECT_ID": "my-project", **build["substitutions"]}
    values.update(substitutions)
    for name, value in list(values.items()):
        values[name] = SUBSTITUTION.sub(
            lambda m: values.get(m.group(1) or m.group(2), m.group(0)), value
        )
    script = step(build, "check-substitutions")["args"][1]
    body = SUBSTITUTION.sub(lambda m: values[m.group(1) or m.group(2)], script)
    bin_dir = workspace / ".fake-bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "gcloud"
    fake.write_text('#!/bin/sh\necho "$@" >> "$GCLOUD_CALLS"\nexit "${GCLOUD_EXIT:-0}"\n')
    fake.chmod(0o755)
    return subprocess.run(
        ["bash", "-c", unescaped(body)],  # noqa: S607
        cwd=workspace,
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "GCLOUD_CALLS": str(workspace / "gcloud-calls"),
            "GCLOUD_EXIT": os.environ.get("TEST_GCLOUD_EXIT", "0"),
        },
    )


class TestBuildChecksTheModelFirst:
    def test_every_image_build_waits_for_the_check(self, build: dict[str, Any]) -> None:
        assert "check-substitutions" in upstream(build, "build-worker")

    def test_context_without_a_model_stops_at_once(
        self, build: dict[str, Any], tmp_path: Path
    ) -> None:
        """A trigger's clone has no ./model: the build says so before the tests run."""
        result = run_check(build, tmp_path, _MODEL_SOURCE="context")
        assert result.returncode != 0
        assert "model/model_index.json" in result.stderr
        assert "trigger" in result.stderr

    def test_context_with_a_model_passes(self, build: dict[str, Any], tmp_path: Path) -> None:
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "model_index.json").write_text("{}")
        result = run_check(build, tmp_path, _MODEL_SOURCE="context")
        assert result.returncode == 0, result.stderr

    def test_gcs_looks_for_the_model_index_in_the_bucket(
        self, build: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        result = run_check(build, tmp_path)
        assert result.returncode == 0, result.stderr
        calls = (tmp_path / "gcloud-calls").read_text()
        assert "gs://my-project-txt2img-models/stable-diffusion/model_index.json" in calls

        monkeypatch.setenv("TEST_GCLOUD_EXIT", "1")
        result = run_check(build, tmp_path)
        assert result.returncode != 0
        assert "Upload the model first" in result.stderr

    @pytest.mark.parametrize(
        "substitutions",
        [{"_MODEL_SOURCE": "gcs", "_MODEL_GCS_URI": ""}, {"_MODEL_SOURCE": "bucket"}],
    )
    def test_unusable_settings_stop_at_once(
        self, build: dict[str, Any], tmp_path: Path, substitutions: dict[str, str]
    ) -> None:
        result = run_check(build, tmp_path, **substitutions)
        assert result.returncode != 0
        assert "_MODEL_" in result.stderr

    def test_no_model_needs_no_check(self, build: dict[str, Any], tmp_path: Path) -> None:
        assert run_check(build, tmp_path, _MODEL_SOURCE="none").returncode == 0


# --- the default: baked into the image from the environment's models bucket ---------------


def baked_model_path() -> str:
    """Where gpu_worker/Dockerfile puts the model in the final image."""
    worker = parse_dockerfile(WORKER_DOCKERFILE)
    copies = [
        i.args.split()
        for i in worker.final_instructions()
        if i.keyword == "COPY" and "--from=model" in i.args.split()
    ]
    assert len(copies) == 1, "the runtime image copies the model stage once"
    return copies[0][-1]


def worker_model_path(environment: str, *, mount: bool | None = None) -> str:
    """MODEL_PATH the Cloud Run worker module sets, in an environment (optionally with
    mount_models_bucket forced)."""
    expression = merged(MODULES / "cloud_run_worker", "locals")["module_env"]["MODEL_PATH"]
    match = re.fullmatch(r'\$\{var\.mount_models_bucket \? "(.*)" : var\.model_path\}', expression)
    assert match, f"unexpected MODEL_PATH expression {expression!r}"
    if mount is None:
        mount = module_input(environment, "worker", "mount_models_bucket")
    if not mount:
        return str(module_input(environment, "worker", "model_path"))
    mount_path = merged(MODULES / "cloud_run_worker", "locals")["models_mount_path"]
    return (
        match[1]
        .replace("${local.models_mount_path}", mount_path)
        .replace("${var.model_name}", str(module_input(environment, "worker", "model_name")))
    )


def models_bucket_for_cloud_build() -> str:
    """The models bucket's name as Terraform makes it, written with Cloud Build's PROJECT_ID."""
    name = str(module_call("staging", "storage")["models_bucket_name"])
    return name.replace("${var.project_id}", "${PROJECT_ID}")


class TestBakedByDefault:
    @pytest.mark.parametrize("environment", ENVIRONMENTS)
    def test_the_worker_loads_the_model_where_the_image_holds_it(self, environment: str) -> None:
        """mount_models_bucket defaults to false; MODEL_PATH is then model_path, which must
        be the folder the Dockerfile bakes the model into (and the image's own MODEL_PATH)."""
        assert module_input(environment, "worker", "mount_models_bucket") is False
        baked = baked_model_path()
        assert worker_model_path(environment) == baked
        assert env_of(parse_dockerfile(WORKER_DOCKERFILE).final_instructions())["MODEL_PATH"] == (
            baked
        )

    def test_the_default_build_bakes_the_environments_model(self, build: dict[str, Any]) -> None:
        """_MODEL_SOURCE defaults to gcs, from the models bucket Terraform creates, in the
        folder the FUSE option would mount (model_name): one upload serves both."""
        substitutions = build["substitutions"]
        assert substitutions["_MODEL_SOURCE"] == "gcs"
        model_name = variable_default(STACK, "model_name")
        expected = f"gs://{models_bucket_for_cloud_build()}/{model_name}"
        assert substitutions["_MODEL_GCS_URI"] == expected
        script = step(build, "build-worker")["args"][1]
        assert "--build-arg=MODEL_SOURCE=${_MODEL_SOURCE}" in script
        assert "--build-arg=MODEL_GCS_URI=${_MODEL_GCS_URI}" in script
        assert "model-gcs" in {stage.name for stage in parse_dockerfile(WORKER_DOCKERFILE).stages}

    def test_the_build_account_may_read_the_models_bucket(self) -> None:
        """Also when grant_build_deploy_roles withholds storage.admin."""
        grants = module_call("staging", "storage")["models_iam_members"].values()
        assert {
            "role": "roles/storage.objectViewer",
            "member": "${module.service_accounts.members.build}",
        } in list(grants)

    @pytest.mark.parametrize("environment", ENVIRONMENTS)
    def test_with_fuse_model_path_points_into_the_mount(self, environment: str) -> None:
        """The option kept for large or often-swapped models: the bucket mounted read-only
        and MODEL_PATH inside the mount, at the folder the build would bake from."""
        mount_path = merged(MODULES / "cloud_run_worker", "locals")["models_mount_path"]
        (volume_mount,) = dynamic(worker_container(), "volume_mounts")
        assert volume_mount["for_each"] == "${var.mount_models_bucket ? [1] : []}"
        assert volume_mount["content"][0]["mount_path"] == "${local.models_mount_path}"
        (volume,) = dynamic(one(worker_service(), "template"), "volumes")
        gcs = one(volume["content"][0], "gcs")
        assert gcs["read_only"] is True
        path = worker_model_path(environment, mount=True)
        assert path.startswith(mount_path.rstrip("/") + "/")
        folder = path.removeprefix(mount_path.rstrip("/") + "/")
        assert folder == str(module_input(environment, "worker", "model_name"))


# --- the runbook's download: what the engine loads, and nothing else ----------------------


def download_command() -> list[str]:
    """The `hf download` command of the runbook's "The model" section, as argv."""
    text = RUNBOOK.read_text()
    section = text[text.index("### The model") : text.index("## 5.")]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    commands = [
        shlex.split(line, comments=True)
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
    ]
    (command,) = [c for c in commands if c[:1] and c[0].endswith("/hf") and "download" in c]
    return command


def include_patterns(command: list[str]) -> list[str]:
    start = command.index("--include") + 1
    end = next((i for i in range(start, len(command)) if command[i].startswith("--")), None)
    return command[start:end]


def downloaded_files() -> set[str]:
    """The files of the hub repository the runbook's patterns select, by huggingface_hub's own
    matching (what `hf download --include` does)."""
    try:
        from huggingface_hub.utils import (  # type: ignore[attr-defined] # exported lazily
            filter_repo_objects,
        )
    except ImportError:
        missing("huggingface_hub", "pip install huggingface_hub (transformers brings it)")
    patterns = include_patterns(download_command())
    return set(filter_repo_objects(SD15_REPO_FILES, allow_patterns=patterns))


class TestRunbookDownload:
    def test_fetches_no_safety_checker(self) -> None:
        fetched = downloaded_files()
        assert {f for f in fetched if f.startswith(("safety_checker/", "feature_extractor/"))} == (
            set()
        )

    def test_fetches_only_fp16_safetensors_weights(self) -> None:
        weights = {f for f in downloaded_files() if f.endswith(WEIGHT_SUFFIXES)}
        assert weights
        assert {f for f in weights if not f.endswith(".fp16.safetensors")} == set()

    def test_fetches_everything_the_engine_loads(self) -> None:
        assert ENGINE_LOADS - downloaded_files() == set()

    def test_the_engine_loads_that_folder_as_the_fp16_variant_without_safety_checker(
        self, tmp_path: Path
    ) -> None:
        """Given the download, the engine asks diffusers for variant="fp16" (on the GPU and
        on a CPU: there is nothing else) and passes None for the absent safety checker."""
        from gpu_worker.model_folder import absent_optional_components, load_variant

        for name in downloaded_files():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("")
        (tmp_path / "model_index.json").write_text(json.dumps(SD15_INDEX))
        assert load_variant(tmp_path, half_precision=True) == "fp16"
        assert load_variant(tmp_path, half_precision=False) == "fp16"
        assert set(absent_optional_components(tmp_path)) == {"safety_checker", "feature_extractor"}

    def test_uploads_to_the_folder_the_build_bakes_from(self, build: dict[str, Any]) -> None:
        """The runbook's upload lands where _MODEL_GCS_URI points (and where the FUSE option
        would mount): gs://MODELS_BUCKET/MODEL_NAME."""
        text = RUNBOOK.read_text()
        section = text[text.index("### The model") : text.index("## 5.")]
        destinations = re.findall(r'"gs://\$\{MODELS_BUCKET\}/([^"]+)"', section)
        assert destinations
        default_uri = build["substitutions"]["_MODEL_GCS_URI"]
        for folder in destinations:
            assert default_uri == f"gs://{models_bucket_for_cloud_build()}/{folder}"
