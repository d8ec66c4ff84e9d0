"""The features: one extractor, the same row by row and in batches (DESIGN.md contract 1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.features import FEATURE_NAMES, extract_batch, extract_one, normalise_text

pytestmark = pytest.mark.unit


def feature(row: list[float] | np.ndarray, name: str) -> float:
    return float(row[FEATURE_NAMES.index(name)])


def test_there_are_25_named_features_in_the_original_order() -> None:
    assert len(FEATURE_NAMES) == 25
    assert FEATURE_NAMES[:6] == (
        "amount",
        "amount_abs",
        "is_negative",
        "is_positive",
        "merchant_len",
        "memo_len",
    )
    assert FEATURE_NAMES[6] == "kw_amazon"
    assert FEATURE_NAMES[14] == "kw_whole_foods"
    assert FEATURE_NAMES[-1] == "kw_grocery"


@pytest.mark.parametrize(
    ("merchant", "memo", "keyword", "expected"),
    [
        ("WHOLEFOODS MKT #123", "", "kw_whole_foods", 1.0),  # written without its space
        ("Whole-Foods Market", "", "kw_whole_foods", 1.0),  # punctuation folds to a space
        ("WHOLE  FOODS", "", "kw_whole_foods", 1.0),  # runs of spaces fold to one
        ("WHOLEFDS MKT", "", "kw_whole_foods", 0.0),  # abbreviations are not the keyword
        ("AMAZON.COM*2X4", "", "kw_amazon", 1.0),
        ("amzn mktp", "", "kw_amazon", 0.0),
        ("", "UBER trip", "kw_uber", 1.0),  # the memo counts as well as the merchant
        ("SQ *BLUE BOTTLE", "Coffee w/ team", "kw_coffee", 1.0),
        ("PG&E", "gas and electric", "kw_gas", 1.0),
        ("TARGET.COM", "", "kw_target", 1.0),
        ("ZELLE TO J", "rent", "kw_rent", 1.0),
        # Substrings count (the original's behaviour, kept for the trained models).
        ("CURRENT ACCOUNT", "", "kw_rent", 1.0),
        ("", "", "kw_grocery", 0.0),
    ],
)
def test_keyword_features(merchant: str, memo: str, keyword: str, expected: float) -> None:
    assert feature(extract_one(merchant, memo, -1.0), keyword) == expected


@pytest.mark.parametrize(
    ("amount", "negative", "positive"), [(-3.5, 1.0, 0.0), (0.0, 0.0, 0.0), (12.0, 0.0, 1.0)]
)
def test_amount_features(amount: float, negative: float, positive: float) -> None:
    row = extract_one("X", "", amount)
    assert feature(row, "amount") == amount
    assert feature(row, "amount_abs") == abs(amount)
    assert (feature(row, "is_negative"), feature(row, "is_positive")) == (negative, positive)


def test_lengths_count_characters_as_written() -> None:
    row = extract_one("Café Ünïcode", "  memo ", 1.0)
    assert feature(row, "merchant_len") == len("Café Ünïcode")
    assert feature(row, "memo_len") == 7


def test_normalise_text_folds_case_and_punctuation() -> None:
    assert normalise_text("  Whole-Foods MKT #10233 ") == "whole foods mkt 10233"
    assert normalise_text("***") == ""


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["AMAZON", "whole foods", "UBER *EATS", "coffee", "rent", "Zelle", ""]
)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(text, text, st.floats(allow_nan=False, allow_infinity=False, width=64)),
        min_size=1,
        max_size=20,
    )
)
def test_extract_batch_equals_extract_one_row_by_row(rows: list[tuple[str, str, float]]) -> None:
    merchants, memos, amounts = (list(c) for c in zip(*rows, strict=True))
    batch = extract_batch(merchants, memos, amounts)
    assert batch.shape == (len(rows), 25)
    assert batch.dtype == np.float64
    for i, (m, d, a) in enumerate(rows):
        np.testing.assert_array_equal(batch[i], np.asarray(extract_one(m, d, a)))


def test_extract_batch_refuses_columns_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        extract_batch(["a"], ["b", "c"], [1.0])
