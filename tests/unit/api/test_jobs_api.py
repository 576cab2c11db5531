"""The /v1/jobs routes over in-process HTTP, with in-memory adapters and a pattern generator."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dal.records import Job, JobStatus
from dal.telemetry.job_context import current_job_ids
from tests.unit.api.conftest import ApiHarness

PROMPT = {"prompt": "a red fox in the snow", "seed": 7, "num_inference_steps": 3}


class TestSubmit:
    def test_the_location_follows_a_root_path(self, api: ApiHarness) -> None:
        """Served under a path prefix (uvicorn --root-path), the Location names the job under
        it, as url_for does."""
        with TestClient(api.client.app, root_path="/txt2img") as prefixed:
            response = prefixed.post("/v1/jobs", json=PROMPT, headers=api.headers())
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert response.headers["location"] == f"http://testserver/txt2img/v1/jobs/{job_id}"

    def test_submit_returns_202_location_and_the_queued_job(self, api: ApiHarness) -> None:
        """A valid request creates a queued job with defaults filled in and a Location header."""
        response = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers())
        assert response.status_code == 202
        job = response.json()
        assert job["status"] == "queued"
        assert job["progress"] == 0
        assert response.headers["location"] == f"http://testserver/v1/jobs/{job['id']}"
        assert response.headers["ratelimit-limit"]
        assert job["params"] == {
            "prompt": "a red fox in the snow",
            "negative_prompt": None,
            "width": 64,
            "height": 64,
            "num_inference_steps": 3,
            "guidance_scale": 7.5,
            "seed": 7,
            "num_images": 1,
        }
        assert api.services.jobs.get(job["id"]).owner == "alice"

    def test_missing_seed_is_chosen_and_recorded(self, api: ApiHarness) -> None:
        """Without a seed the service picks one, so the job can be reproduced later."""
        response = api.client.post("/v1/jobs", json={"prompt": "x"}, headers=api.headers())
        seed = response.json()["params"]["seed"]
        assert isinstance(seed, int) and 0 <= seed < 2**32

    def test_job_runs_to_success_with_signed_image_urls(self, api: ApiHarness) -> None:
        """After the worker runs it, the job has one downloadable PNG per requested image."""
        body = {**PROMPT, "num_images": 2, "width": 72, "height": 64}
        job_id = api.client.post("/v1/jobs", json=body, headers=api.headers()).json()["id"]
        api.run_pending_jobs()

        job = api.client.get(f"/v1/jobs/{job_id}", headers=api.headers()).json()
        assert job["status"] == "succeeded"
        assert job["progress"] == 1.0
        assert job["attempts"] == 1
        assert [img["seed"] for img in job["images"]] == [7, 8]
        for image in job["images"]:
            download = api.client.get(image["url"])
            assert download.status_code == 200
            assert download.headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(download.content)).size == (72, 64)

    def test_idempotency_key_with_same_body_returns_the_same_job(self, api: ApiHarness) -> None:
        """A retried submission with the same Idempotency-Key creates nothing new."""
        headers = api.headers(**{"Idempotency-Key": "retry-1"})
        first = api.client.post("/v1/jobs", json=PROMPT, headers=headers)
        second = api.client.post("/v1/jobs", json=PROMPT, headers=headers)
        assert second.status_code == 202
        assert second.json()["id"] == first.json()["id"]
        assert second.headers["idempotent-replayed"] == "true"
        assert len(api.services.jobs.list_by_owner("alice", limit=10).items) == 1

    def test_idempotency_key_with_another_body_is_422(self, api: ApiHarness) -> None:
        """Reusing an Idempotency-Key for a different request is refused and names the key."""
        headers = api.headers(**{"Idempotency-Key": "retry-2"})
        api.client.post("/v1/jobs", json=PROMPT, headers=headers)
        response = api.client.post("/v1/jobs", json={**PROMPT, "seed": 8}, headers=headers)
        assert response.status_code == 422
        problem = response.json()
        assert problem["code"] == "idempotency-key-reused"
        assert "retry-2" in problem["detail"]
        assert len(api.services.jobs.list_by_owner("alice", limit=10).items) == 1

    def test_idempotency_keys_are_per_owner(self, api: ApiHarness) -> None:
        """Two owners using the same Idempotency-Key get two different jobs."""
        key = {"Idempotency-Key": "shared"}
        a = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers(**key)).json()
        b = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers(api.bob_key, **key)).json()
        assert a["id"] != b["id"]

    def test_queue_outage_is_503_and_the_job_is_failed_not_orphaned(self, api: ApiHarness) -> None:
        """When the job cannot be queued the client gets 503 and the record says why."""
        api.services.queue.available = False  # type: ignore[attr-defined]
        response = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers())
        assert response.status_code == 503
        assert response.headers["retry-after"]
        (job,) = api.services.jobs.list_by_owner("alice", limit=10).items
        assert job.status == JobStatus.FAILED
        assert job.error is not None and job.error.code == "enqueue_failed"


class TestReadAndList:
    def test_list_is_newest_first_with_cursor_paging(self, api: ApiHarness) -> None:
        """Paging with limit and cursor returns every own job once, newest first."""
        ids = [
            api.client.post("/v1/jobs", json={"prompt": f"p{i}"}, headers=api.headers()).json()[
                "id"
            ]
            for i in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = api.client.get("/v1/jobs", params=params, headers=api.headers()).json()
            seen += [j["id"] for j in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))

    def test_a_list_page_is_the_views_of_its_jobs_with_the_read_rate_limit_headers(
        self, api: ApiHarness
    ) -> None:
        """The page goes out serialized once, as rendered: the same items as each job's own
        view, JSON, with the headers the dependencies set."""
        ids = [
            api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
            for _ in range(2)
        ]
        api.run_pending_jobs()
        response = api.client.get("/v1/jobs?limit=1", headers=api.headers())
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["ratelimit-limit"]
        assert int(response.headers["ratelimit-remaining"]) >= 0
        page = response.json()
        assert page["next_cursor"]
        expected = api.services.view(api.services.jobs.get(ids[-1]), "http://testserver/")
        assert [item["id"] for item in page["items"]] == [ids[-1]]
        item, wanted = page["items"][0], expected.model_dump(mode="json")
        for image in (*item["images"], *wanted["images"]):
            image.pop("url"), image.pop("expires_at")  # signed at each read
        assert item == wanted

    def test_bad_cursor_and_limit_are_422(self, api: ApiHarness) -> None:
        """Paging parameters are validated and name the field at fault."""
        bad_cursor = api.client.get("/v1/jobs?cursor=nope", headers=api.headers())
        assert bad_cursor.status_code == 422
        assert bad_cursor.json()["errors"][0]["field"] == "query.cursor"
        too_many = api.client.get("/v1/jobs?limit=5000", headers=api.headers())
        assert too_many.status_code == 422
        assert too_many.json()["errors"][0]["field"] == "query.limit"

    def test_unknown_job_is_404_problem(self, api: ApiHarness) -> None:
        """A job that does not exist is a 404 problem document."""
        response = api.client.get("/v1/jobs/doesnotexist", headers=api.headers())
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not-found"


class TestCancel:
    def test_cancel_a_queued_job_and_the_worker_skips_it(self, api: ApiHarness) -> None:
        """A canceled queued job never runs."""
        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
        response = api.client.delete(f"/v1/jobs/{job_id}", headers=api.headers())
        assert response.status_code == 200
        assert response.json()["status"] == "canceled"
        api.run_pending_jobs()
        assert api.generator.calls == []
        assert api.services.jobs.get(job_id).status == JobStatus.CANCELED

    def test_cancel_a_finished_job_is_409(self, api: ApiHarness) -> None:
        """Finished jobs never change: canceling one is a conflict."""
        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
        api.run_pending_jobs()
        response = api.client.delete(f"/v1/jobs/{job_id}", headers=api.headers())
        assert response.status_code == 409
        assert response.json()["code"] == "job-finished"
        assert api.services.jobs.get(job_id).status == JobStatus.SUCCEEDED


class TestOwnership:
    def test_another_owner_cannot_see_list_cancel_or_download(self, api: ApiHarness) -> None:
        """Bob gets exactly what he would get for a job that does not exist."""
        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
        api.run_pending_jobs()
        bob = api.headers(api.bob_key)

        missing = api.client.get("/v1/jobs/0123456789abcdef", headers=bob)
        other = api.client.get(f"/v1/jobs/{job_id}", headers=bob)
        assert other.status_code == missing.status_code == 404
        assert other.json()["title"] == missing.json()["title"]
        assert api.client.get("/v1/jobs", headers=bob).json()["items"] == []
        assert api.client.delete(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
        assert api.services.jobs.get(job_id).status == JobStatus.SUCCEEDED

        # Bob cannot mint a download link for Alice's image by editing one of his own.
        bob_job = api.client.post("/v1/jobs", json=PROMPT, headers=bob).json()["id"]
        api.run_pending_jobs()
        bob_url = api.client.get(f"/v1/jobs/{bob_job}", headers=bob).json()["images"][0]["url"]
        alice_key = api.services.jobs.get(job_id).images[0].key
        bob_key = api.services.jobs.get(bob_job).images[0].key
        forged = bob_url.replace(bob_key, alice_key)
        assert api.client.get(forged).status_code == 403


class TestDeduplication:
    def test_identical_seeded_request_after_success_reuses_the_images(
        self, api: ApiHarness
    ) -> None:
        """Same owner, params, seed and model as a succeeded job: its job comes back, no run."""
        first = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()
        api.run_pending_jobs()
        again = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers())
        assert again.status_code == 200
        assert again.headers["deduplicated"] == "true"
        assert again.json()["id"] == first["id"]
        assert again.json()["status"] == "succeeded"
        assert len(api.generator.calls) == 1
        assert len(api.services.jobs.list_by_owner("alice", limit=10).items) == 1

    def test_other_owner_or_unseeded_or_different_params_run_again(self, api: ApiHarness) -> None:
        """Deduplication never crosses owners and needs an explicit seed."""
        api.client.post("/v1/jobs", json=PROMPT, headers=api.headers())
        api.run_pending_jobs()
        bob = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers(api.bob_key))
        other = api.client.post("/v1/jobs", json={**PROMPT, "seed": 8}, headers=api.headers())
        unseeded = api.client.post(
            "/v1/jobs", json={"prompt": PROMPT["prompt"]}, headers=api.headers()
        )
        assert [r.status_code for r in (bob, other, unseeded)] == [202, 202, 202]

    def test_a_queued_identical_job_is_not_reused(self, api: ApiHarness) -> None:
        """Only succeeded jobs are reused: a second request while the first waits is a new job."""
        a = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()
        b = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()
        assert a["id"] != b["id"]


class TestCacheOutage:
    def test_request_cache_down_fails_open(self, api: ApiHarness) -> None:
        """With the request cache down, submits work and idempotency still holds (job store)."""
        inner = api.services.core.cache._inner  # type: ignore[attr-defined]
        inner.available = False
        headers = api.headers(**{"Idempotency-Key": "during-outage"})
        first = api.client.post("/v1/jobs", json=PROMPT, headers=headers)
        second = api.client.post("/v1/jobs", json=PROMPT, headers=headers)
        assert (first.status_code, second.status_code) == (202, 202)
        assert first.json()["id"] == second.json()["id"]
        conflict = api.client.post("/v1/jobs", json={**PROMPT, "seed": 99}, headers=headers)
        assert conflict.status_code == 422

    def test_rate_limiter_down_fails_open(self, api: ApiHarness) -> None:
        """With the limiter's store down, requests are allowed rather than refused."""
        from dal.errors import StoreUnavailable
        from dal.fail_open import FailOpenRateLimiter
        from dal.ports import RateLimitDecision

        class DownLimiter:
            def hit(self, key: str, *, cost: int = 1) -> RateLimitDecision:
                raise StoreUnavailable("redis is down")

        api.services.submit_limiter = FailOpenRateLimiter(DownLimiter(), limit=10)
        response = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers())
        assert response.status_code == 202


