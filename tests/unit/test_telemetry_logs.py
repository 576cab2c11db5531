"""Log lines in Cloud Logging's JSON format: fields, trace, job ids, stack traces, redaction."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dal.settings import Settings
from dal.telemetry import configure_logging, job_context, set_job_ids
from dal.telemetry.logging_setup import make_log_handler
from dal.trace_context import set_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Captured:
    def __init__(self, log_format: str = "json") -> None:
        self.stream = io.StringIO()
        settings = Settings(app_env="test", gcp_project="proj-1", log_format=log_format)
        self.logger = logging.getLogger(f"test.telemetry.{log_format}")
        self.logger.handlers = [make_log_handler(settings, self.stream)]
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def captured() -> Iterator[Captured]:
    set_traceparent(None)
    yield Captured()
    set_traceparent(None)


class TestCloudLoggingFormat:
    def test_a_line_is_one_json_object_with_cloud_loggings_fields(self, captured: Captured) -> None:
        """severity, message, time (RFC 3339, UTC) and the source location are all there."""
        captured.logger.warning("disk %s is %d%% full", "/data", 91)
        [line] = captured.lines()
        entry = json.loads(line)
        assert entry["severity"] == "WARNING"
        assert entry["message"] == "disk /data is 91% full"
        assert entry["time"].endswith("Z") and entry["time"][:2] == "20"
        source = entry["logging.googleapis.com/sourceLocation"]
        assert source["file"].endswith("test_telemetry_logs.py")
        assert source["function"] == ("test_a_line_is_one_json_object_with_cloud_loggings_fields")
        assert int(source["line"]) > 0
        assert "logging.googleapis.com/trace" not in entry  # no trace in hand
        assert "job_id" not in entry

    def test_trace_and_span_come_from_the_traceparent_in_hand(self, captured: Captured) -> None:
        """The trace field names the project and trace; spanId and sampled follow."""
        set_traceparent(TRACEPARENT)
        captured.logger.info("hello")
        [entry] = captured.entries()
        assert entry["logging.googleapis.com/trace"] == f"projects/proj-1/traces/{TRACE_ID}"
        assert entry["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
        assert entry["logging.googleapis.com/trace_sampled"] is True

    def test_the_job_in_hand_is_on_every_line_and_a_batch_lists_its_jobs(
        self, captured: Captured
    ) -> None:
        """job_context names one job (job_id) or several (job_ids) until the block ends."""
        with job_context("job-a"):
            captured.logger.info("one")
        with job_context("job-a", "job-b"):
            captured.logger.info("batch")
        captured.logger.info("after")
        one, batch, after = captured.entries()
        assert one["job_id"] == "job-a"
        assert batch["job_ids"] == ["job-a", "job-b"] and "job_id" not in batch
        assert "job_id" not in after and "job_ids" not in after

    def test_context_is_read_in_the_thread_that_logs(self, captured: Captured) -> None:
        """Another thread's job and trace do not leak into this thread's lines."""

        def other() -> None:
            set_traceparent(TRACEPARENT)
            set_job_ids(["job-other"])
            captured.logger.info("there")

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        captured.logger.info("here")
        there, here = captured.entries()
        assert there["job_id"] == "job-other" and TRACE_ID in there["logging.googleapis.com/trace"]
        assert "job_id" not in here and "logging.googleapis.com/trace" not in here

    def test_an_exception_is_a_stack_trace_in_the_message(self, captured: Captured) -> None:
        """Error Reporting finds the traceback inside message; severity is ERROR."""
        try:
            raise ValueError("boom")
        except ValueError:
            captured.logger.exception("job failed")
        [entry] = captured.entries()
        assert entry["severity"] == "ERROR"
        assert entry["message"].startswith("job failed\nTraceback (most recent call last):")
        assert entry["message"].rstrip().endswith("ValueError: boom")

    def test_secrets_are_redacted_in_messages_args_and_tracebacks(self, captured: Captured) -> None:
        """Signed-URL signatures and bearer tokens never reach a line, wherever they are."""
        captured.logger.info('"GET %s HTTP/1.1" 200', "/v1/blobs/a.png?expires=9&sig=deadbeef")
        try:
            raise RuntimeError("Authorization: Bearer t2i_secret.Key-1")
        except RuntimeError:
            captured.logger.exception("call failed")
        text = captured.stream.getvalue()
        assert "deadbeef" not in text and "t2i_secret" not in text
        first, second = captured.entries()
        assert "sig=[redacted]" in first["message"]
        assert "Bearer [redacted]" in second["message"]


class TestTextFormat:
    def test_text_lines_name_the_job_for_people_at_a_terminal(self) -> None:
        """LOG_FORMAT=text: level, logger and [job …] before the message, not JSON."""
        captured = Captured("text")
        with job_context("job-a"):
            captured.logger.info("stored %s", "x?sig=abc")
        [line] = captured.lines()
        assert " INFO test.telemetry.text [job job-a]: stored x?sig=[redacted]" in line

    def test_profiles_choose_the_format(self) -> None:
        """text for local and test, json for the emulator and cloud profiles; LOG_FORMAT wins."""
        assert Settings(app_env="local").resolved_log_format == "text"
        assert Settings(app_env="test").resolved_log_format == "text"
        assert Settings(app_env="selfhosted").resolved_log_format == "json"
        assert Settings(app_env="test", log_format="json").resolved_log_format == "json"


class TestConfigureLogging:
    def test_servers_records_go_through_our_handler(self) -> None:
        """After configure_logging, uvicorn's access records come out as redacted JSON."""
        root = logging.getLogger()
        saved_handlers, saved_level = list(root.handlers), root.level
        access = logging.getLogger("uvicorn.access")
        saved_access = (list(access.handlers), access.propagate)
        stream = io.StringIO()
        # configure_logging closes the handlers it replaces: keep pytest's out of its reach.
        root.handlers = []
        try:
            configure_logging(
                Settings(app_env="test", log_format="json", log_level="info"), stream=stream
            )
            access.info(
                '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/b/x.png?sig=abc", "1.1", 200
            )
            logging.getLogger("some.library").debug("below LOG_LEVEL")
        finally:
            root.handlers = saved_handlers
            root.setLevel(saved_level)
            access.handlers, access.propagate = saved_access
            logging.captureWarnings(False)
        [line] = stream.getvalue().splitlines()
        entry = json.loads(line)
        assert entry["logger"] == "uvicorn.access"
        assert entry["message"] == '127.0.0.1:5 - "GET /b/x.png?sig=[redacted] HTTP/1.1" 200'
