"""The Alembic migrations (dal/sql/migrations) and dal.sql.migrate, on SQLite and PostgreSQL:
they build exactly the schema that dal/sql/schema.py declares, upgrading again changes nothing,
concurrent upgrades are safe, and the command line and alembic.ini work."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, insert, inspect, text

from dal.errors import SchemaNotManaged
from dal.records import ENQUEUE_FAILED, JobError, JobStatus
from dal.sql import SqlApiKeyStore, SqlJobStore, create_sql_engine, metadata, upgrade
from dal.sql.job_store import _to_row
from dal.sql.migrate import alembic_config, current, head_revision
from dal.sql.schema import jobs
from tests.contracts.job_store_contract import T0, make_job, make_params

pytest_plugins = ["tests.integration.postgres_service"]

REPO_ROOT = Path(__file__).resolve().parents[2]
WRITES = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE")
FAILED = JobStatus.FAILED


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    url: str = request.getfixturevalue("empty_postgres_url")
    return url


@pytest.fixture
def fresh_engine(fresh_url: str) -> Iterator[Engine]:
    engine = create_sql_engine(fresh_url)
    yield engine
    engine.dispose()


def schema_diffs(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


@contextlib.contextmanager
def statements_during(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.strip())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


class TestUpgrade:
    def test_builds_exactly_the_declared_schema(self, fresh_engine: Engine) -> None:
        """After upgrade, Alembic's comparison with dal.sql.schema.metadata finds nothing."""
        assert current(fresh_engine) is None
        assert upgrade(fresh_engine) == head_revision()
        assert current(fresh_engine) == head_revision()
        assert schema_diffs(fresh_engine) == []
        tables = set(inspect(fresh_engine).get_table_names())
        assert tables == {"jobs", "api_keys", "alembic_version"}
        columns = {c["name"] for c in inspect(fresh_engine).get_columns("jobs")}
        assert "lease_expires_at" in columns

    def test_the_comparison_does_see_drift(self, fresh_engine: Engine) -> None:
        """The check above is not vacuous: a missing index is a difference."""
        upgrade(fresh_engine)
        with fresh_engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_jobs_status_created"))
        diffs = schema_diffs(fresh_engine)
        assert [d[0] for d in diffs] == ["add_index"]

    def test_upgrading_twice_is_a_no_op(self, fresh_engine: Engine) -> None:
        """A second upgrade writes nothing and keeps the data."""
        upgrade(fresh_engine)
        store = SqlJobStore(fresh_engine)
        store.create(make_job("job-1"))
        for _ in range(2):
            with statements_during(fresh_engine) as seen:
                assert upgrade(fresh_engine) == head_revision()
            assert seen
            assert [s for s in seen if s.upper().startswith(WRITES)] == []
        assert store.get("job-1").status is JobStatus.QUEUED
        assert schema_diffs(fresh_engine) == []

    def test_accepts_a_url_and_disposes_its_own_engine(self, fresh_url: str) -> None:
        assert upgrade(fresh_url) == head_revision()
        assert current(fresh_url) == head_revision()

    def test_downgrade_to_base_and_back(self, fresh_engine: Engine) -> None:
        upgrade(fresh_engine)
        with fresh_engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert current(fresh_engine) is None
        assert set(inspect(fresh_engine).get_table_names()) <= {"alembic_version"}
        assert upgrade(fresh_engine) == head_revision()
        assert schema_diffs(fresh_engine) == []

    def test_adopts_a_database_made_by_create_all(self, fresh_engine: Engine) -> None:
        """Tables made by metadata.create_all before migrations existed (the first revision's
        shape, without Alembic's version table) are stamped with that revision, keeping their
        rows, and upgraded from there instead of failing on CREATE TABLE."""
        with fresh_engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            conn.execute(text("DROP TABLE alembic_version"))
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner, model, status, progress, attempts, params, "
                    "images, created_at, updated_at) VALUES ('job-1', 'alice', 'tiny', "
                    "'queued', 0, 0, :params, '[]', :now, :now)"
                ),
                {
                    "params": '{"prompt": "a cat", "width": 64, "height": 64, '
                    '"num_inference_steps": 2, "guidance_scale": 1.0, "seed": 1}',
                    "now": "2026-01-01 00:00:00+00:00",
                },
            )
        assert current(fresh_engine) is None
        assert upgrade(fresh_engine) == head_revision()
        adopted = SqlJobStore(fresh_engine).get("job-1")
        # Rows from before the outbox existed count as published: the sweeper leaves them be.
        assert adopted.enqueued_at == adopted.created_at
        assert adopted.webhook_deliveries == ()
        assert schema_diffs(fresh_engine) == []

    def test_keys_from_before_weights_weigh_one(self, fresh_engine: Engine) -> None:
        """Revision 0005 adds api_keys.weight; keys that existed before it read as weight 1."""
        with fresh_engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0004")
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, owner, key_hash, label, created_at) "
                    "VALUES ('key-1', 'alice', 'hash-1', '', :now)"
                ),
                {"now": "2026-01-01 00:00:00+00:00"},
            )
        assert upgrade(fresh_engine) == head_revision()
        found = SqlApiKeyStore(fresh_engine).find_by_hash("hash-1")
        assert found is not None
        assert found.weight == 1
        assert schema_diffs(fresh_engine) == []

    def test_the_generated_column_agrees_with_the_schema(self, fresh_engine: Engine) -> None:
        """Revision 0006's jobs.charged_images is the column dal/sql/schema.py declares: Alembic
        compares a generated column's expression only to warn when it differs, so a warning
        here is a difference. The index the count reads is there too."""
        upgrade(fresh_engine)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert schema_diffs(fresh_engine) == []
        columns = {c["name"]: c for c in inspect(fresh_engine).get_columns("jobs")}
        computed = columns["charged_images"].get("computed")
        assert computed is not None
        # SQLite: VIRTUAL (ALTER TABLE adds no other kind); PostgreSQL: STORED, to be indexed.
        assert bool(computed.get("persisted")) is (fresh_engine.dialect.name == "postgresql")
        indexes = {i["name"]: i["column_names"] for i in inspect(fresh_engine).get_indexes("jobs")}
        assert indexes["ix_jobs_owner_created_charged"] == ["owner", "created_at", "charged_images"]

    def test_jobs_from_before_charged_images_are_charged(self, fresh_engine: Engine) -> None:
        """Revision 0006 computes charged_images for the jobs already there; its downgrade
        drops the column and the index and keeps the jobs, and upgrading again restores them."""
        with fresh_engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0005")
        day = T0.replace(hour=0, minute=0, second=0, microsecond=0)
        lost = JobError(ENQUEUE_FAILED, "could not publish")
        broken = JobError("generation_failed", "out of memory")
        rows = [
            _to_row(make_job("a", params=make_params(num_images=2))),
            _to_row(make_job("b", params=make_params(num_images=4), status=FAILED, error=lost)),
            _to_row(make_job("c", params=make_params(num_images=3), status=FAILED, error=broken)),
        ]
        with fresh_engine.begin() as conn:
            # The INSERT names the rows' columns only, all of which 0005 has.
            conn.execute(insert(jobs), rows)
        store = SqlJobStore(fresh_engine)
        assert upgrade(fresh_engine) == head_revision()
        assert store.count_images_since("alice", day) == 2 + 3
        with fresh_engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
        names = {c["name"] for c in inspect(fresh_engine).get_columns("jobs")}
        assert "charged_images" not in names
        indexes = {i["name"] for i in inspect(fresh_engine).get_indexes("jobs")}
        assert "ix_jobs_owner_created_charged" not in indexes
        assert "ix_jobs_owner_created" in indexes
        assert upgrade(fresh_engine) == head_revision()
        assert store.count_images_since("alice", day) == 2 + 3
        assert {store.get(i).status for i in "abc"} == {JobStatus.QUEUED, JobStatus.FAILED}
        assert schema_diffs(fresh_engine) == []

    def test_refuses_unversioned_tables_of_another_shape(self, fresh_engine: Engine) -> None:
        with fresh_engine.begin() as conn:
            conn.execute(text("CREATE TABLE jobs (id VARCHAR(64) PRIMARY KEY)"))
        with pytest.raises(SchemaNotManaged, match="do not match"):
            upgrade(fresh_engine)
        assert current(fresh_engine) is None
        assert set(inspect(fresh_engine).get_table_names()) == {"jobs"}

    def test_in_memory_sqlite(self) -> None:
        engine = create_sql_engine("sqlite://")
        try:
            assert upgrade(engine) == head_revision()
            SqlJobStore(engine).create(make_job("job-1"))
            assert SqlJobStore(engine).get("job-1").id == "job-1"
        finally:
            engine.dispose()


