"""SqlJobStore's statements run on the sqlite3 connection directly (dal/sql/sqlite_direct.py)
against the same statements run through SQLAlchemy's Connection, on a migrated SQLite file:
what each stores is the same, byte for byte and type for type, and so is what each reads back.
The job store contract (tests/integration/contracts/test_sql_adapters.py) covers the store's
behaviour on the direct path; this covers the seam, so a row written by one release and read
by another (or by an admin command on SQLAlchemy) means the same thing."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from dal.errors import StoreUnavailable
from dal.records import ImageRef, Job, JobError, JobStatus, WebhookDelivery
from dal.sql import SqlJobStore, create_sql_engine
from dal.sql.job_store import (
    _CLAIM,
    _COUNT_IN_FLIGHT,
    _INSERT,
    _LIST_BY_OWNER,
    _REQUEUE_LAPSED,
    _SELECT,
    _from_row,
    _to_row,
    _transition_statement,
)
from dal.sql.schema import api_keys, jobs
from dal.sql.sqlite_direct import DirectSqlite
from dal.sql.statements import SqlAlchemyStatements, Statements
from tests.contracts.job_store_contract import T0, make_job, make_params

pytest_plugins = ["tests.integration.sqlite_database"]

COLUMNS = [c.name for c in jobs.columns if c.name != "id"]


def stored(engine: Engine, job_id: str) -> list[tuple[Any, str]]:
    """Each column of the row but its id as SQLite holds it: (value, storage class)."""
    database = engine.url.database
    assert database is not None
    bare = sqlite3.connect(database)
    try:
        picks = ", ".join(f"{c}, typeof({c})" for c in COLUMNS)
        row = bare.execute(f"SELECT {picks} FROM jobs WHERE id = ?", (job_id,)).fetchone()  # noqa: S608 - column names from the schema
    finally:
        bare.close()
    assert row is not None, job_id
    return list(zip(row[::2], row[1::2], strict=True))


def full_job(job_id: str) -> Job:
    """Every column set, with microseconds in every moment and JSON in every JSON column."""
    moment = T0 + timedelta(microseconds=123_457)
    return make_job(
        job_id,
        params=make_params(negative_prompt="blurry", num_images=2),
        status=JobStatus.FAILED,
        progress=0.75,
        attempts=3,
        error=JobError("generation_failed", "out of memory, ünïcode"),
        images=(ImageRef(key=f"{job_id}/0.png", width=64, height=64, seed=7),),
        idempotency_key="key-1",
        request_fingerprint="f" * 64,
        started_at=moment,
        finished_at=moment + timedelta(seconds=1),
        lease_expires_at=moment + timedelta(seconds=2),
        enqueued_at=moment,
        handovers=1,
        webhook_url="https://example.com/hook",
        webhook_deliveries=(
            WebhookDelivery(
                attempt=1, event="job.failed", attempted_at=moment, status_code=500, error="boom"
            ),
        ),
    )


def both(engine: Engine, work: Any) -> tuple[Any, Any]:
    """`work(statements, name)` in a transaction of each path: (SQLAlchemy's, direct's)."""
    with engine.begin() as conn:
        through_sqlalchemy = work(SqlAlchemyStatements(conn), "sa")
    with DirectSqlite(engine).begin() as direct:
        through_direct = work(direct, "direct")
    return through_sqlalchemy, through_direct


@pytest.mark.parametrize("shape", ["sparse", "full"])
def test_an_insert_stores_what_sqlalchemy_stores(sqlite_engine: Engine, shape: str) -> None:
    """The same job inserted through each path in turn (the full one has an idempotency key,
    which two rows of one owner may not share), the first deleted before the second."""
    job = make_job("job") if shape == "sparse" else full_job("job")
    with sqlite_engine.begin() as conn:
        SqlAlchemyStatements(conn).run(_INSERT, _to_row(job))
    through_sqlalchemy = stored(sqlite_engine, "job")
    with sqlite_engine.begin() as conn:
        conn.execute(delete(jobs))
    with DirectSqlite(sqlite_engine).begin() as direct:
        direct.run(_INSERT, _to_row(job))
    assert stored(sqlite_engine, "job") == through_sqlalchemy


def test_every_update_stores_and_returns_what_sqlalchemy_does(sqlite_engine: Engine) -> None:
    """A claim (literals, a function of a column, one parameter bound three times), a
    requeue (JSON and None in SET) and a transition whose SET comes from the parameters'
    names, each on twin rows: the rows stay equal and the returned records are equal."""
    with sqlite_engine.begin() as conn:
        conn.execute(insert(jobs), [_to_row(make_job(i)) for i in ("sa-job", "direct-job")])
    now = T0 + timedelta(seconds=5, microseconds=7)
    steps: list[tuple[Any, dict[str, Any]]] = [
        (_CLAIM, {"now": now, "lease_until": now + timedelta(seconds=60)}),
        (
            _REQUEUE_LAPSED,
            {
                "now": now + timedelta(seconds=61),
                "new_error": {"code": "lease_expired", "message": "worker lost"},
                "at": now + timedelta(seconds=61),
            },
        ),
        (_CLAIM, {"now": now + timedelta(seconds=62), "lease_until": now + timedelta(hours=1)}),
        (
            _transition_statement(frozenset({JobStatus.RUNNING}), False),
            {
                "status": JobStatus.SUCCEEDED.value,
                "updated_at": now + timedelta(seconds=63),
                "finished_at": now + timedelta(seconds=63),
                "progress": 1.0,
                "error": None,
                "lease_expires_at": None,
                "images": [{"key": "k/0.png", "width": 64, "height": 64, "seed": 7}],
            },
        ),
    ]
    for statement, params in steps:

        def update(statements: Statements, name: str) -> Any:
            return statements.first(statement, {**params, "job_id": f"{name}-job"})  # noqa: B023 - called at once

        returned_sa, returned_direct = both(sqlite_engine, update)
        assert returned_sa is not None
        assert returned_direct is not None
        assert {**returned_direct, "id": None} == {**returned_sa, "id": None}
        assert _from_row(returned_direct) == _from_row(returned_sa).with_changes(id="direct-job")
        assert stored(sqlite_engine, "direct-job") == stored(sqlite_engine, "sa-job")
    assert _from_row(returned_direct).status == JobStatus.SUCCEEDED


def test_reads_return_what_sqlalchemy_returns(sqlite_engine: Engine) -> None:
    """A row, a page (whole and row by row) and a count, as each path reads them: the same
    Python values and types, moments aware and in UTC."""
    with sqlite_engine.begin() as conn:
        conn.execute(insert(jobs), [_to_row(full_job("a")), _to_row(make_job("b"))])

    def read(statements: Statements, _name: str) -> Any:
        return (
            statements.first(_SELECT, {"job_id": "a"}),
            statements.first(_SELECT, {"job_id": "missing"}),
            statements.all(_LIST_BY_OWNER, {"owner": "alice", "limit": 10}),
            list(statements.each(_LIST_BY_OWNER, {"owner": "alice", "limit": 10})),
            statements.scalar(_COUNT_IN_FLIGHT, {"owner": "alice"}),
        )

    through_sa, through_direct = both(sqlite_engine, read)
    assert through_direct == through_sa
    assert through_direct[2] == through_direct[3] != []
    row = through_direct[0]
    assert [type(row[c]) for c in row] == [type(v) for v in through_sa[0].values()]
    assert row["finished_at"].utcoffset() == timedelta(0)
    assert _from_row(row) == full_job("a")


def test_a_duplicate_raises_sqlalchemys_integrity_error_and_keeps_nothing(
    sqlite_engine: Engine,
) -> None:
    direct = DirectSqlite(sqlite_engine)
    with direct.begin() as statements:
        statements.run(_INSERT, _to_row(make_job("one")))
    with pytest.raises(IntegrityError), direct.begin() as statements:
        statements.run(_INSERT, _to_row(make_job("two")))
        statements.run(_INSERT, _to_row(make_job("one")))
    # The failed transaction's first insert was rolled back, and the connection it ran on
    # went back to the pool fit for the next transaction.
    with direct.connect() as statements:
        assert statements.first(_SELECT, {"job_id": "two"}) is None
        assert statements.first(_SELECT, {"job_id": "one"}) is not None


def test_an_error_in_the_block_rolls_the_transaction_back(sqlite_engine: Engine) -> None:
    direct = DirectSqlite(sqlite_engine)
    with pytest.raises(RuntimeError), direct.begin() as statements:
        statements.run(_INSERT, _to_row(make_job("one")))
        raise RuntimeError("the caller changed its mind")
    assert SqlJobStore(sqlite_engine).list_by_owner("alice", limit=5).items == ()


def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    """sqlite3's error at connect comes out as SQLAlchemy's, which the store reports as
    StoreUnavailable, on reads and writes alike."""
    (tmp_path / "a-folder").mkdir()
    engine = create_sql_engine(f"sqlite:///{tmp_path / 'a-folder'}")
    try:
        with pytest.raises(OperationalError), DirectSqlite(engine).connect():
            pass
        store = SqlJobStore(engine)
        with pytest.raises(StoreUnavailable):
            store.get("job")
        with pytest.raises(StoreUnavailable):
            store.create(make_job("job"))
    finally:
        engine.dispose()


def test_a_statement_with_python_side_defaults_is_refused(sqlite_engine: Engine) -> None:
    """api_keys.label has a Python-side default that only SQLAlchemy's execution fills in:
    the direct path refuses the statement rather than store a row without it."""
    row = {"id": "k1", "owner": "alice", "key_hash": "h", "created_at": T0}
    with (
        pytest.raises(NotImplementedError, match="Python-side defaults"),
        DirectSqlite(sqlite_engine).begin() as statements,
    ):
        statements.run(insert(api_keys), row)


def test_a_value_computed_at_each_execution_is_refused(sqlite_engine: Engine) -> None:
    """A bind whose value comes from a callable would be frozen by converting it once."""
    statement = select(jobs.c.id).where(jobs.c.owner == bindparam("who", callable_=lambda: "x"))
    with (
        pytest.raises(NotImplementedError, match="callable"),
        DirectSqlite(sqlite_engine).connect() as s,
    ):
        s.all(statement, {})


def test_a_missing_parameter_is_a_key_error(sqlite_engine: Engine) -> None:
    with (
        pytest.raises(KeyError, match="job_id"),
        DirectSqlite(sqlite_engine).connect() as statements,
    ):
        statements.first(_SELECT, {})


def test_only_sqlite_engines_run_directly(tmp_path: Path) -> None:
    postgres_engine = create_sql_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(ValueError, match="SQLite"):
        DirectSqlite(postgres_engine)
