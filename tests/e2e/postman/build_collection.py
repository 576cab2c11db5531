"""Writes txt2img.postman_collection.json: every API route, happy and unhappy paths, with
assertions. Edit this file, run it, and commit both (a test checks they agree)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
COLLECTION = HERE / "txt2img.postman_collection.json"
FAST = {"width": 64, "height": 64, "num_inference_steps": 2, "guidance_scale": 1.0}

PROBLEM = """
pm.test("is problem+json", () => {
  pm.expect(pm.response.headers.get("Content-Type")).to.include("application/problem+json");
  const p = pm.response.json();
  pm.expect(p).to.have.all.keys(...Object.keys(p));
  pm.expect(p.status).to.eql(pm.response.code);
  pm.expect(p.type).to.eql("/problems/" + p.code);
});
"""


def request(
    name: str,
    method: str,
    path: str,
    tests: str,
    *,
    body: Any = None,
    raw: str | None = None,
    auth: str | None = "{{apiKey}}",
    headers: dict[str, str] | None = None,
    prerequest: str = "",
) -> dict[str, Any]:
    header = [{"key": k, "value": v} for k, v in (headers or {}).items()]
    if auth:
        header.append({"key": "Authorization", "value": f"Bearer {auth}"})
    item: dict[str, Any] = {
        "name": name,
        "request": {
            "method": method,
            "header": header,
            "url": path if path.startswith("{{") else "{{baseUrl}}" + path,
        },
        "event": [
            {
                "listen": "test",
                "script": {"type": "text/javascript", "exec": tests.strip().splitlines()},
            }
        ],
    }
    if prerequest:
        item["event"].append(
            {
                "listen": "prerequest",
                "script": {"type": "text/javascript", "exec": prerequest.strip().splitlines()},
            }
        )
    if body is not None or raw is not None:
        if body is not None and not any(k.lower() == "content-type" for k in (headers or {})):
            header.append({"key": "Content-Type", "value": "application/json"})
        item["request"]["body"] = {
            "mode": "raw",
            "raw": raw if raw is not None else json.dumps(body),
        }
    return item


def status(code: int) -> str:
    return f'pm.test("status {code}", () => pm.response.to.have.status({code}));'


def accepted() -> str:
    # A fast job can finish before its submit (or its replay) is answered: 200, the job done.
    return (
        'pm.test("status 202, or 200 when the job has already finished", '
        "() => pm.expect(pm.response.code).to.be.oneOf([200, 202]));"
    )


def field_error(field: str) -> str:
    return (
        f'pm.test("names {field}", () => pm.expect(pm.response.json().errors.map(e => e.field))'
        f'.to.include("{field}"));'
    )


def build() -> dict[str, Any]:
    happy_body = {"prompt": "a postman lighthouse", "seed": 4242, **FAST}
    folders = [
        (
            "Operations",
            [
                request(
                    "Health",
                    "GET",
                    "/healthz",
                    status(200)
                    + '\npm.test("ok", () => pm.expect(pm.response.json().status).to.eql("ok"));',
                    auth=None,
                ),
                request("Readiness", "GET", "/readyz", status(200), auth=None),
                request(
                    "OpenAPI",
                    "GET",
                    "/openapi.json",
                    status(200)
                    + '\npm.test("documents jobs", () => pm.expect(pm.response.json().paths).to.have.property("/v1/jobs"));',
                    auth=None,
                ),
                request("Unknown route", "GET", "/v2/nowhere", status(404) + PROBLEM, auth=None),
            ],
        ),
        (
            "Refusals",
            [
                request(
                    "No key",
                    "POST",
                    "/v1/jobs",
                    status(401)
                    + PROBLEM
                    + '\npm.test("challenge", () => pm.expect(pm.response.headers.get("WWW-Authenticate")).to.include("Bearer"));',
                    body={"prompt": "x"},
                    auth=None,
                ),
                request(
                    "Wrong key",
                    "POST",
                    "/v1/jobs",
                    status(401) + PROBLEM,
                    body={"prompt": "x"},
                    auth="not-a-key",
                ),
                request(
                    "Width not a multiple of 8",
                    "POST",
                    "/v1/jobs",
                    status(422) + PROBLEM + field_error("body.width"),
                    body={"prompt": "x", "width": 65},
                ),
                request(
                    "Unknown field",
                    "POST",
                    "/v1/jobs",
                    status(422) + PROBLEM + field_error("body.nsfw"),
                    body={"prompt": "x", "nsfw": True},
                ),
                request(
                    "Wrong JSON type",
                    "POST",
                    "/v1/jobs",
                    status(422) + PROBLEM + field_error("body.num_images"),
                    body={"prompt": "x", "num_images": "2"},
                ),
                request(
                    "Prompt too long",
                    "POST",
                    "/v1/jobs",
                    status(422) + PROBLEM + field_error("body.prompt"),
                    body={"prompt": "x" * 1001},
                ),
                request(
                    "Malformed JSON",
                    "POST",
                    "/v1/jobs",
                    status(400) + PROBLEM,
                    raw='{"prompt": ',
                    headers={"Content-Type": "application/json"},
                ),
                request(
                    "Not JSON",
                    "POST",
                    "/v1/jobs",
                    status(415) + PROBLEM,
                    raw="prompt=x",
                    headers={"Content-Type": "text/plain"},
                ),
                request(
                    "Body too large",
                    "POST",
                    "/v1/jobs",
                    status(413) + PROBLEM,
                    raw='{"prompt": "' + "x" * 20000 + '"}',
                    headers={"Content-Type": "application/json"},
                ),
                request(
                    "Bad cursor",
                    "GET",
                    "/v1/jobs?cursor=nonsense",
                    status(422) + PROBLEM + field_error("query.cursor"),
                ),
                request(
                    "Unknown job",
                    "GET",
                    "/v1/jobs/0123456789abcdef0123456789abcdef",
                    status(404) + PROBLEM,
                ),
            ],
        ),
        (
            "Job lifecycle",
            [
                request(
                    "Submit",
                    "POST",
                    "/v1/jobs",
                    accepted()
                    + """
