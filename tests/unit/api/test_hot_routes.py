"""The hot routes (api/hot_routes.py) against FastAPI's own routing: two apps alike but for the
hot routes get the same requests, in the same order, and must give the same answers (status,
the headers a client reads, and the body, job ids and times aside), whether a request is
well-formed or not, and whatever it leaves behind (jobs, quotas, rate limits)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response  # what Starlette's TestClient answers with

from api.app import create_app
from api.deps import Reader, Submitter
from api.wiring import build_services
from tests.fakes import PatternGenerator
from tests.unit.api.conftest import ALICE_KEY, ApiHarness, make_settings

SEEDED = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 2, "seed": 7}
ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}
# What a client reads in an answer. Left out: traceparent (a new trace per request) and
# content-length (the bodies' times may differ in length); RateLimit-Reset is compared as present.
COMPARED_HEADERS = (
    "content-type",
    "location",
    "ratelimit-limit",
    "ratelimit-remaining",
    "retry-after",
    "preference-applied",
    "idempotent-replayed",
    "deduplicated",
    "www-authenticate",
    "cache-control",
    "x-content-type-options",
)
_JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?")
_SIGNED = re.compile(r"expires=\d+&sig=[0-9a-f]{64}")
_MAX_AGE = re.compile(r"max-age=\d+")


@dataclass
class Side:
    """One app, and the job ids it has answered with, numbered in order of appearance."""

    api: ApiHarness
    ids: dict[str, str] = field(default_factory=dict)
    last_job: str | None = None
    last_image_url: str | None = None

    def normalized(self, response: Response) -> dict[str, Any]:
        headers = {
            name: self._text(response.headers[name])
            for name in COMPARED_HEADERS
            if name in response.headers
        }
        body: Any
        if response.headers.get("content-type", "").endswith("json"):
            document = response.json()
            self._remember(document)
            body = json.loads(self._text(json.dumps(document, sort_keys=True)))
        else:
            body = response.content
        return {
            "status": response.status_code,
            "headers": headers,
            "has_ratelimit_reset": "ratelimit-reset" in response.headers,
            "body": body,
        }

    def _remember(self, document: Any) -> None:
        if isinstance(document, dict) and isinstance(document.get("id"), str):
            self.last_job = document["id"]
            images = document.get("images") or []
            if images:
                self.last_image_url = images[0]["url"]

    def _text(self, text: str) -> str:
        def number(match: re.Match[str]) -> str:
            return self.ids.setdefault(match.group(0), f"<job {len(self.ids) + 1}>")

        text = _JOB_ID.sub(number, text)
        text = _SIGNED.sub("<signed>", text)
        text = _MAX_AGE.sub("max-age=<s>", text)
        return _TIME.sub("<time>", text)


Step = Callable[[Side], Response]


@pytest.fixture
def sides(request: pytest.FixtureRequest) -> Iterator[tuple[Side, Side]]:
    """(hot, plain): the same settings (a test changes them with an indirect parameter),
    services of their own, an app with and one without the hot routes."""
    # Limits that refill slowly, so that both sides count the same RateLimit-Remaining however
    # long a step takes on a loaded machine.
    overrides: dict[str, Any] = {
        "rate_limit_submit_per_minute": 1,
        "rate_limit_read_per_minute": 1,
        **getattr(request, "param", {}),
    }
    built = []
    for hot in (True, False):
        generator = PatternGenerator()
        services = build_services(make_settings(**overrides), generator=generator)
        bob = services.keys.issue(owner="bob").secret
        client = TestClient(create_app(services=services, hot_routes=hot))
        built.append(Side(ApiHarness(client, services, generator, bob)))
    with built[0].api.client, built[1].api.client:
        yield built[0], built[1]
    for side in built:
        side.api.services.close()


def settings(**overrides: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("sides", [overrides], indirect=True)


def same_answers(sides: tuple[Side, Side], steps: list[Step]) -> list[dict[str, Any]]:
    """Runs each step on both sides in turn; each step's answers must match."""
    hot, plain = sides
    answers = []
    for number, step in enumerate(steps):
        got = hot.normalized(step(hot))
        expected = plain.normalized(step(plain))
        assert got == expected, f"step {number}"
        answers.append(got)
    return answers


def post(body: Any = SEEDED, headers: dict[str, str] | None = None, **kwargs: Any) -> Step:
    def step(side: Side) -> Response:
        sent = ALICE if headers is None else headers
        if isinstance(body, bytes):
            return side.api.client.post(
                "/v1/jobs",
                content=body,
                headers={**sent, "Content-Type": "application/json"},
                **kwargs,
            )
        return side.api.client.post("/v1/jobs", json=body, headers=sent, **kwargs)

    return step


