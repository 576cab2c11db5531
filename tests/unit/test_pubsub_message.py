"""The Pub/Sub job message codec, and its readers (push, pull, dead letters) agreeing on it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.cloud.pubsub_v1 import types

from dal.errors import MalformedMessage
from dal.pubsub import DeadLetterBox
from dal.pubsub.message import (
    MAX_JOB_ID_LENGTH,
    JobMessage,
    dead_letter_delivery_count,
    decode_job_id,
    encode,
)
from dal.records import Job, JobParams, JobStatus
from dal.settings import Settings
from dal.trace_context import set_traceparent
from gpu_worker.pull import PullWorker
from gpu_worker.push_envelope import parse_push_body
from gpu_worker.wiring import WorkerServices, build_worker_services
from tests.fakes import PatternGenerator

LONGEST = "j" * MAX_JOB_ID_LENGTH
TOO_LONG = "j" * (MAX_JOB_ID_LENGTH + 1)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def make_job(job_id: str) -> Job:
    return Job(id=job_id, owner="alice", model="pattern", params=JobParams("p", 64, 64, 2, 1.0, 1))


def body(job_id: object) -> bytes:
    return json.dumps({"job_id": job_id}).encode()


class TestEncode:
    def test_the_wire_format(self) -> None:
        """Data and attributes are what publishers have always sent."""
        set_traceparent(TRACEPARENT)
        try:
            data, attributes = encode(make_job("j1"))
        finally:
            set_traceparent(None)
        assert data == b'{"job_id":"j1"}'
        assert attributes == {
            "job_id": "j1",
            "model": "pattern",
            "owner_digest": "2bd806c97f0e00af",
            "traceparent": TRACEPARENT,
        }

    def test_no_trace_context_no_attribute(self) -> None:
        """Outside a traced request the message carries no traceparent."""
        set_traceparent(None)
        _, attributes = encode(make_job("j1"))
        assert "traceparent" not in attributes

    @pytest.mark.parametrize("job_id", ["j1", LONGEST, "ümlaut-ジョブ"])
    def test_round_trip(self, job_id: str) -> None:
        """Whatever encode writes, decode reads back, from the attribute and from the body."""
        data, attributes = encode(make_job(job_id))
        assert decode_job_id(data, attributes) == job_id
        assert decode_job_id(data, {}) == job_id
        assert decode_job_id(b"", attributes) == job_id


class TestJobIdRule:
    """One rule for the attribute and the body: a non-empty string of at most 64 characters."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("j1", "j1"), (LONGEST, LONGEST), (TOO_LONG, None), ("", None)],
    )
    def test_the_attribute(self, value: str, expected: str | None) -> None:
        assert decode_job_id(b"", {"job_id": value}) == expected

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("j1", "j1"),
            (LONGEST, LONGEST),
            (TOO_LONG, None),
            ("", None),
            (None, None),
            (42, None),
            (["j1"], None),
            ({"id": "j1"}, None),
        ],
    )
    def test_the_body(self, value: object, expected: str | None) -> None:
        assert decode_job_id(body(value), {}) == expected

    def test_a_non_string_attribute_is_no_job(self) -> None:
        """Attributes are typed as strings; a caller passing anything else still gets None."""
        attributes: dict[str, Any] = {"job_id": 42}
        assert decode_job_id(b"", attributes) is None

    @pytest.mark.parametrize(
        "data",
        [b"", b"garbage", b'["j1"]', b'"j1"', b"\xff\xfe", b"[" * 100_000, b'{"other": "j1"}'],
    )
    def test_a_body_that_is_not_a_job_object_is_no_job(self, data: bytes) -> None:
        assert decode_job_id(data, {}) is None

    def test_a_valid_attribute_wins_over_the_body(self) -> None:
        assert decode_job_id(body("from-body"), {"job_id": "from-attribute"}) == "from-attribute"

    @pytest.mark.parametrize("attribute", [TOO_LONG, ""])
    def test_an_invalid_attribute_is_passed_over_for_a_valid_body(self, attribute: str) -> None:
        assert decode_job_id(body("from-body"), {"job_id": attribute}) == "from-body"

    def test_invalid_everywhere_is_no_job(self) -> None:
        assert decode_job_id(body(TOO_LONG), {"job_id": TOO_LONG}) is None


