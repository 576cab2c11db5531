"""Settings: profiles fill in adapters, variables override them, production refuses fakes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dal.settings import Settings

STRONG = "x" * 40
OIDC: dict[str, Any] = {
    "push_audience": "https://worker.example/pubsub/push",
    "push_service_account": "push@p.iam.gserviceaccount.com",
    "gcs_signing_service_account": "api@p.iam.gserviceaccount.com",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "APP_ENV",
        "JOB_STORE",
        "BLOB_STORE",
        "JOB_QUEUE",
        "RATE_LIMITER",
        "PORT",
        "API_KEY_PEPPER",
        "URL_SIGNING_SECRET",
        "DATABASE_URL",
        "MODEL_PATH",
    ):
        monkeypatch.delenv(name, raising=False)


class TestProfiles:
    def test_local_is_the_default_and_needs_nothing_installed(self) -> None:
        """With no environment, the embedded profile is chosen: SQLite, files, inline queue."""
        s = Settings()
        assert (s.app_env, s.job_store, s.blob_store, s.job_queue, s.rate_limiter) == (
            "local",
            "sql",
            "filesystem",
            "inline",
            "memory",
        )
        assert s.resolved_database_url.startswith("sqlite:///")
        assert s.port == 8080

    def test_test_profile_uses_in_memory_adapters(self) -> None:
        """The test profile wires only in-process fakes."""
        s = Settings(app_env="test")
        assert {s.job_store, s.blob_store, s.job_queue, s.rate_limiter} == {"memory"}

    @pytest.mark.parametrize(
        ("overrides", "in_process"),
        [
            ({}, True),  # the embedded profile: SQLite, the inline queue, a memory cache
            ({"app_env": "test"}, True),
            ({"job_queue": "memory"}, True),  # the serving bench's Cloud Run stand-in
            ({"database_url": "postgresql+psycopg://db/txt2img"}, False),
            ({"job_queue": "celery"}, False),
            ({"request_cache": "redis"}, False),
            ({"app_env": "selfhosted"}, False),
            ({"job_store": "firestore"}, False),
        ],
    )
    def test_submits_stay_in_process_only_where_nothing_they_touch_is_remote(
        self, overrides: dict[str, Any], in_process: bool
    ) -> None:
        """Where a submit waits on a network (a database, a broker, Redis), many run at once
        on the threadpool; only the all-local profiles run them on the event loop."""
        assert Settings(**overrides).submits_stay_in_process is in_process

    @pytest.mark.parametrize(
        ("overrides", "in_process"),
        [
            ({}, True),  # the embedded profile: SQLite, local files, a line in memory
            ({"app_env": "test"}, True),
            ({"job_queue": "pubsub"}, True),  # the queue plays no part in a read
            ({"database_url": "postgresql+psycopg://db/txt2img"}, False),
            ({"blob_store": "gcs"}, False),  # image URLs signed through IAM
            ({"request_cache": "redis"}, False),  # a queued job's place in the Redis line
            ({"job_store": "firestore"}, False),
        ],
    )
    def test_job_reads_stay_in_process_only_where_nothing_they_touch_is_remote(
        self, overrides: dict[str, Any], in_process: bool
    ) -> None:
        """Reading one job and rendering it (a poll, a long poll) runs on the event loop only
        where the store, the URL signing and the line are all this process's own."""
        assert Settings(**overrides).job_reads_stay_in_process is in_process

    def test_each_choice_has_its_own_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A variable overrides just its own choice in the profile."""
        monkeypatch.setenv("APP_ENV", "test")
        monkeypatch.setenv("JOB_STORE", "sql")
        monkeypatch.setenv("PORT", "9090")
        monkeypatch.setenv("RATE_LIMIT_SUBMIT_PER_MINUTE", "5")
        s = Settings()
        assert (s.job_store, s.blob_store, s.port, s.rate_limit_submit_per_minute) == (
            "sql",
            "memory",
            9090,
            5,
        )

    def test_invalid_values_are_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unknown adapter name fails at start, naming the variable."""
        monkeypatch.setenv("JOB_QUEUE", "carrier-pigeon")
        with pytest.raises(ValidationError, match="job_queue"):
            Settings()


class TestProductionGuards:
    def test_fake_adapter_is_refused_naming_the_variable(self) -> None:
        """A production profile with an in-memory adapter does not start."""
        with pytest.raises(ValidationError, match="BLOB_STORE=memory"):
            Settings(
                app_env="prod",
                blob_store="memory",
                api_key_pepper=STRONG,
                url_signing_secret=STRONG,
                **OIDC,
            )

    def test_inline_queue_is_refused_in_staging(self) -> None:
        """Running jobs inside the API process is for the embedded profile only."""
        with pytest.raises(ValidationError, match="JOB_QUEUE=inline"):
            Settings(
                app_env="staging",
                job_queue="inline",
                api_key_pepper=STRONG,
                url_signing_secret=STRONG,
                **OIDC,
            )

    @pytest.mark.parametrize("variable", ["API_KEY_PEPPER", "URL_SIGNING_SECRET"])
    def test_placeholder_secret_is_refused_naming_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, variable: str
    ) -> None:
        """The development defaults of secrets are not accepted in production."""
        monkeypatch.setenv("API_KEY_PEPPER", STRONG)
        monkeypatch.setenv("URL_SIGNING_SECRET", STRONG)
        monkeypatch.delenv(variable)
        with pytest.raises(ValidationError, match=variable):
            Settings(app_env="prod", **OIDC)

    def test_short_bootstrap_key_is_refused(self) -> None:
        """A guessable bootstrap key is not accepted in production."""
        with pytest.raises(ValidationError, match="BOOTSTRAP_API_KEY"):
            Settings(
                app_env="prod",
                api_key_pepper=STRONG,
                url_signing_secret=STRONG,
                **OIDC,
                bootstrap_api_key="k1",
            )

    def test_production_with_real_adapters_and_secrets_is_accepted(self) -> None:
        """Real adapters and strong secrets pass the guard."""
        s = Settings(app_env="prod", api_key_pepper=STRONG, url_signing_secret=STRONG, **OIDC)
        assert (s.job_store, s.blob_store, s.job_queue) == ("firestore", "gcs", "pubsub")
        assert s.is_production

    def test_production_names_the_account_that_signs_image_urls(self) -> None:
        """With Cloud Storage, production refuses to guess the signer from the runtime's
        credentials: the deployment grants signBlob to the account it names."""
        essentials = {k: v for k, v in OIDC.items() if k != "gcs_signing_service_account"}
        with pytest.raises(ValidationError, match="GCS_SIGNING_SERVICE_ACCOUNT"):
            Settings(app_env="prod", api_key_pepper=STRONG, url_signing_secret=STRONG, **essentials)
        Settings(
            app_env="prod",
            api_key_pepper=STRONG,
            url_signing_secret=STRONG,
            blob_store="filesystem",
            **essentials,
        )

    def test_push_auth_cannot_be_turned_off_in_production(self) -> None:
        """PUSH_AUTH=none is for the emulators only."""
        with pytest.raises(ValidationError, match="PUSH_AUTH=none"):
            Settings(
                app_env="prod",
                api_key_pepper=STRONG,
                url_signing_secret=STRONG,
                push_auth="none",
            )
