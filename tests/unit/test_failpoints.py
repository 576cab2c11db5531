"""Failpoints: parsed strictly, fire where armed, and are refused in production profiles."""

from __future__ import annotations

import pytest

from dal.errors import FailpointTriggered
from dal.failpoints import Failpoints, parse_failpoints
from dal.settings import Settings

STRONG = "s" * 40


def test_a_spec_names_known_points_and_actions() -> None:
    assert parse_failpoints(None) == {}
    assert parse_failpoints(" after_job_recorded = exit ,") == {"after_job_recorded": "exit"}


@pytest.mark.parametrize(
    "spec", ["after_job_recorded", "nowhere=exit", "after_job_recorded=explode", "=exit"]
)
def test_a_malformed_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="FAILPOINTS"):
        parse_failpoints(spec)
    with pytest.raises(ValueError, match="FAILPOINTS"):
        Settings(app_env="test", failpoints=spec)


def test_an_armed_point_fires_and_others_pass() -> None:
    Failpoints().hit("after_job_recorded")
    armed = Failpoints.from_spec("after_job_recorded=error")
    with pytest.raises(FailpointTriggered, match="after_job_recorded"):
        armed.hit("after_job_recorded")


def test_production_profiles_refuse_failpoints() -> None:
    for env in ("staging", "prod"):
        with pytest.raises(ValueError, match="FAILPOINTS"):
            Settings(
                app_env=env,
                api_key_pepper=STRONG,
                url_signing_secret=STRONG,
                failpoints="after_job_recorded=exit",
                push_audience="https://worker/pubsub/push",
                push_service_account="sa@x.iam",
            )
    assert Settings(
        app_env="emulator", gcs_signing_key_file="k.json", failpoints="after_job_recorded=exit"
    ).failpoints


def test_the_outbox_give_up_age_must_exceed_the_grace_period() -> None:
    with pytest.raises(ValueError, match="OUTBOX_GIVE_UP_S"):
        Settings(app_env="test", outbox_grace_s=60, outbox_give_up_s=60)
