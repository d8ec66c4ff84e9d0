"""Request and response models of the HTTP API (validated once, where requests enter).

Requests are strict: unknown fields are refused (``extra="forbid"``), types are not coerced
(``"12.5"`` is not an amount, ``1`` is not a string), strings are length-bounded and amounts
must be finite. A refused request gets 422 with the field and the reason, never a 500; a
batch above :data:`MAX_BATCH` transactions or a body above :data:`MAX_BODY_BYTES` gets 413.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.categories import is_known_mcc, is_mcc_syntax
from service.events import MAX_EVENT_ID_LENGTH
from service.metric_names import FeedbackOutcome, Source

MAX_BATCH: Final = 1000
"""Most transactions in one request; more -> 413."""
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
"""Largest request body; more -> 413."""
MAX_AMOUNT: Final = 1e12

_STRICT = ConfigDict(extra="forbid", strict=True)

TransactionId = Annotated[str, Field(min_length=1, max_length=128)]


def _known_mcc(code: str) -> str:
    if not is_mcc_syntax(code):
        raise ValueError("an MCC is four digits (ISO 18245), e.g. '5411'")
    if not is_known_mcc(code):
        raise ValueError(f"{code!r} is not an ISO 18245 merchant category code")
    return code


MerchantCategoryCode = Annotated[str, AfterValidator(_known_mcc)]


class Transaction(BaseModel):
    """One card or bank transaction to categorise."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "txn-0001",
                    "merchant": "WHOLEFDS MKT #10233",
                    "memo": "weekly grocery run",
                    "amount": -54.2,
                    "user_id": "u-1842",
                    "mcc": "5411",
                }
            ]
        },
    )

    id: TransactionId = Field(description="the caller's id of the transaction, echoed back")
    merchant: str = Field(max_length=256, description="merchant as on the statement")
    memo: str = Field(default="", max_length=1024, description="free text, may be empty")
    amount: float = Field(
        ge=-MAX_AMOUNT,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="spending negative, income positive",
    )
    user_id: str = Field(
        min_length=1,
        max_length=128,
        description="the user (or tenant) whose answers stay on one model: the canary key",
    )
    mcc: MerchantCategoryCode | None = Field(
        default=None,
        description="ISO 18245 merchant category code as the card feed gives it (four "
        "digits); absent or null when the feed has none",
    )


class SuggestionsRequest(BaseModel):
    model_config = _STRICT

    transactions: list[Transaction] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1..{MAX_BATCH} transactions; answers come back in the same order",
    )


class Candidate(BaseModel):
    label: str
    confidence: float = Field(ge=0.0, le=1.0)


class Suggestion(BaseModel):
    id: str = Field(description="the transaction's id")
    candidates: list[Candidate] = Field(description="best first, at most top_k, at least one")
    served_by: Source
    model_version: str | None = Field(description="the version that answered; null for rules")
    rule: str | None = Field(description="the rule that answered; null for a model")
    event_id: str = Field(description="quote it in POST /v1/feedback")


class SuggestionsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "generation": 7,
                    "suggestions": [
                        {
                            "id": "txn-0001",
                            "candidates": [
                                {"label": "Groceries", "confidence": 0.93},
                                {"label": "Shopping", "confidence": 0.04},
                            ],
                            "served_by": "stable",
                            "model_version": "20260101T000000Z-ab12cd34",
                            "rule": None,
                            "event_id": (
                                "e2.WyJzdGFibGUiLCIyMDI2IiwiR3JvY2VyaWVzIl0.1796234133.c2VjcmV0bm9u"
                            ),
                        }
                    ],
                }
            ]
        }
    )

    generation: int = Field(description="the serving-configuration generation that answered")
    suggestions: list[Suggestion]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "event_id": (
                        "e2.WyJzdGFibGUiLCIyMDI2IiwiR3JvY2VyaWVzIl0.1796234133.c2VjcmV0bm9uY2Ux"
                    ),
                    "accepted_label": "Groceries",
                }
            ]
        },
    )

    event_id: str = Field(
        min_length=1, max_length=MAX_EVENT_ID_LENGTH, description="from the suggestion"
    )
    accepted_label: str = Field(
        min_length=1, max_length=128, description="the category the user kept or chose"
    )


class FeedbackResponse(BaseModel):
    outcome: FeedbackOutcome = Field(description="accepted when the user kept the top-1")
    served_by: Source
    model_version: str | None
    suggested: str = Field(description="the top-1 that was suggested")


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: list[ErrorDetail]


class MessageResponse(BaseModel):
    detail: str


class ModelInfo(BaseModel):
    role: Source
    version: str
    load_seconds: float
    scorer: str = Field(description="lightgbm, or compiled once the trees are compiled")
    scorer_detail: str
    manifest: dict[str, Any]


class ServingDescription(BaseModel):
    pod: str
    ready: bool
    generation: int
    rollout: str | None
    applied_at: str | None
    config: dict[str, Any]
    models: list[ModelInfo]
    load_errors: dict[str, str] = Field(description="version -> why it does not serve")
    models_root: str
    config_source: dict[str, Any]
    report: dict[str, Any] | None
    shadow: ShadowStatus


class ShadowStatus(BaseModel):
    evaluated_in: str = Field(description="process (the default) or thread")
    scheduling: str = Field(description="idle, nice 19, normal, or not started")
    pid: int | None = Field(description="the shadow's process, once started")
    process_starts: int
    process_lost: int = Field(description="shadow processes that died (each a model error)")
    process_scorers: dict[str, str] = Field(
        description="version -> what scores it in the shadow's process: lightgbm or compiled"
    )
    compared_rows: int
    shed_rows: int
    pending_rows: int


class Probe(BaseModel):
    status: str
    reason: str | None = None
