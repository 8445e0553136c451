"""The charging API's shapes, as pydantic schemas: what /api/v1/openapi.json publishes.

Request bodies are documented here but validated by billing.api's Django forms, so every
refusal keeps its exact message and the one error shape (all fields' problems at once, unknown
fields named, JSON strings only); query strings are validated by these schemas.
"""

from datetime import UTC, datetime

from ninja import Schema
from pydantic import ConfigDict, Field, field_validator

from .models import ChargeIssue

# PostgreSQL's bigint: a larger id cannot name a row (and must not reach the query).
MAX_ID = 2**63 - 1


class Error(Schema):
    """Every error answer: a message to show, a stable code, and for 400 "invalid" the
    problems per field."""

    error: str
    code: str
    fields: dict[str, list[str]] | None = None
    existing_id: int | None = Field(
        None, description="reference_in_use (409): the live charge that has this reference."
    )


class ChargeIssueCreate(Schema):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(
        max_length=100,
        description='The customer\'s number in your system, or "id:<our id>".',
        examples=["0283759"],
    )
    amount: str | None = Field(
        None,
        max_length=30,
        description="A proposal in major units, plain decimal text (e.g. 12.34); a clerk "
        "confirms it and someone else approves it.",
        examples=["12.34"],
    )
    currency: str | None = Field(
        None,
        max_length=3,
        description="ISO 4217; default: the space's currency.",
        examples=["EUR"],
    )
    notification_subject: str | None = Field(None, max_length=200)
    notification_body: str | None = None
    reference: str | None = Field(
        None,
        max_length=100,
        description="Your reference (e.g. an order number): one live charge per reference.",
    )


class ChargeIssueOut(Schema):
    id: int
    state: ChargeIssue.State
    customer: str = Field(description='Your customer number, else "id:<our id>".')
    amount_minor: int | None
    refunded_minor: int = Field(
        0, description="How much of the charge has been refunded so far (minor units)."
    )
    currency: str
    reference: str
    admin_url: str


class ChargeIssuePage(Schema):
    data: list[ChargeIssueOut]
    next_cursor: str | None = Field(
        description="Send as `cursor` (with the same filters) for the next page; null on the "
        "last page."
    )


class ChargeIssueEventOut(Schema):
    id: int
    action: str
    from_state: str
    to_state: str
    comment: str
    created_at: datetime


class ChargeIssueEventList(Schema):
    data: list[ChargeIssueEventOut]


class ChargeIssueFilters(Schema):
    state: ChargeIssue.State | None = None
    customer: str | None = Field(None, max_length=100, description="As in a start's body.")
    reference: str | None = Field(None, max_length=100)
    created_after: datetime | None = Field(None, description="Created at or after (ISO 8601).")
    created_before: datetime | None = Field(None, description="Created before (ISO 8601).")
    cursor: str | None = Field(None, max_length=500)
    limit: int = Field(50, ge=1, le=100)

    @field_validator("created_after", "created_before")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        """Aware and in UTC (a time without an offset is UTC); one the database cannot hold
        after the shift (year 1 or 9999 at the edge of an offset) is refused, not a 500."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("This date is out of range.") from None

    @field_validator("customer", "reference", "cursor")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("Null characters are not allowed.")
        return value
