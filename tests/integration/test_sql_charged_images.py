"""jobs.charged_images (revision 0006), the generated column that SqlJobStore.count_images_since
sums, on SQLite and PostgreSQL: it holds exactly what the JSON query it replaced charged for
every shape of row, follows a job's changes, and the count reads its covering index alone."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import JSON, Engine, and_, case, event, func, insert, select

from dal.records import ENQUEUE_FAILED, JobChanges, JobError, JobStatus
from dal.sql import SqlJobStore
from dal.sql.job_store import _to_row
from dal.sql.schema import jobs
from tests.contracts.job_store_contract import T0, make_job, make_params

pytest_plugins = ["tests.integration.postgres_service", "tests.integration.sqlite_database"]

DAY = T0.replace(hour=0, minute=0, second=0, microsecond=0)
COVERING_INDEX = "ix_jobs_owner_created_charged"

# What count_images_since summed before revision 0006, per row: num_images (1 when absent),
# except for jobs failed with enqueue_failed. The JSON operators render per dialect.
JSON_RULE = case(
    (
        and_(
            jobs.c.status == JobStatus.FAILED.value,
            func.coalesce(jobs.c.error["code"].as_string(), "") == ENQUEUE_FAILED,
        ),
        0,
    ),
    else_=func.coalesce(jobs.c.params["num_images"].as_integer(), 1),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    name = "sqlite_engine" if request.param == "sqlite" else "postgres_engine"
    found: Engine = request.getfixturevalue(name)
    return found


def params(num_images: Any) -> dict[str, Any]:
    return {**make_params().to_dict(), "num_images": num_images}


def params_without_num_images() -> dict[str, Any]:
    found = make_params().to_dict()
    del found["num_images"]
    return found


QUEUED, RUNNING, FAILED = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED
LOST = {"code": ENQUEUE_FAILED, "message": "could not publish"}

# (id, status, params, error, images charged): every case of the rule, and odd JSON besides.
ROWS: list[tuple[str, JobStatus, dict[str, Any], Any, int]] = [
    ("queued-3", QUEUED, params(3), None, 3),
    ("no-num-images", QUEUED, params_without_num_images(), None, 1),
    ("null-num-images", QUEUED, params(None), None, 1),
    ("text-num-images", QUEUED, params("2"), None, 2),
    ("succeeded-4", JobStatus.SUCCEEDED, params(4), None, 4),
    ("canceled-2", JobStatus.CANCELED, params(2), None, 2),
    ("lost", FAILED, params(4), LOST, 0),
    ("lost-no-num-images", FAILED, params_without_num_images(), LOST, 0),
    ("broken", FAILED, params(2), {"code": "generation_failed", "message": "x"}, 2),
    ("failed-no-error", FAILED, params(2), None, 2),
    ("failed-json-null-error", FAILED, params(2), JSON.NULL, 2),
    ("failed-no-code", FAILED, params(2), {"message": "x"}, 2),
    ("failed-numeric-code", FAILED, params(2), {"code": 7}, 2),
    ("failed-nested-code", FAILED, params(2), {"code": {"code": ENQUEUE_FAILED}}, 2),
    # A job handed back to the queue may carry an error: only a failed job goes uncharged.
    ("queued-after-lost", QUEUED, params(3), LOST, 3),
    ("running-after-lost", RUNNING, params(2), LOST, 2),
]


def test_the_column_charges_what_the_json_query_charged(engine: Engine) -> None:
    """Rows of every shape, written as they stand: charged_images equals the JSON rule of the
    query it replaced, and the expected value; the count is their sum."""
    rows = []
    for job_id, status, params, error, _ in ROWS:
        row = _to_row(make_job(job_id, created_at=T0))
        rows.append({**row, "status": status.value, "params": params, "error": error})
    with engine.begin() as conn:
        conn.execute(insert(jobs), rows)
        found = conn.execute(select(jobs.c.id, jobs.c.charged_images, JSON_RULE)).all()
    assert {r[0]: (r[1], r[2]) for r in found} == {r[0]: (r[4], r[4]) for r in ROWS}
    store = SqlJobStore(engine)
    assert store.count_images_since("alice", DAY) == sum(r[4] for r in ROWS)


def test_a_job_failed_to_enqueue_stops_counting_other_failures_do_not(engine: Engine) -> None:
    """The column follows the job's changes: charged while queued, uncharged once it fails
    with enqueue_failed; failed with any other code it stays charged."""
    store = SqlJobStore(engine)
    store.create(make_job("lost", params=make_params(num_images=4)))
    store.create(make_job("broken", params=make_params(num_images=2)))
    store.create(make_job("yesterday", created_at=DAY - timedelta(seconds=1)))
    assert store.count_images_since("alice", DAY) == 4 + 2
    store.transition(
        "lost",
        expected={JobStatus.QUEUED},
        target=JobStatus.FAILED,
        changes=JobChanges(error=JobError(ENQUEUE_FAILED, "could not publish")),
    )
    assert store.count_images_since("alice", DAY) == 2
    store.claim("broken", lease_s=60)
    store.transition(
        "broken",
        expected={JobStatus.RUNNING},
        target=JobStatus.FAILED,
        changes=JobChanges(error=JobError("generation_failed", "out of memory")),
    )
    assert store.count_images_since("alice", DAY) == 2
    # What a job reads back is unchanged by the column (it is not part of the record).
    assert store.get("lost").params.num_images == 4


@contextlib.contextmanager
def executed(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The (statement, parameters) pairs sent to the driver while the block runs.

    On SQLite the store runs its statements on the sqlite3 connection itself
    (dal/sql/sqlite_direct.py), so they are seen through sqlite3's trace callback, which
    passes each statement with its parameters' values written into it."""
    seen: list[tuple[str, Any]] = []

    if engine.dialect.name == "sqlite":

        def trace(dbapi_connection: Any, *_: Any) -> None:
            dbapi_connection.set_trace_callback(lambda sql: seen.append((sql, ())))

        def untrace(dbapi_connection: Any, *_: Any) -> None:
            dbapi_connection.set_trace_callback(None)

        event.listen(engine, "checkout", trace)
        event.listen(engine, "checkin", untrace)
        try:
            yield seen
        finally:
            event.remove(engine, "checkout", trace)
            event.remove(engine, "checkin", untrace)
        return

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def count_statement(engine: Engine) -> tuple[str, Any]:
    """The SQL count_images_since runs, as the driver receives it."""
    with executed(engine) as seen:
        SqlJobStore(engine).count_images_since("alice", DAY)
    (statement,) = [s for s in seen if "charged_images" in s[0]]
    return statement


