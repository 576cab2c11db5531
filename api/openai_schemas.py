"""Bodies of the OpenAI dialect, as OpenAI's API reference spells them (the `openai` SDK's
`types/image_generate_params.py`, `types/images_response.py` and `types/model.py` say the
same):

- Create image, `POST /images/generations` (request body, and the `ImagesResponse` it
  returns): https://developers.openai.com/api/reference/cli/resources/images/ and
  https://developers.openai.com/api/reference/go/resources/images/methods/generate;
- List models, `GET /models`:
  https://developers.openai.com/api/reference/cli/resources/models/methods/list/;
- the error object `{"error": {"message", "type", "param", "code"}}`:
  https://developers.openai.com/docs/guides/error-codes.

Every documented request field is accepted (nullable, as the SDK types them); what each one
does here is in `api/openai_mapping.py` and docs/api.md. Unknown fields and wrong JSON
types are refused, as on the native API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EXAMPLE_IMAGE_REQUEST: dict[str, Any] = {
    "prompt": "a lighthouse on a cliff at dawn, oil painting",
    "model": "tiny-sd",
    "n": 1,
    "size": "512x512",
    "response_format": "url",
}


class ImageGenerationIn(BaseModel):
    """OpenAI's Create image request."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [EXAMPLE_IMAGE_REQUEST]}
    )

    prompt: str = Field(description="1-1000 characters, as `prompt` of `POST /v1/jobs`.")
    model: str | None = Field(
        default=None, description="The served model's id (`GET /v1/models`); default: it."
    )
    n: int | None = Field(
        default=None, description="Images to generate: 1-4 (`num_images`); default 1."
    )
    size: str | None = Field(
        default=None,
        description="`WIDTHxHEIGHT`, each side 64-1024 in multiples of 8; `auto` or left out: "
        "the model's own size.",
    )
    response_format: Literal["url", "b64_json"] | None = Field(
        default=None, description="`url` (default): signed URLs; `b64_json`: the PNG inline."
    )
    user: str | None = Field(default=None, description="Accepted and ignored.")
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = Field(
        default=None, description="Accepted and ignored (steps: DEFAULT_STEPS)."
    )
    style: Literal["vivid", "natural"] | None = Field(
        default=None, description="Accepted and ignored."
    )
    background: Literal["transparent", "opaque", "auto"] | None = Field(
        default=None, description="`opaque` or `auto`; images are opaque, `transparent` is a 400."
    )
    moderation: Literal["low", "auto"] | None = Field(
        default=None, description="Accepted and ignored."
    )
    output_format: Literal["png", "jpeg", "webp"] | None = Field(
        default=None, description="`png` only (the images are PNG); `jpeg` and `webp` are a 400."
    )
    output_compression: int | None = Field(
        default=None, ge=0, le=100, description="Accepted and ignored (PNG is lossless)."
    )
    partial_images: int | None = Field(
        default=None, ge=0, le=3, description="Accepted and ignored (no streaming)."
    )
    stream: bool | None = Field(default=None, description="`false` only; `true` is a 400.")


class ImageDataOut(BaseModel):
    """One image: `url` or `b64_json`, never both (the other key is left out)."""

    url: str | None = Field(
        default=None, description="Signed URL; GET it without credentials before it expires."
    )
    b64_json: str | None = Field(default=None, description="The PNG, base64-encoded.")


class ImagesOut(BaseModel):
    """OpenAI's ImagesResponse."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "created": 1795834859,
                    "data": [
                        {"url": "https://api.example.com/v1/blobs/images/ab12/0f8c/0.png?..."}
                    ],
                }
            ]
        }
    )

    created: int = Field(description="Unix seconds when the job behind the images ended.")
    data: list[ImageDataOut]


class ModelOut(BaseModel):
    id: str = Field(description="Pass as `model` to `POST /v1/images/generations`.")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds when this API process started serving it.")
    owned_by: str


class ModelListOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "tiny-sd",
                            "object": "model",
                            "created": 1795834859,
                            "owned_by": "txt2img",
                        }
                    ],
                }
            ]
        }
    )

    object: Literal["list"] = "list"
    data: list[ModelOut]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error`, `requests`, `server_error`, ...")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="Stable, machine-readable: branch on it.")


class OpenAIErrorOut(BaseModel):
    """OpenAI's error object: every error on `/v1/images/...` and `/v1/models` has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "message": "size: '1000x1000' is not a supported size: ...",
                        "type": "invalid_request_error",
                        "param": "size",
                        "code": "invalid_value",
                    }
                }
            ]
        }
    )

    error: OpenAIErrorDetail
