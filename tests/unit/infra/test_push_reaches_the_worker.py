"""Every Pub/Sub push can reach the service it targets: its OIDC token's audience is one the
service accepts (its run.app URL or one of its custom_audiences), and its identity may invoke
the service. Cloud Run refuses any other token with 401 before the container sees it
(https://cloud.google.com/run/docs/configuring/custom-audiences), so a mismatch means no job
ever runs. Traced from the subscriptions through the environments' module calls to the
worker's service resource, so it fails for the right reason, not by restating one value."""

from __future__ import annotations

import re

import pytest

from tests.unit.infra.test_terraform import ENVIRONMENTS, MODULES, module_call, one, resources

MODULE_VAR = re.compile(r"\$\{var\.(\w+)\}")


def push_subscriptions() -> dict[str, dict[str, str]]:
    """Each push subscription's endpoint and token, as the pubsub module writes them."""
    found = {}
    for name, body in resources(MODULES / "pubsub", "google_pubsub_subscription").items():
        if body.get("push_config"):
            push = one(body, "push_config")
            found[name] = {"endpoint": push["push_endpoint"], **one(push, "oidc_token")}
    return found


def through(environment: str, module: str, expression: str) -> str:
    """What the environment passes for the module variable `expression` names."""
    variable = MODULE_VAR.fullmatch(expression)
    assert variable, f"{module}: {expression} is not a module variable"
    return str(module_call(environment, module)[variable[1]])


def test_there_are_push_subscriptions_to_check() -> None:
    assert set(push_subscriptions()) >= {"jobs_worker", "dead_letter_recorder"}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("subscription", sorted(push_subscriptions()))
def test_the_push_token_is_accepted_and_its_identity_may_invoke(
    environment: str, subscription: str
) -> None:
    push = push_subscriptions()[subscription]
    # It pushes to the worker service's URL...
    assert push["endpoint"].startswith("${var.push_endpoint_base_url}/")
    assert "module.worker" in through(environment, "pubsub", "${var.push_endpoint_base_url}")
    # ...with a token whose audience that service accepts...
    audience = through(environment, "pubsub", push["audience"])
    service = resources(MODULES / "cloud_run_worker", "google_cloud_run_v2_service")["worker"]
    accepted_var = MODULE_VAR.fullmatch(str(service.get("custom_audiences")))
    assert accepted_var is not None, "the worker service declares no custom_audiences"
    accepted = module_call(environment, "worker")[accepted_var[1]]
    assert audience in accepted, f"{audience} is not among the worker's audiences {accepted}"
    # ...signed by an identity that may invoke it.
    signer = through(environment, "pubsub", push["service_account_email"])
    invokers = [
        binding["member"]
        for binding in resources(
            MODULES / "cloud_run_worker", "google_cloud_run_v2_service_iam_member"
        ).values()
        if binding["role"] == "roles/run.invoker"
    ]
    assert invokers, "nobody may invoke the worker"
    for member in invokers:
        invoker = MODULE_VAR.search(member)
        assert invoker and through(environment, "worker", f"${{var.{invoker[1]}}}") == signer
