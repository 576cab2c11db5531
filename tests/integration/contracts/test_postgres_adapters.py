"""The SQLAlchemy adapters on PostgreSQL (psycopg 3) against the port contracts, plus what only
a real server shows: claims raced by separate processes, dropped connections, a dead server."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest
from sqlalchemy import Engine, text

from dal.errors import StoreUnavailable, TransitionConflict
from dal.records import JobStatus
from dal.sql import SqlApiKeyStore, SqlJobStore, create_sql_engine
from emulators.postgres import create_database, drop_database, ensure_running
from emulators.process import ServiceUnavailable, free_port
from tests.contracts.api_key_store_contract import ApiKeyStoreContract
from tests.contracts.job_store_contract import JobStoreContract, ManualClock, make_job

pytest_plugins = ["tests.integration.postgres_service"]


class TestPostgresJobStore(JobStoreContract):
    @pytest.fixture
    def store(self, postgres_engine: Engine, clock: ManualClock) -> SqlJobStore:
        return SqlJobStore(postgres_engine, clock=clock)


class TestPostgresApiKeyStore(ApiKeyStoreContract):
    @pytest.fixture
    def store(self, postgres_engine: Engine) -> SqlApiKeyStore:
        return SqlApiKeyStore(postgres_engine)


# ---- claims raced by processes -------------------------------------------------------------

RACE_PROCESSES = 4
RACE_JOBS = 20


def _race_claims(
    url: str, job_ids: list[str], barrier: Barrier, results: Queue[tuple[str, str]]
) -> None:
    """One contender (a process of its own, with its own engine): for each job, wait for the
    others, then try to claim it. Reports (job_id, "won" | "lost" | error) per job."""
    engine = create_sql_engine(url)
    store = SqlJobStore(engine)
    try:
        for job_id in job_ids:
            barrier.wait(timeout=60)
            try:
                store.claim(job_id, lease_s=300)
            except TransitionConflict:
                results.put((job_id, "lost"))
            except Exception as exc:
                results.put((job_id, f"{type(exc).__name__}: {exc}"))
            else:
                results.put((job_id, "won"))
    finally:
        engine.dispose()


class TestPostgresJobStoreAcrossProcesses:
    def test_each_job_is_claimed_exactly_once_by_racing_processes(
        self, postgres_engine: Engine
    ) -> None:
        """4 processes, each with its own engine, race to claim each of 20 queued jobs: every
        job ends with one winner, one attempt, and the other three see a conflict."""
        store = SqlJobStore(postgres_engine)
        job_ids = [f"race-{i:02d}" for i in range(RACE_JOBS)]
        for job_id in job_ids:
            store.create(make_job(job_id))

        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(RACE_PROCESSES)
        results = ctx.Queue()
        url = postgres_engine.url.render_as_string(hide_password=False)
        processes = [
            ctx.Process(target=_race_claims, args=(url, job_ids, barrier, results))
            for _ in range(RACE_PROCESSES)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in range(RACE_PROCESSES * RACE_JOBS)]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0

        errors = [o for o in outcomes if o[1] not in ("won", "lost")]
        assert errors == []
        wins = Counter(job_id for job_id, outcome in outcomes if outcome == "won")
        losses = Counter(job_id for job_id, outcome in outcomes if outcome == "lost")
        assert wins == dict.fromkeys(job_ids, 1)
        assert losses == dict.fromkeys(job_ids, RACE_PROCESSES - 1)
        for job_id in job_ids:
            job = store.get(job_id)
            assert job.status is JobStatus.RUNNING
            assert job.attempts == 1
            assert job.lease_expires_at is not None


# ---- connections that go away ----------------------------------------------------------------


class TestPostgresConnectionLoss:
    def test_store_survives_server_side_termination_of_its_connections(
        self, postgres_engine: Engine
    ) -> None:
        """pool_pre_ping: after the server kills every pooled connection, the next call
        reconnects instead of failing."""
        store = SqlJobStore(postgres_engine)
        store.create(make_job("job-1"))
        store.get("job-1")  # leaves a connection in the pool
        database = postgres_engine.url.database
        admin_url = postgres_engine.url.set(database="postgres")
        admin = create_sql_engine(admin_url.render_as_string(hide_password=False))
        try:
            with admin.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).scalar_one()
        finally:
            admin.dispose()
        assert killed >= 1
        assert store.get("job-1").id == "job-1"
        store.ping()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


class TestPostgresUnreachable:
    """No server needed: these check how the stores fail when there is none."""

    def test_closed_port_raises_store_unavailable_at_once(self, closed_port: int) -> None:
        engine = create_sql_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/x")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                SqlJobStore(engine).get("job-1")
            with pytest.raises(StoreUnavailable):
                SqlJobStore(engine).ping()
            with pytest.raises(StoreUnavailable):
                SqlApiKeyStore(engine).find_by_hash("h")
            assert time.monotonic() - started < 3
        finally:
            engine.dispose()

    def test_server_that_never_answers_times_out_with_store_unavailable(
        self, silent_port: int
    ) -> None:
        """connect_timeout: a server that accepts but never answers costs seconds, not a hang."""
        engine = create_sql_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{silent_port}/x", connect_timeout_s=2
        )
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="timeout"):
                SqlJobStore(engine).get("job-1")
            assert time.monotonic() - started < 6
        finally:
            engine.dispose()


class TestPostgresService:
    """emulators.postgres, which the fixtures above stand on."""

    def test_drop_database_disconnects_its_clients(self, postgres_admin_url: str) -> None:
        name = f"txt2img_drop_{os.getpid()}"
        url = create_database(postgres_admin_url, name)
        engine = create_sql_engine(url)
        try:
            SqlJobStore(engine).ping()  # leaves an open connection in the pool
            drop_database(postgres_admin_url, name)
            with pytest.raises(StoreUnavailable, match="does not exist"):
                SqlJobStore(engine).ping()
        finally:
            engine.dispose()
        drop_database(postgres_admin_url, name)  # a missing database is not an error

    @pytest.mark.parametrize("name", ["", "1abc", 'x"; DROP DATABASE postgres; --', "a" * 64])
    def test_only_plain_names_are_accepted(self, name: str) -> None:
        with pytest.raises(ValueError, match="plain database name"):
            create_database("postgresql+psycopg://postgres@127.0.0.1:1/postgres", name)
        with pytest.raises(ValueError, match="plain database name"):
            drop_database("postgresql+psycopg://postgres@127.0.0.1:1/postgres", name)

    def test_a_port_without_server_or_cluster_is_service_unavailable(self) -> None:
        with pytest.raises(ServiceUnavailable, match="PostgreSQL 15"):
            ensure_running(port=free_port(), timeout=10)