def get(path: str | Callable[[Side], str], headers: dict[str, str] | None = None) -> Step:
    def step(side: Side) -> Response:
        url = path(side) if callable(path) else path
        return side.api.client.get(url, headers=ALICE if headers is None else headers)

    return step


def run_jobs(then: Step) -> Step:
    def step(side: Side) -> Response:
        side.api.run_pending_jobs()
        return then(side)

    return step


def last_job(side: Side) -> str:
    assert side.last_job is not None
    return f"/v1/jobs/{side.last_job}"


def last_image(side: Side) -> str:
    assert side.last_image_url is not None
    return side.last_image_url


def flip_first_hex_digit(match: re.Match[str]) -> str:
    return "sig=1" if match.group(0) == "sig=0" else "sig=0"


def statuses(answers: list[dict[str, Any]]) -> list[int]:
    return [answer["status"] for answer in answers]


class TestSubmit:
    def test_a_job_through_its_life(self, sides: tuple[Side, Side]) -> None:
        answers = same_answers(
            sides,
            [
                post(),
                get(last_job),
                get(last_job, {**ALICE, "Prefer": "wait=0.05"}),
                post(SEEDED, {**ALICE, "Prefer": "wait=0.05"}),
                run_jobs(get(last_job)),
                get(last_job, {**ALICE, "Prefer": "respond-async, wait=5"}),
                get(last_image),
                # An identical seeded request after success: the same images, at once.
                post(),
                post({**SEEDED, "seed": 8, "num_images": 2}, {**ALICE, "Prefer": "wait=0"}),
            ],
        )
        assert statuses(answers) == [202, 200, 200, 202, 200, 200, 200, 200, 202]
        assert answers[4]["body"]["status"] == "succeeded"
        assert answers[6]["headers"]["content-type"] == "image/png"
        assert answers[7]["headers"]["deduplicated"] == "true"

    @pytest.mark.parametrize(
        "body",
        [
            b"{not json",
            b"",
            b"[]",
            b'"a lighthouse"',
            b'{"prompt": "x", "prompt": 3}',
            {**SEEDED, "colour": "red"},
            {**SEEDED, "width": "64"},
            {**SEEDED, "width": 65},
            {**SEEDED, "num_inference_steps": 2.0},
            {**SEEDED, "prompt": ""},
            {**SEEDED, "webhook_url": "ftp://hooks.example.com/x"},
            {**SEEDED, "webhook_url": "https://hooks.example.com/txt2img"},
        ],
    )
    def test_bodies(self, sides: tuple[Side, Side], body: Any) -> None:
        same_answers(sides, [post(body), get("/v1/jobs")])

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
            {"Authorization": "Bearer wrong-key"},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer"},
            {"Authorization": f"bearer {ALICE_KEY}"},
            {"Authorization": f"BEARER  {ALICE_KEY}"},
            {"Authorization": f"Bearer {ALICE_KEY} trailing"},
        ],
    )
    def test_credentials(self, sides: tuple[Side, Side], headers: dict[str, str]) -> None:
        same_answers(sides, [post(SEEDED, headers), get("/v1/jobs")])

    def test_a_repeated_authorization_header_counts_once_as_its_first(
        self, sides: tuple[Side, Side]
    ) -> None:
        def twice(first: str, second: str) -> Step:
            def step(side: Side) -> Response:
                headers = [("authorization", first), ("authorization", second)]
                return side.api.client.post("/v1/jobs", json=SEEDED, headers=headers)

            return step

        answers = same_answers(
            sides,
            [
                twice(f"Bearer {ALICE_KEY}", "Bearer wrong-key"),
                twice("Bearer wrong-key", f"Bearer {ALICE_KEY}"),
            ],
        )
        assert statuses(answers) == [202, 401]

    @pytest.mark.parametrize(
        "key",
        ["retry-1", "", "x" * 256, "tab\there"],
    )
    def test_idempotency_keys(self, sides: tuple[Side, Side], key: str) -> None:
        headers = {**ALICE, "Idempotency-Key": key}
        same_answers(
            sides,
            [
                post(SEEDED, headers),
                post(SEEDED, headers),
                post({**SEEDED, "seed": 9}, headers),
                get("/v1/jobs"),
            ],
        )

    @settings(rate_limit_submit_burst=2, rate_limit_read_burst=3)
    def test_rate_limits(self, sides: tuple[Side, Side]) -> None:
        answers = same_answers(
            sides,
            [post(), post(), post(), post(b"{not json"), get(last_job)]
            + [get(last_job)] * 3
            + [get("/v1/blobs/images/x.png?expires=1&sig=" + "0" * 64)],
        )
        # A body that is not JSON is refused before the limit is asked (FastAPI parses it first).
        assert statuses(answers) == [202, 202, 429, 400, 200, 200, 200, 429, 403]
        assert answers[2]["headers"]["retry-after"]

    @settings(rate_limiter="redis", redis_url="redis://127.0.0.1:1/0")
    def test_a_rate_limit_kept_in_redis(self, sides: tuple[Side, Side]) -> None:
        """A limiter that may block is asked from the threadpool on both sides; here its
        Redis is down, and both let the requests through (fail open) alike."""
        answers = same_answers(sides, [post(), get(last_job), post(SEEDED, {})])
        assert statuses(answers) == [202, 200, 401]

    @settings(quota_max_in_flight=1)
    def test_quotas(self, sides: tuple[Side, Side]) -> None:
        answers = same_answers(sides, [post(), post({**SEEDED, "seed": 8}), run_jobs(post())])
        assert statuses(answers) == [202, 429, 200]

    def test_a_revoked_key_is_refused_at_once(self, sides: tuple[Side, Side]) -> None:
        carol: dict[str, str] = {}

        def issue(side: Side) -> Response:
            carol[str(id(side))] = side.api.services.keys.issue(owner="carol").secret
            return post(SEEDED, {"Authorization": f"Bearer {carol[str(id(side))]}"})(side)

        def revoke_then(then: Callable[[dict[str, str]], Step]) -> Step:
            def step(side: Side) -> Response:
                keys = side.api.services.keys
                for record in keys.list_keys("carol"):
                    if record.is_active:
                        keys.revoke(record.id)
                return then({"Authorization": f"Bearer {carol[str(id(side))]}"})(side)

            return step

        answers = same_answers(
            sides,
            [
                issue,
                revoke_then(lambda headers: post(SEEDED, headers)),
                revoke_then(lambda headers: get(last_job, headers)),
            ],
        )
        assert statuses(answers) == [202, 401, 401]