# ---- concurrent upgrades ---------------------------------------------------------------------

MIGRATORS = 4


def _upgrade_in_process(url: str, start: Any, results: Any) -> None:
    start.wait(timeout=60)
    try:
        results.put(upgrade(url))
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


class TestConcurrentUpgrades:
    def test_processes_upgrading_one_database_at_once_all_succeed(self, fresh_url: str) -> None:
        """4 processes upgrade the same empty database at the same moment: the lock lets one
        migrate, the others find it at head; the schema is built once."""
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Barrier(MIGRATORS)
        results = ctx.Queue()
        processes = [
            ctx.Process(target=_upgrade_in_process, args=(fresh_url, start, results))
            for _ in range(MIGRATORS)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in range(MIGRATORS)]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
        assert outcomes == [head_revision()] * MIGRATORS
        engine = create_sql_engine(fresh_url)
        try:
            with engine.connect() as conn:
                versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            assert [v[0] for v in versions] == [head_revision()]
            assert schema_diffs(engine) == []
        finally:
            engine.dispose()


# ---- command lines ---------------------------------------------------------------------------


def _run(
    argv: list[str], env: dict[str, str], cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        argv, cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=120, check=False
    )


class TestCommandLine:
    """On SQLite: what differs between backends is covered above; these are about the
    command lines themselves (and each costs a Python start-up)."""

    @pytest.fixture
    def sqlite_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'cli.sqlite3'}"

    def test_migrate_module_upgrades_and_prints_the_revision(self, sqlite_url: str) -> None:
        argv = [sys.executable, "-m", "dal.sql.migrate", "--url", sqlite_url]
        for _ in range(2):
            result = _run(argv, {})
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == head_revision()
        assert current(sqlite_url) == head_revision()

    def test_migrate_module_reads_database_url(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'env.sqlite3'}"
        result = _run([sys.executable, "-m", "dal.sql.migrate"], {"DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == head_revision()

    def test_migrate_module_without_a_database_is_a_usage_error(self) -> None:
        result = _run([sys.executable, "-m", "dal.sql.migrate"], {})
        assert result.returncode == 2
        assert "DATABASE_URL" in result.stderr

    def test_alembic_ini_drives_upgrade_and_check(self, sqlite_url: str, tmp_path: Path) -> None:
        """The developers' alembic.ini: upgrade through $DATABASE_URL, then `alembic check`
        finds dal/sql/schema.py and the revisions in agreement. Run from another directory, as
        `alembic -c` allows."""
        alembic = [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini")]
        env = {"DATABASE_URL": sqlite_url}
        upgraded = _run([*alembic, "upgrade", "head"], env, cwd=tmp_path)
        assert upgraded.returncode == 0, upgraded.stderr
        checked = _run([*alembic, "check"], env, cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert "No new upgrade operations detected" in checked.stdout + checked.stderr
        assert current(sqlite_url) == head_revision()

    def test_alembic_x_url_wins_over_database_url(self, sqlite_url: str, tmp_path: Path) -> None:
        alembic = [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini")]
        elsewhere = f"sqlite:///{tmp_path / 'not-this-one.sqlite3'}"
        env = {"DATABASE_URL": elsewhere}
        result = _run([*alembic, "-x", f"url={sqlite_url}", "upgrade", "head"], env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert current(sqlite_url) == head_revision()
        assert not (tmp_path / "not-this-one.sqlite3").exists()
