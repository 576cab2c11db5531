"""The web page's route: the files it serves, their headers, and nothing else."""

from __future__ import annotations

import re

import pytest

from api.routes.web import content_security_policy
from tests.unit.api.conftest import ApiHarness, make_settings


class TestWebPage:
    def test_index_is_html_with_a_strict_policy(self, api: ApiHarness) -> None:
        """`/` is the page, under a CSP that allows only this origin's scripts and styles."""
        response = api.client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert '<script src="/web/app.js" defer></script>' in response.text

    def test_page_has_no_inline_script_or_style(self, api: ApiHarness) -> None:
        """Everything the page runs comes from its own files, as the policy demands."""
        html = api.client.get("/").text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        assert "<style" not in html and " style=" not in html
        assert not re.search(r"\son[a-z]+=", html)

    def test_assets_are_served_with_their_types(self, api: ApiHarness) -> None:
        js = api.client.get("/web/app.js")
        css = api.client.get("/web/app.css")
        assert js.status_code == css.status_code == 200
        assert js.headers["content-type"] == "text/javascript; charset=utf-8"
        assert css.headers["content-type"] == "text/css; charset=utf-8"
        assert "EventSource cannot send" in js.text

    def test_a_current_copy_is_answered_304(self, api: ApiHarness) -> None:
        """The browser revalidates with the ETag and gets no body when nothing changed."""
        first = api.client.get("/web/app.js")
        again = api.client.get("/web/app.js", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""

    def test_only_the_listed_files_are_served(self, api: ApiHarness) -> None:
        """Names outside the allowlist, traversal included, are a 404 problem."""
        for path in ("/web/index.htm", "/web/..%2fapp.py", "/web/%2e%2e/routes/web.py"):
            response = api.client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"


class TestContentSecurityPolicy:
    def test_images_from_this_api_only_by_default(self) -> None:
        policy = content_security_policy(make_settings())
        assert "img-src 'self';" in policy

    def test_images_from_the_public_origin_and_cloud_storage(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        settings = make_settings(public_base_url="https://api.example.com/base", blob_store="gcs")
        policy = content_security_policy(settings)
        assert "img-src 'self' https://api.example.com https://storage.googleapis.com;" in policy

    def test_images_from_the_storage_emulator(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9023")
        policy = content_security_policy(make_settings(blob_store="gcs"))
        assert "img-src 'self' http://127.0.0.1:9023;" in policy
