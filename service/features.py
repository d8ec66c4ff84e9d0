"""The features: one source of truth for training and serving.

Training imports :data:`FEATURE_NAMES` and :func:`extract_batch`; serving imports the same.
A model artifact records the feature list it was trained with (``manifest.json``), and
serving refuses an artifact whose list differs from :data:`FEATURE_NAMES`.

:data:`FEATURE_NAMES` is :data:`ORIGINAL_FEATURES` followed by :data:`TOKEN_FEATURES`.

The 25 original features of the original system, in this exact order:

- amount, amount_abs, is_negative, is_positive, merchant_len, memo_len
- 11 merchant keywords: amazon, uber, lyft, zelle, venmo, costco, target, walmart,
  whole_foods, netflix, spotify
- 8 category keywords: rent, coffee, lunch, dinner, gas, pharmacy, gym, grocery

A keyword feature is 1.0 when the keyword occurs in the normalised text of merchant and
memo together (lower case, every run of non-alphanumerics folded to one space), either as
written (``"whole foods"``) or with its spaces removed (``"wholefoods"``).

Then :data:`HASH_BUCKETS` hashed token features ``tok_000`` .. ``tok_255``: the words of
the normalised merchant and of the normalised memo (separately: ``"m:uber"`` is not
``"d:uber"``), each word alone and each pair of adjacent words, with words made only of
digits (store numbers, dates) left out; feature ``tok_i`` is 1.0 when some token's
CRC-32 is ``i`` modulo :data:`HASH_BUCKETS` (the hashing trick: no vocabulary to ship,
stable across processes and Python versions). With the 19 keywords alone the model reads
too few words to beat the rule engine; with the tokens it does, by a wide margin
(``benchmarks/bench_features.py``, docs/decisions/0002-training-gate-and-rules.md).

>>> row = extract_one("WHOLEFOODS MKT #123", "weekly grocery run", -54.2)
>>> dict(zip(FEATURE_NAMES, row))["kw_whole_foods"], dict(zip(FEATURE_NAMES, row))["kw_grocery"]
(1.0, 1.0)
>>> dict(zip(FEATURE_NAMES, row))["is_negative"]
1.0
>>> sorted(token_buckets("UBER *TRIP 0412", "")) == sorted(
...     token_bucket(t) for t in ("m:uber", "m:trip", "m:uber trip"))
True
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
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

ORIGINAL_FEATURES: Final[tuple[str, ...]] = (
    *NUMERIC_FEATURES,
    *(f"kw_{k.replace(' ', '_')}" for k in MERCHANT_KEYWORDS),
    *(f"kw_{k}" for k in CATEGORY_KEYWORDS),
)
assert len(ORIGINAL_FEATURES) == 25

HASH_BUCKETS: Final = 256
TOKEN_FEATURES: Final[tuple[str, ...]] = tuple(f"tok_{i:03d}" for i in range(HASH_BUCKETS))

FEATURE_NAMES: Final[tuple[str, ...]] = ORIGINAL_FEATURES + TOKEN_FEATURES
N_ORIGINAL: Final = len(ORIGINAL_FEATURES)

_KEYWORDS: Final = MERCHANT_KEYWORDS + CATEGORY_KEYWORDS
_KEYWORD_FORMS: Final = tuple((k, k.replace(" ", "")) for k in _KEYWORDS)
_NON_ALNUM = re.compile(r"[^0-9a-z]+")

FeatureMatrix = npt.NDArray[np.float64]

FEATURE_VERSION: Final = 1
"""Version of the feature code. Bump it whenever the same inputs would give other feature
values (normalisation, tokens, keyword forms, MCC table): serving refuses an artifact whose
``feature_version`` differs, since a model trained on other values answers wrongly with no
error (docs/decisions/0008-scorer-interface.md)."""


def normalise_text(text: str) -> str:
    """Lower case, every run of non-alphanumerics folded to one space, stripped.

    >>> normalise_text("  Whole-Foods MKT #10233 ")
    'whole foods mkt 10233'
    """
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def token_bucket(token: str) -> int:
    """The hashed feature a token sets: CRC-32 of its UTF-8 bytes modulo :data:`HASH_BUCKETS`."""
    return zlib.crc32(token.encode()) % HASH_BUCKETS


def _tokens(prefix: str, normalised: str) -> list[str]:
    words = [w for w in normalised.split(" ") if w and not w.isdigit()]
    tokens = [f"{prefix}{w}" for w in words]
    tokens.extend(f"{prefix}{a} {b}" for a, b in pairwise(words))
    return tokens


def _row_parts(merchant: str, memo: str) -> tuple[list[float], set[int]]:
    """Keyword flags and hashed token buckets of one transaction (text normalised once)."""
    m, d = normalise_text(merchant), normalise_text(memo)
    text = f" {m} {d} "
    compact = text.replace(" ", "")
    flags = [1.0 if (k in text or c in compact) else 0.0 for k, c in _KEYWORD_FORMS]
    buckets = {token_bucket(t) for t in _tokens("m:", m) + _tokens("d:", d)}
    return flags, buckets


def token_buckets(merchant: str, memo: str) -> set[int]:
    """Indices (into :data:`TOKEN_FEATURES`) of the token features that are 1.0."""
    return _row_parts(merchant, memo)[1]


def extract_one(merchant: str, memo: str, amount: float) -> list[float]:
    """The features of one transaction, in :data:`FEATURE_NAMES` order."""
    flags, buckets = _row_parts(merchant, memo)
    tokens = [0.0] * HASH_BUCKETS
    for i in buckets:
        tokens[i] = 1.0
    return [
        float(amount),
        abs(float(amount)),
        1.0 if amount < 0 else 0.0,
        1.0 if amount > 0 else 0.0,
        float(len(merchant)),
        float(len(memo)),
        *flags,
        *tokens,
    ]


def extract_batch(
    merchants: Sequence[str],
    memos: Sequence[str],
    amounts: Sequence[float] | npt.NDArray[np.floating],
) -> FeatureMatrix:
    """The feature matrix of a batch, shape ``(n, len(FEATURE_NAMES))``, rows in input order.

    Equal, row by row, to :func:`extract_one` (a unit test holds it to that).
    """
    n = len(merchants)
    if len(memos) != n or len(amounts) != n:
        raise ValueError(
            f"merchants, memos and amounts differ in length: {n}, {len(memos)}, {len(amounts)}"
        )
    out = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float64)
    amt = np.asarray(amounts, dtype=np.float64)
    out[:, 0] = amt
    out[:, 1] = np.abs(amt)
    out[:, 2] = amt < 0
    out[:, 3] = amt > 0
    out[:, 4] = [len(m) for m in merchants]
    out[:, 5] = [len(m) for m in memos]
    rows: list[int] = []
    cols: list[int] = []
    flags: list[list[float]] = []
    for r, (merchant, memo) in enumerate(zip(merchants, memos, strict=True)):
        row_flags, buckets = _row_parts(merchant, memo)
        flags.append(row_flags)
        rows.extend([r] * len(buckets))
        cols.extend(buckets)
    if n:
        out[:, 6:N_ORIGINAL] = flags
    out[rows, [N_ORIGINAL + c for c in cols]] = 1.0
    return out


@dataclass(frozen=True, slots=True, eq=False)
class FeatureBatch:
    """The features of a batch of transactions: what every model of a request scores.

    Immutable (its arrays are read-only), so it can be handed to another thread while the
    request goes on. Only this module and ``service/models.py`` look inside: ``dense`` is
    the ``(n, len(FEATURE_NAMES))`` float64 block in :data:`FEATURE_NAMES` order.
    """

    dense: FeatureMatrix

    def __post_init__(self) -> None:
        if self.dense.ndim != 2 or self.dense.shape[1] != len(FEATURE_NAMES):
            raise ValueError(
                f"dense features must be (n, {len(FEATURE_NAMES)}), got {self.dense.shape}"
            )
        self.dense.setflags(write=False)

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def take(self, rows: Sequence[int]) -> FeatureBatch:
        """The given rows, in that order (a row may repeat)."""
        return FeatureBatch(self.dense[np.asarray(rows, dtype=np.intp)])

    @staticmethod
    def concat(batches: Sequence[FeatureBatch]) -> FeatureBatch:
        """The rows of ``batches``, in order (the shadow queue joins requests with it)."""
        if len(batches) == 1:
            return batches[0]
        return FeatureBatch(np.vstack([b.dense for b in batches]))


def extract(
    merchants: Sequence[str],
    memos: Sequence[str],
    amounts: Sequence[float] | npt.NDArray[np.floating],
    mccs: Sequence[str | None] | None = None,
) -> FeatureBatch:
    """The features of a batch, rows in input order: the one constructor of
    :class:`FeatureBatch`, for training and serving alike.

    ``mccs`` holds each row's ISO 18245 code or None (``None`` or empty: no row has one).
    """
    n = len(merchants)
    if len(memos) != n or len(amounts) != n or (mccs is not None and len(mccs) not in (0, n)):
        raise ValueError(
            f"merchants, memos, amounts and mccs differ in length: {n}, {len(memos)}, "
            f"{len(amounts)}, {len(mccs) if mccs is not None else '-'}"
        )
    if n == 1:
        row = extract_one(merchants[0], memos[0], float(amounts[0]))
        return FeatureBatch(np.array([row], dtype=np.float64))
    return FeatureBatch(extract_batch(merchants, memos, amounts))