const job = pm.response.json();
pm.test("queued with params", () => {
  pm.expect(job.status).to.be.oneOf(["queued", "running", "succeeded"]);
  pm.expect(job.params.seed).to.eql(4242);
});
pm.test("Location", () => pm.expect(pm.response.headers.get("Location")).to.include("/v1/jobs/" + job.id));
pm.test("rate limit headers", () => pm.expect(pm.response.headers.get("RateLimit-Remaining")).to.not.be.undefined);
pm.collectionVariables.set("jobId", job.id);
pm.collectionVariables.set("polls", 0);
""",
                    body=happy_body,
                    headers={"Idempotency-Key": "{{idemKey}}"},
                    prerequest='pm.collectionVariables.set("idemKey", pm.variables.replaceIn("{{$guid}}"));',
                ),
                request(
                    "Submit again (idempotent)",
                    "POST",
                    "/v1/jobs",
                    accepted()
                    + '\npm.test("same job", () => pm.expect(pm.response.json().id).to.eql(pm.collectionVariables.get("jobId")));'
                    + '\npm.test("replayed", () => pm.expect(pm.response.headers.get("Idempotent-Replayed")).to.eql("true"));',
                    body=happy_body,
                    headers={"Idempotency-Key": "{{idemKey}}"},
                ),
                request(
                    "Reuse key with another body",
                    "POST",
                    "/v1/jobs",
                    status(422)
                    + PROBLEM
                    + '\npm.test("code", () => pm.expect(pm.response.json().code).to.eql("idempotency-key-reused"));',
                    body={**happy_body, "seed": 1},
                    headers={"Idempotency-Key": "{{idemKey}}"},
                ),
                request(
                    "Poll until finished",
                    "GET",
                    "/v1/jobs/{{jobId}}",
                    status(200)
                    + """
