"""The runbooks give every secret the services read a value: Cloud Run starts no revision that
mounts a secret without a version, and the VM's startup script (set -e) stops at one."""

from __future__ import annotations

import re

from tests.unit.infra.test_terraform import MODULES, ROOT, TERRAFORM, commands, variable_default

DECLARED = {s["secret_id"] for s in variable_default(MODULES / "secrets", "secrets").values()}


def test_the_cloud_run_runbook_adds_a_version_to_every_secret_terraform_declares() -> None:
    script = commands(ROOT / "docs/deploy-cloud-run.md")
    added = set(re.findall(r"gcloud secrets versions add (\S+)", script))
    assert "txt2img-webhook-signing-secret" in DECLARED
    assert DECLARED - added == set()


def test_the_vm_runbook_creates_grants_and_deletes_every_secret_startup_reads() -> None:
    """Each secret of the secrets module that startup.sh reads as PREFIX-<id without
    "txt2img-"> is in both modes' create loops and in both tear-downs."""
    startup = (TERRAFORM / "vm/startup.sh").read_text()
    read = set(re.findall(r'"\$\(secret "\$\{prefix\}-([\w-]+)"\)"', startup))
    suffixes = {secret_id.removeprefix("txt2img-") for secret_id in DECLARED} & read
    assert {"api-key-pepper", "url-signing-secret", "webhook-signing-secret"} <= suffixes
    script = commands(ROOT / "docs/deploy-vm.md")
    (prefix,) = set(re.findall(r"txt2img-secret-prefix=([\w-]+)", script))
    loops = re.findall(r"for name in ([^;]+); do\n(.*?)\ndone", script, flags=re.S)
    loops = [names.split() for names, body in loops if "gcloud secrets create" in body]
    assert len(loops) == 2, "section 7 (Pub/Sub mode) and S2 (self-hosted mode)"
    deleted = re.findall(r"gcloud secrets delete (\S+)", script)
    for suffix in sorted(suffixes):
        name = f"{prefix}-{suffix}"
        assert all(name in names for names in loops), f"{name} is not created in every mode"
        assert deleted.count(name) == len(loops), f"{name} is not deleted in every tear-down"