class TestLongPoll:
    def test_prefer_wait_returns_as_soon_as_the_job_finishes(self, api: ApiHarness) -> None:
        """A held GET answers when the job ends, not when the wait runs out."""
        import threading
        import time

        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]

        def finish_soon() -> None:
            time.sleep(0.3)
            api.run_pending_jobs()
            api.services.job_waits.notify(job_id)

        threading.Thread(target=finish_soon).start()
        started = time.monotonic()
        response = api.client.get(f"/v1/jobs/{job_id}", headers=api.headers(Prefer="wait=10"))
        elapsed = time.monotonic() - started
        assert response.json()["status"] == "succeeded"
        assert response.headers["preference-applied"] == "wait=10"
        assert 0.2 < elapsed < 3

    def test_a_job_ending_between_the_read_and_the_wait_is_answered_at_once(
        self, api: ApiHarness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The held GET reads the job still queued; it ends, and its notice is heard, before
        the GET starts waiting. The GET answers the end then, not after a poll interval."""
        import time

        api.services.settings.prefer_wait_poll_s = 30.0  # a missed notice would cost 30 s
        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
        read = api.services.job_service.get

        def read_then_the_job_ends(**kwargs: str) -> Job:
            job = read(**kwargs)
            api.run_pending_jobs()
            api.services.job_waits.notify(job_id)
            return job  # as it was read: queued

        monkeypatch.setattr(api.services.job_service, "get", read_then_the_job_ends)
        started = time.monotonic()
        response = api.client.get(f"/v1/jobs/{job_id}", headers=api.headers(Prefer="wait=60"))
        elapsed = time.monotonic() - started

        assert response.json()["status"] == "succeeded"
        assert elapsed < 10

    def test_prefer_wait_gives_up_after_the_wait(self, api: ApiHarness) -> None:
        """A job that does not finish is returned as it is once the wait is over."""
        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
        response = api.client.get(f"/v1/jobs/{job_id}", headers=api.headers(Prefer="wait=1"))
        assert response.status_code == 200
        assert response.json()["status"] == "queued"

    def test_wait_is_capped(self, api: ApiHarness) -> None:
        """A wait above PREFER_WAIT_MAX_S is cut to it, and says so."""
        api.services.settings.prefer_wait_max_s = 0.2
        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
        response = api.client.get(f"/v1/jobs/{job_id}", headers=api.headers(Prefer="wait=999"))
        assert response.headers["preference-applied"] == "wait=0.2"

    def test_submit_can_wait_for_the_result(self, api: ApiHarness) -> None:
        """POST with Prefer: wait answers 200 with the finished job in one round trip."""
        import threading
        import time

        def finish_soon() -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                ids = api.run_pending_jobs()
                for job_id in ids:
                    api.services.job_waits.notify(job_id)
                if ids:
                    return
                time.sleep(0.05)

        threading.Thread(target=finish_soon).start()
        response = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers(Prefer="wait=10"))
        assert response.status_code == 200
        assert response.json()["status"] == "succeeded"
        assert response.headers["preference-applied"] == "wait=10"


class TestReadingAJob:
    def test_a_poll_answers_the_job_view_with_the_read_rate_limit_headers(
        self, api: ApiHarness
    ) -> None:
        """The plain poll answers with the rendered view as is (no second validation): the
        same document as the view, JSON, carrying the headers the dependencies set."""
        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
        api.run_pending_jobs()
        response = api.client.get(f"/v1/jobs/{job_id}", headers=api.headers())
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["ratelimit-remaining"]) >= 0
        assert response.headers["ratelimit-limit"]
        assert int(response.headers["content-length"]) == len(response.content)
        view = api.services.view(api.services.jobs.get(job_id), "http://testserver/")
        expected = view.model_dump(mode="json")
        body = response.json()
        for image in (*expected["images"], *body["images"]):
            image.pop("url"), image.pop("expires_at")  # signed at each read
        assert body == expected
        waited = api.client.get(f"/v1/jobs/{job_id}", headers=api.headers(Prefer="wait=1"))
        assert waited.headers["ratelimit-limit"] == response.headers["ratelimit-limit"]
        assert waited.json()["id"] == job_id

    def test_a_request_about_a_job_names_it_on_its_log_lines(self, api: ApiHarness) -> None:
        """The `{job_id}` of the path is in the request's log context, down to the threadpool
        calls its route makes (here the finisher, ending the job on a cancel)."""
        job_id = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()["id"]
        seen: list[tuple[str, ...]] = []
        api.services.core.finisher.add_handler(
            "context", lambda job: seen.append(current_job_ids())
        )
        assert api.client.delete(f"/v1/jobs/{job_id}", headers=api.headers()).status_code == 200
        assert seen == [(job_id,)]