def seed(engine: Engine, count: int) -> None:
    rows = [
        _to_row(make_job(f"job-{i:04d}", owner=f"owner-{i % 10}", created_at=T0 - timedelta(i)))
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(jobs), rows)


@pytest.mark.parametrize("analyzed", [False, True])
def test_sqlite_counts_from_the_index_alone(sqlite_engine: Engine, analyzed: bool) -> None:
    """The count is one search of ix_jobs_owner_created_charged that reads every value from
    the index, no table row and no JSON, with or without the statistics of ANALYZE.

    SQLite's plan says USING INDEX, not USING COVERING INDEX: its planner counts a generated
    column as using every column of the table, so it never calls an index covering when the
    query names one. The program it runs shows what happens: the table cursor only gets a
    deferred seek, which SQLite performs when a table column is read, and none is; each value
    comes from the index, and no function (json_extract) is called."""
    seed(sqlite_engine, 500)
    if analyzed:
        with sqlite_engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    statement, parameters = count_statement(sqlite_engine)
    with sqlite_engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
        program = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
        index_root = conn.exec_driver_sql(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (COVERING_INDEX,)
        ).scalar_one()
    (search,) = [row[-1] for row in plan]
    assert re.fullmatch(
        rf"SEARCH jobs USING (COVERING )?INDEX {COVERING_INDEX} \(owner=\? AND created_at>\?\)",
        search,
    ), search
    # EXPLAIN's rows: (addr, opcode, p1, p2, p3, p4, p5, comment).
    index_cursors = {op[2] for op in program if op[1] == "OpenRead" and op[3] == index_root}
    assert len(index_cursors) == 1
    reads = [op for op in program if op[1] in ("Column", "Rowid", "Function", "PureFunc")]
    assert reads
    assert [op for op in reads if op[1] != "Column" or op[2] not in index_cursors] == []


def test_postgres_can_count_with_an_index_only_scan(postgres_engine: Engine) -> None:
    """The index covers the count: once the table is vacuumed, and with the scans that read
    the table ruled out, PostgreSQL plans an index-only scan of it. (On a table this small it
    would rather read the table itself.)"""
    seed(postgres_engine, 500)
    autocommit = postgres_engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn:
        conn.exec_driver_sql("VACUUM ANALYZE jobs")
    statement, parameters = count_statement(postgres_engine)
    with postgres_engine.connect() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        plan = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars().all()
        conn.rollback()
    assert any(f"Index Only Scan using {COVERING_INDEX} on jobs" in line for line in plan), plan
