"""What the API's operations take and answer, as the OpenAPI document describes them.

Field names are the JSON's own (camelCase), so that a schema reads as the body it
describes.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal

from ninja import Field, Schema
from pydantic import field_validator
from pydantic.config import JsonDict

from generations.filters import ASPECT_PATTERN, SIZE_PATTERN

# Ids are positive, and fit the database's bigint.
MAX_ID = 2**63 - 1
MAX_PAGE = 200
DATE_TIME: JsonDict = {"format": "date-time"}
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
# The values of GenerationResult.Status and .StorageStatus ("none": no image), which a
# test holds to the model's choices.
ResultStatus = Literal["SUCCESS", "FAILED"]
StorageStatus = Literal["pending", "storing", "stored", "failed", "expired"]
StorageFilter = Literal[StorageStatus, "none"]


class ErrorDetail(Schema):
    code: str = Field(description="A stable word for programs: `invalid`, `not_found`, ...")
    message: str = Field(description="What went wrong, for people.")
    field: str | None = Field(None, description="The input at fault, when one is.")


class ErrorBody(Schema):
    """Every error the API answers, whatever its status."""

    error: ErrorDetail


class ResultError(Schema):
    code: str
    message: str


class ResultOut(Schema):
    """One image a model made (or failed to make) for a generation."""

    id: int
    model: str = Field(description="The upstream model id.")
    modelName: str | None
    status: ResultStatus
    imageUrl: str | None = Field(description="The stable image URL, whichever storage holds it.")
    externalImageUrl: str | None
    externalImageUrlExpiresAt: str | None = Field(json_schema_extra=DATE_TIME)
    storageStatus: StorageStatus | None
    thumbnailUrl: str | None = Field(description="Null until the thumbnail is made.")
    storageError: str | None
    lost: bool = Field(description="Not stored, and the image cannot be fetched any more.")
    paramsUsed: dict[str, Any]
    error: ResultError | None
    favorite: bool
    tags: list[str]
    width: int | None = Field(description="Of the stored image; null until stored.")
    height: int | None
    sha256: str | None
    createdAt: str = Field(json_schema_extra=DATE_TIME)
    generationId: int


class ResultPage(Schema):
    results: list[ResultOut] = Field(description="Newest first.")
    next: str | None = Field(
        description="The `cursor` of the next (older) page; null on the last page."
    )


class ResultFilters(Schema):
    """The filters of the gallery, as query parameters; every one narrows the list."""

    q: str | None = Field(None, max_length=200, description="Prompt text contains (any case).")
    since: date | None = Field(None, description="Made on or after this day.")
    until: date | None = Field(None, description="Made on or before this day.")
    model: int | None = Field(None, ge=1, le=MAX_ID, description="A model's id.")
    storage: StorageFilter | None = Field(
        None, description="Storage status; `none` for results with no image."
    )
    status: ResultStatus | None = Field(None, description="Result status.")
    favorite: bool | None = Field(None, description="Starred only (true).")
    tag: str | None = Field(None, max_length=100, description="Carries this tag (any case).")
    size: str | None = Field(
        None, pattern=SIZE_PATTERN, description="Stored size, e.g. `2048x2048`."
    )
    aspect: str | None = Field(
        None, pattern=ASPECT_PATTERN, description="Stored aspect, e.g. `16:9`."
    )
    seed: int | None = Field(None, ge=-1, le=2_147_483_647, description="The seed sent.")
    reference: Literal["with", "without"] | None = Field(
        None, description="`with`: image-to-image only; `without`: text-to-image only."
    )
    cursor: str | None = Field(
        None,
        # `next` is a result's id: 18 digits keep every one the database holds in range.
        pattern=r"^[1-9][0-9]{0,17}$",
        description="`next` of the previous page; none for the newest.",
    )
    limit: int = Field(50, ge=1, le=MAX_PAGE, description=f"Results a page, up to {MAX_PAGE}.")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _a_day(cls, value: object) -> object:
        """A day as the document says it, `2026-01-31`: not a number of seconds, which
        would otherwise read as a day in 1970."""
        if isinstance(value, str) and not _DAY.fullmatch(value):
            raise ValueError("enter a day as YYYY-MM-DD")
        return value


class Usage(Schema):
    generatedImages: int | None
    outputTokens: int | None


class Cost(Schema):
    amount: str = Field(description="A decimal number, to the cent: `0.06`.")
    currency: str


class GenerationOut(Schema):
    """A generation: one prompt sent to one or more models, and each model's results."""

    generationId: int
    status: Literal["running", "done", "interrupted"]
    prompt: str
    createdAt: str = Field(json_schema_extra=DATE_TIME)
    usage: Usage | None = Field(description="What Ark counted; null when it sent nothing.")
    cost: Cost | None = Field(description="Null when a model has no price.")
    results: list[ResultOut]


class TagCount(Schema):
    name: str
    count: int


class TagList(Schema):
    tags: list[TagCount]


# What every operation may answer besides its own success, in the one error body.
ERRORS: dict[int, type[Schema]] = {
    400: ErrorBody,
    401: ErrorBody,
    403: ErrorBody,
    404: ErrorBody,
    405: ErrorBody,
}
