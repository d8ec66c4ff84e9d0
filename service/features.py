"""The features: one source of truth for training and serving.

Training imports :data:`FEATURE_NAMES` and :func:`extract_batch`; serving imports the same.
A model artifact records the feature list it was trained with (``manifest.json``), and
serving refuses an artifact whose list differs from :data:`FEATURE_NAMES`.

The 25 features of the original system, in this exact order:

- amount, amount_abs, is_negative, is_positive, merchant_len, memo_len
- 11 merchant keywords: amazon, uber, lyft, zelle, venmo, costco, target, walmart,
  whole_foods, netflix, spotify
- 8 category keywords: rent, coffee, lunch, dinner, gas, pharmacy, gym, grocery

A keyword feature is 1.0 when the keyword occurs in the normalised text of merchant and
memo together (lower case, every run of non-alphanumerics folded to one space), either as
written (``"whole foods"``) or with its spaces removed (``"wholefoods"``).

>>> row = extract_one("WHOLEFOODS MKT #123", "weekly grocery run", -54.2)
>>> dict(zip(FEATURE_NAMES, row))["kw_whole_foods"], dict(zip(FEATURE_NAMES, row))["kw_grocery"]
(1.0, 1.0)
>>> dict(zip(FEATURE_NAMES, row))["is_negative"]
1.0
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

MERCHANT_KEYWORDS: Final = (
    "amazon",
    "uber",
    "lyft",
    "zelle",
    "venmo",
    "costco",
    "target",
    "walmart",
    "whole foods",
    "netflix",
    "spotify",
)
CATEGORY_KEYWORDS: Final = (
    "rent",
    "coffee",
    "lunch",
    "dinner",
    "gas",
    "pharmacy",
    "gym",
    "grocery",
)

NUMERIC_FEATURES: Final = (
    "amount",
    "amount_abs",
    "is_negative",
    "is_positive",
    "merchant_len",
    "memo_len",
)

FEATURE_NAMES: Final[tuple[str, ...]] = (
    *NUMERIC_FEATURES,
    *(f"kw_{k.replace(' ', '_')}" for k in MERCHANT_KEYWORDS),
    *(f"kw_{k}" for k in CATEGORY_KEYWORDS),
)
assert len(FEATURE_NAMES) == 25

_KEYWORDS: Final = MERCHANT_KEYWORDS + CATEGORY_KEYWORDS
_NON_ALNUM = re.compile(r"[^0-9a-z]+")

FeatureMatrix = npt.NDArray[np.float64]


def normalise_text(text: str) -> str:
    """Lower case, every run of non-alphanumerics folded to one space, stripped.

    >>> normalise_text("  Whole-Foods MKT #10233 ")
    'whole foods mkt 10233'
    """
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def _keyword_flags(merchant: str, memo: str) -> list[float]:
    text = f" {normalise_text(merchant)} {normalise_text(memo)} "
    compact = text.replace(" ", "")
    return [1.0 if (k in text or k.replace(" ", "") in compact) else 0.0 for k in _KEYWORDS]


def extract_one(merchant: str, memo: str, amount: float) -> list[float]:
    """The 25 features of one transaction, in :data:`FEATURE_NAMES` order."""
    return [
        float(amount),
        abs(float(amount)),
        1.0 if amount < 0 else 0.0,
        1.0 if amount > 0 else 0.0,
        float(len(merchant)),
        float(len(memo)),
        *_keyword_flags(merchant, memo),
    ]


def extract_batch(
    merchants: Sequence[str],
    memos: Sequence[str],
    amounts: Sequence[float] | npt.NDArray[np.floating],
) -> FeatureMatrix:
    """The feature matrix of a batch, shape ``(n, 25)``, rows in input order.

    Equal, row by row, to :func:`extract_one` (a unit test holds it to that).
    """
    n = len(merchants)
    if len(memos) != n or len(amounts) != n:
        raise ValueError(
            f"merchants, memos and amounts differ in length: {n}, {len(memos)}, {len(amounts)}"
        )
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    amt = np.asarray(amounts, dtype=np.float64)
    out[:, 0] = amt
    out[:, 1] = np.abs(amt)
    out[:, 2] = amt < 0
    out[:, 3] = amt > 0
    out[:, 4] = [len(m) for m in merchants]
    out[:, 5] = [len(m) for m in memos]
    out[:, 6:] = [_keyword_flags(m, d) for m, d in zip(merchants, memos, strict=True)]
    return out
