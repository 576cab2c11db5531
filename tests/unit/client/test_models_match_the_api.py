"""The SDK's records are written by hand (it cannot import the service's pydantic models):
they must know every field the API answers with, and read the API's own examples."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import BaseModel

from api.routes.events import ProgressEvent as ApiProgressEvent
from api.routes.events import QueueEvent as ApiQueueEvent
from api.schemas import JobListOut
from api.schemas import Problem as ApiProblem
from dal.job_view import (
    EXAMPLE_JOB,
    ImageOut,
    JobErrorOut,
    JobOut,
    JobParamsOut,
    WebhookDeliveryOut,
    WebhookOut,
)
from dal.records import JobStatus as ApiJobStatus
from txt2img_client import (
    Image,
    Job,
    JobError,
    JobPage,
    JobParams,
    JobStatus,
    Problem,
    ProgressEvent,
    QueueEvent,
    Webhook,
    WebhookDelivery,
)


def fields(record: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(record)} - {"raw"}


@pytest.mark.parametrize(
    ("record", "model"),
    [
        (Job, JobOut),
        (JobParams, JobParamsOut),
        (Image, ImageOut),
        (JobError, JobErrorOut),
        (Webhook, WebhookOut),
        (WebhookDelivery, WebhookDeliveryOut),
        (JobPage, JobListOut),
    ],
)
def test_every_field_of_the_api_is_known(record: Any, model: type[BaseModel]) -> None:
    assert fields(record) == set(model.model_fields)


def test_the_progress_event_names_the_job_and_its_own_id() -> None:
    assert fields(ProgressEvent) - {"event_id", "job_id"} == set(ApiProgressEvent.model_fields) - {
        "id"
    }


def test_the_queue_event_names_the_job_and_its_own_id() -> None:
    assert fields(QueueEvent) - {"event_id", "job_id"} == set(ApiQueueEvent.model_fields) - {"id"}


def test_the_problem_keeps_the_api_extensions_apart() -> None:
    extensions = {"limit", "usage", "requested"}
    assert fields(Problem) == set(ApiProblem.model_fields) - extensions


def test_the_statuses_are_the_api_statuses() -> None:
    assert {s.value for s in JobStatus} == {s.value for s in ApiJobStatus}
    assert {s.value for s in JobStatus if s.is_terminal} == {
        s.value for s in ApiJobStatus if s.is_terminal
    }


def test_the_api_example_job_reads_as_the_api_renders_it() -> None:
    rendered = json.loads(JobOut.model_validate(EXAMPLE_JOB).model_dump_json())
    job = Job.from_dict(rendered)
    assert job.id == EXAMPLE_JOB["id"] and job.status is JobStatus.SUCCEEDED
    assert job.webhook is not None and [d.status_code for d in job.webhook.deliveries] == [503, 204]
    assert job.images[0].expires_at.tzinfo is not None