class TestDeliveryCount:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [("5", 5), ("12", 12), (None, None), ("", None), ("x", None), ("-1", None), ("²", None)],
    )
    def test_the_dead_letter_count(self, raw: str | None, expected: int | None) -> None:
        attributes = {} if raw is None else {"CloudPubSubDeadLetterSourceDeliveryCount": raw}
        assert dead_letter_delivery_count(attributes) == expected
        decoded = JobMessage.decode(
            message_id="m", data=b"", attributes=attributes, delivery_attempt=None
        )
        assert decoded.dead_letter_delivery_count == expected


class TestPushEnvelope:
    @pytest.mark.parametrize(
        "raw",
        [b"not json", b"{}", b'{"message": {}}', b'{"message": {"messageId": "m", "data": "*"}}'],
    )
    def test_a_body_that_is_no_envelope_is_a_malformed_message(self, raw: bytes) -> None:
        with pytest.raises(MalformedMessage):
            parse_push_body(raw)

    def test_an_envelope_is_decoded_by_the_codec(self) -> None:
        data, attributes = encode(make_job("j1"))
        envelope = {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": attributes,
                "messageId": "m1",
            },
            "deliveryAttempt": 3,
        }
        parsed = parse_push_body(json.dumps(envelope).encode())
        assert parsed == JobMessage(
            message_id="m1", job_id="j1", data=data, attributes=attributes, delivery_attempt=3
        )


# ---- push, pull and the dead-letter box read the same message the same way ---------------


@dataclass
class PulledMessage:
    """The parts of google.cloud.pubsub_v1's streaming-pull Message the worker uses."""

    message_id: str
    data: bytes
    attributes: dict[str, str]
    delivery_attempt: int | None = None
    answers: list[str] = field(default_factory=list)

    def ack(self) -> None:
        self.answers.append("ack")

    def nack(self) -> None:
        self.answers.append("nack")


class OneBatchSubscriber:
    """A dead-letter subscription holding one batch of messages."""

    def __init__(self, *messages: types.PubsubMessage) -> None:
        self._batches = [
            types.PullResponse(
                received_messages=[
                    types.ReceivedMessage(ack_id=f"ack-{m.message_id}", message=m) for m in messages
                ]
            )
        ]

    def pull(self, **_: Any) -> types.PullResponse:
        return self._batches.pop() if self._batches else types.PullResponse()


@pytest.fixture
def services() -> Iterator[WorkerServices]:
    built = build_worker_services(
        Settings(app_env="test", job_queue="pubsub", progress_write_interval_s=0),
        generator=PatternGenerator(),
    )
    yield built
    built.close()


def _shapes(job_id: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    return {
        "attribute and body": (body(job_id), {"job_id": job_id}),
        "body only": (body(job_id), {}),
        "attribute only": (b"", {"job_id": job_id}),
    }


@pytest.mark.parametrize("shape", ["attribute and body", "body only", "attribute only"])
@pytest.mark.parametrize(("job_id", "readable"), [(LONGEST, True), (TOO_LONG, False)])
def test_push_pull_and_dead_letters_agree(
    services: WorkerServices, shape: str, job_id: str, readable: bool
) -> None:
    """A 64-character job id is read by all three; a 65-character one by none (the dead-letter
    box used to accept it where push refused it)."""
    data, attributes = _shapes(job_id)[shape]
    expected = job_id if readable else None
    services.jobs.create(make_job(job_id))

    push = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": "m1",
        },
        "subscription": "projects/p/subscriptions/jobs",
    }
    assert parse_push_body(json.dumps(push).encode()).job_id == expected

    box = DeadLetterBox(
        OneBatchSubscriber(types.PubsubMessage(data=data, attributes=attributes, message_id="m1")),
        "projects/p/subscriptions/dead",
    )
    assert [letter.job_id for letter in box.take_all()] == [expected]

    pulled = PulledMessage(message_id="m1", data=data, attributes=attributes)
    PullWorker(
        services,
        subscriber=None,
        jobs_subscription="projects/p/subscriptions/jobs",
        dead_letter_subscription=None,
        max_in_flight=1,
    ).on_job(pulled)
    assert pulled.answers == ["ack"]
    status = services.jobs.get(job_id).status
    assert status == (JobStatus.SUCCEEDED if readable else JobStatus.QUEUED)