class TestReads:
    @pytest.mark.parametrize(
        "path",
        [
            "/v1/jobs/0123456789abcdef0123456789abcdef",
            "/v1/jobs/" + "a" * 64,
            "/v1/jobs/" + "a" * 65,
            "/v1/jobs/a%2Fb",
            "/v1/jobs/",
            "/v1/jobs/a/b",
        ],
    )
    def test_job_paths(self, sides: tuple[Side, Side], path: str) -> None:
        same_answers(sides, [get(path)])

    def test_another_owners_job_is_not_found(self, sides: tuple[Side, Side]) -> None:
        def as_bob(side: Side) -> Response:
            return get(last_job, {"Authorization": f"Bearer {side.api.bob_key}"})(side)

        answers = same_answers(sides, [post(), as_bob, get(last_job, {})])
        assert statuses(answers) == [202, 404, 401]

    def test_downloads(self, sides: tuple[Side, Side]) -> None:
        def tampered(change: Callable[[str], str]) -> Step:
            return get(lambda side: change(last_image(side)), {})

        answers = same_answers(
            sides,
            [
                post(SEEDED, {**ALICE, "Prefer": "wait=0"}),
                run_jobs(get(last_job)),
                tampered(lambda url: url),
                tampered(lambda url: re.sub(r"sig=[0-9a-f]", flip_first_hex_digit, url, count=1)),
                tampered(lambda url: re.sub(r"sig=[0-9a-f]{64}", "sig=abc", url)),
                tampered(lambda url: re.sub(r"expires=\d+", "expires=+5", url)),
                tampered(lambda url: re.sub(r"expires=\d+", "expires=99999999999999", url)),
                tampered(lambda url: re.sub(r"expires=\d+", "expires=1", url)),
                tampered(lambda url: url + "&sig=" + "0" * 64),
                tampered(lambda url: url + "&expires=1"),
                tampered(lambda url: url.split("?")[0]),
                tampered(lambda url: url.replace("/images/", "/images/../")),
            ],
        )
        assert statuses(answers)[:4] == [202, 200, 200, 403]


def test_the_hot_routes_answer_without_the_routes_dependencies(
    sides: tuple[Side, Side],
) -> None:
    """With the documented routes' caller dependencies made to fail, a well-formed submit,
    poll and download are still answered on the hot side: proof that the comparisons above
    compared two ways of reading a request, not one way twice."""
    hot, plain = sides

    def broken() -> None:
        raise RuntimeError("a dependency was resolved")

    for side in sides:
        app = side.api.client.app
        for alias in (Submitter, Reader):
            app.dependency_overrides[alias.__metadata__[0].dependency] = broken  # type: ignore[attr-defined]
    created = hot.api.client.post("/v1/jobs", json=SEEDED, headers=ALICE)
    assert created.status_code == 202
    assert hot.api.client.get(created.headers["location"], headers=ALICE).status_code == 200
    with pytest.raises(RuntimeError, match="a dependency was resolved"):
        plain.api.client.post("/v1/jobs", json=SEEDED, headers=ALICE)
