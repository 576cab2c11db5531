"""The web page at `/`, driven in headless Chromium against the real service process.

Debian's Chromium (`make browser`, tools/ensure-chromium.sh) is driven by Playwright; its own
browser downloads are never used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.e2e.conftest import BOOTSTRAP_KEY, REPO_ROOT, RunningService
from tests.integration.availability import missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / ".data" / "test-artifacts"
JOB_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        missing("Chromium", "run `make browser` (apt-get install chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 1300},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, service: RunningService) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) on the page; fails the test on any console error,
    which is where Chromium reports what the Content-Security-Policy blocked."""
    tab = browser.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # A 401/503 the page asked for on purpose is logged as a failed resource: expected.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    response = tab.goto(service.base_url + "/")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    yield tab
    tab.close()
    assert problems == []


def use_key(page: Page, key: str) -> None:
    page.get_by_label("Your API key").fill(key)
    page.get_by_role("button", name="Use key").click()


def fill_job(page: Page, prompt: str, **params: Any) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    for name, value in params.items():
        page.locator(f"#{name}").fill(str(value))


def record_progress(page: Page) -> None:
    """Keep every value the progress bar shows, for the test to read back."""
    page.evaluate(
        """() => {
            window.progressSeen = [];
            const bar = document.getElementById("job-progress");
            new MutationObserver(() => window.progressSeen.push(bar.value))
                .observe(bar, {attributes: true, attributeFilter: ["value"]});
        }"""
    )


def wait_for_status(page: Page, text: str) -> None:
    page.wait_for_function(
        "text => document.getElementById('job-status').textContent.startsWith(text)",
        arg=text,
        timeout=JOB_TIMEOUT_MS,
    )


def shown_job_id(page: Page) -> str:
    return str(page.locator("#job").get_attribute("data-job-id"))


class TestWebPage:
    def test_a_bad_key_shows_an_error_and_is_not_kept(self, page: Page) -> None:
        use_key(page, "not-a-valid-key-0000000000")
        errors = page.get_by_role("alert")
        errors.wait_for()
        assert "401" in errors.inner_text()
        assert "not valid" in errors.inner_text()
        assert page.get_by_label("Your API key").is_visible()
        assert page.evaluate("sessionStorage.length") == 0

    def test_refusals_are_shown_readably(self, page: Page) -> None:
        """A 422 names and marks the field at fault; a 429 says when to try again."""
        use_key(page, BOOTSTRAP_KEY)
        fill_job(page, "   ")  # passes the browser's `required`, not the API's check
        page.get_by_role("button", name="Generate", exact=True).click()
        errors = page.get_by_role("alert")
        errors.wait_for()
        assert "422" in errors.inner_text() and "body.prompt" in errors.inner_text()
        prompt = page.get_by_label("Prompt", exact=True)
        assert prompt.get_attribute("aria-invalid") == "true"
        assert prompt.evaluate("el => el === document.activeElement")

        page.route(
            "**/v1/jobs",
            lambda route: route.fulfill(
                status=429,
                headers={"Retry-After": "7"},
                content_type="application/problem+json",
                body=json.dumps(
                    {"title": "Too many requests", "status": 429, "code": "rate-limited"}
                ),
            ),
        )
        fill_job(page, "one too many")
        page.get_by_role("button", name="Generate", exact=True).click()
        page.wait_for_function(
            "() => document.getElementById('errors').textContent.includes('Try again in 7 s')"
        )
        assert prompt.get_attribute("aria-invalid") is None

    def test_submit_watch_progress_and_see_the_images(
        self, page: Page, service: RunningService, capsys: pytest.CaptureFixture[str]
    ) -> None:
        use_key(page, BOOTSTRAP_KEY)
        page.get_by_role("button", name="Forget key").wait_for()
        record_progress(page)
        fill_job(
            page,
            "a lighthouse at dawn, seen from the web page",
            width=64,
            height=64,
            num_inference_steps=3,
            guidance_scale=1,
            seed=4242,
            num_images=2,
        )
        page.get_by_role("button", name="Generate", exact=True).click()
        wait_for_status(page, "Succeeded: 2 images")

        seen = page.evaluate("window.progressSeen")
        assert seen[-1] == 1 and seen == sorted(seen), seen
        images = page.locator("#job-images img")
        assert images.count() == 2
        for i in range(2):
            image = images.nth(i)
            image.wait_for()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
            )
            assert image.evaluate("img => img.naturalWidth") == 64
            assert "a lighthouse at dawn" in str(image.get_attribute("alt"))

        job_id = shown_job_id(page)
        newest = page.locator("#recent-list li").first
        newest.locator(f'button[data-job-id="{job_id}"]').wait_for()
        assert "succeeded" in newest.inner_text()
        with service.client() as client:
            assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "web-page.png"
        page.screenshot(path=str(shot), full_page=True)
        with capsys.disabled():  # shown in every run, not only when the test fails
            print(f"\nweb page screenshot: {shot}")  # noqa: T201

        # The key outlives leaving the page in this tab, and the shown job is in the address.
        assert page.url.endswith(f"#job/{job_id}")
        page.goto("about:blank")
        page.goto(f"{service.base_url}/#job/{job_id}")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#job-images img')]"
            ".some(img => img.complete && img.naturalWidth > 0)"
        )
        assert shown_job_id(page) == job_id

        page.get_by_role("button", name="Forget key").click()
        assert page.get_by_label("Your API key").is_visible()
        assert page.evaluate("sessionStorage.length") == 0

    def test_cancel_a_running_job(self, page: Page, service: RunningService) -> None:
        use_key(page, BOOTSTRAP_KEY)
        record_progress(page)
        fill_job(page, "a slow one to cancel", width=128, height=128, num_inference_steps=50)
        page.get_by_role("button", name="Generate", exact=True).click()
        # Live progress: two different values strictly between 0 and 1 before canceling.
        page.wait_for_function(
            "() => new Set(window.progressSeen.filter(v => v > 0 && v < 1)).size >= 2",
            timeout=JOB_TIMEOUT_MS,
        )
        page.get_by_role("button", name="Cancel job", exact=True).click()
        wait_for_status(page, "Canceled")
        assert page.get_by_role("button", name="Cancel job", exact=True).is_hidden()
        with service.client() as client:
            job = client.get(f"/v1/jobs/{shown_job_id(page)}").json()
        assert job["status"] == "canceled" and job["images"] == []

    def test_progress_falls_back_to_polling_without_streaming(self, page: Page) -> None:
        """Where a proxy breaks the event stream, the page polls the job instead."""
        page.route(
            "**/v1/jobs/*/events",
            lambda route: route.fulfill(
                status=503,
                content_type="application/problem+json",
                body=json.dumps({"title": "no streams here", "status": 503}),
            ),
        )
        use_key(page, BOOTSTRAP_KEY)
        fill_job(page, "polled", width=64, height=64, num_inference_steps=2, guidance_scale=1)
        with page.expect_request(lambda r: r.headers.get("prefer", "").startswith("wait=")):
            page.get_by_role("button", name="Generate", exact=True).click()
        wait_for_status(page, "Succeeded: 1 image")


def test_page_assets_need_no_key(service: RunningService) -> None:
    """The page loads before any key is typed; only the API behind it asks for one."""
    for path in ("/", "/web/app.js", "/web/app.css"):
        assert httpx.get(service.base_url + path, timeout=10).status_code == 200