const job = pm.response.json();
const polls = Number(pm.collectionVariables.get("polls")) + 1;
pm.collectionVariables.set("polls", polls);
if (!["succeeded", "failed", "canceled"].includes(job.status) && polls < 300) {
  postman.setNextRequest("Poll until finished");
} else {
  pm.test("succeeded", () => pm.expect(job.status).to.eql("succeeded"));
  pm.test("progress 1", () => pm.expect(job.progress).to.eql(1));
  pm.test("one 64x64 image", () => {
    pm.expect(job.images).to.have.lengthOf(1);
    pm.expect(job.images[0].width).to.eql(64);
  });
  const url = job.images[0].url;
  pm.collectionVariables.set("imageUrl", url);
  const sig = url.match(/sig=([0-9a-f]+)/);
  // Only URLs the API serves itself are checked here; Cloud Storage verifies its own.
  pm.collectionVariables.set("tamperedUrl", sig ? url.replace(sig[1], "0".repeat(64)) : "");
}
""",
                    prerequest="setTimeout(() => {}, 150);",
                ),
                request(
                    "Download image",
                    "GET",
                    "{{imageUrl}}",
                    status(200)
                    + '\npm.test("png", () => pm.expect(pm.response.headers.get("Content-Type")).to.include("image/png"));',
                    auth=None,
                ),
                request(
                    "List own jobs",
                    "GET",
                    "/v1/jobs?limit=1",
                    status(200)
                    + '\npm.test("one item", () => pm.expect(pm.response.json().items).to.have.lengthOf(1));',
                ),
                request(
                    "Identical seeded request reuses the result",
                    "POST",
                    "/v1/jobs",
                    status(200)
                    + '\npm.test("same job", () => pm.expect(pm.response.json().id).to.eql(pm.collectionVariables.get("jobId")));'
                    + '\npm.test("deduplicated", () => pm.expect(pm.response.headers.get("Deduplicated")).to.eql("true"));',
                    body=happy_body,
                ),
                request(
                    "Cancel a finished job", "DELETE", "/v1/jobs/{{jobId}}", status(409) + PROBLEM
                ),
                request(
                    "Other owner cannot read",
                    "GET",
                    "/v1/jobs/{{jobId}}",
                    status(404) + PROBLEM,
                    auth="{{otherKey}}",
                ),
                request(
                    "Other owner cannot cancel",
                    "DELETE",
                    "/v1/jobs/{{jobId}}",
                    status(404) + PROBLEM,
                    auth="{{otherKey}}",
                ),
                request(
                    "Other owner lists nothing",
                    "GET",
                    "/v1/jobs",
                    status(200)
                    + '\npm.test("empty", () => pm.expect(pm.response.json().items).to.have.lengthOf(0));',
                    auth="{{otherKey}}",
                ),
                request(
                    "Submit a long job",
                    "POST",
                    "/v1/jobs",
                    status(202)
                    + '\npm.collectionVariables.set("longJobId", pm.response.json().id);',
                    body={
                        "prompt": "a long one",
                        "width": 512,
                        "height": 512,
                        "num_inference_steps": 50,
                        "guidance_scale": 7.5,
                    },
                ),
                request(
                    "Cancel it",
                    "DELETE",
                    "/v1/jobs/{{longJobId}}",
                    status(200)
                    + '\npm.test("canceled", () => pm.expect(pm.response.json().status).to.eql("canceled"));',
                ),
                request(
                    "It stays canceled",
                    "GET",
                    "/v1/jobs/{{longJobId}}",
                    status(200)
                    + '\npm.test("canceled, no images", () => { const j = pm.response.json(); pm.expect(j.status).to.eql("canceled"); pm.expect(j.images).to.have.lengthOf(0); });',
                ),
            ],
        ),
        (
            "Signed URLs",
            [
                request(
                    "Tampered signature",
                    "GET",
                    "{{baseUrl}}/v1/blobs/images/x/y/0.png?expires=1&sig=" + "0" * 64,
                    # 403 where the API serves images; 404 where Cloud Storage does.
                    'pm.test("refused", () => pm.expect(pm.response.code).to.eql('
                    'pm.collectionVariables.get("tamperedUrl") ? 403 : 404));' + PROBLEM,
                    auth=None,
                    prerequest='if (pm.collectionVariables.get("tamperedUrl")) { pm.request.url = pm.collectionVariables.get("tamperedUrl"); }',
                ),
            ],
        ),
    ]
    return {
        "info": {
            "name": "txt2img API v1",
            "description": "Every route of the API, happy and unhappy paths. Variables: baseUrl, apiKey, otherKey (a key of another owner).",
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "item": [{"name": name, "item": items} for name, items in folders],
        "variable": [
            {"key": k, "value": ""}
            for k in ("jobId", "longJobId", "idemKey", "imageUrl", "tamperedUrl", "polls")
        ],
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    COLLECTION.write_text(render())
    print(COLLECTION)
