"""The features: one extractor, the same row by row and in batches (DESIGN.md contract 1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.features import (
    FEATURE_NAMES,
    HASH_BUCKETS,
    N_ORIGINAL,
    ORIGINAL_FEATURES,
    TOKEN_FEATURES,
    FeatureBatch,
    extract,
    extract_batch,
    extract_one,
    normalise_text,
    token_bucket,
    token_buckets,
)

pytestmark = pytest.mark.unit


def feature(row: list[float] | np.ndarray, name: str) -> float:
    return float(row[FEATURE_NAMES.index(name)])


def test_the_25_original_features_come_first_in_their_order_then_the_tokens() -> None:
    assert len(ORIGINAL_FEATURES) == N_ORIGINAL == 25
    assert FEATURE_NAMES == ORIGINAL_FEATURES + TOKEN_FEATURES
    assert len(TOKEN_FEATURES) == HASH_BUCKETS
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
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
    assert FEATURE_NAMES[24] == "kw_grocery"


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
    assert batch.shape == (len(rows), len(FEATURE_NAMES))
    assert batch.dtype == np.float64
    for i, (m, d, a) in enumerate(rows):
        np.testing.assert_array_equal(batch[i], np.asarray(extract_one(m, d, a)))


def test_extract_batch_refuses_columns_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        extract_batch(["a"], ["b", "c"], [1.0])


def token_part(row: list[float] | np.ndarray) -> set[int]:
    return {i for i, v in enumerate(row[N_ORIGINAL:]) if v == 1.0}


def test_token_features_are_the_hashed_words_and_word_pairs_of_merchant_and_memo() -> None:
    row = extract_one("Blue-Bottle Coffee #0042", "oat latte", -6.5)
    expected = {
        token_bucket(t)
        for t in (
            "m:blue", "m:bottle", "m:coffee", "m:blue bottle", "m:bottle coffee",
            "d:oat", "d:latte", "d:oat latte",
        )
    }  # fmt: skip
    assert token_part(row) == expected == token_buckets("Blue-Bottle Coffee #0042", "oat latte")
    assert all(v in (0.0, 1.0) for v in row[N_ORIGINAL:])


def test_store_numbers_do_not_change_the_token_features() -> None:
    a = extract_one("SHELL OIL 57442", "", -40.0)
    b = extract_one("SHELL OIL 10233", "", -40.0)
    assert token_part(a) == token_part(b) != set()


def test_merchant_and_memo_words_are_different_tokens() -> None:
    assert token_buckets("uber", "") != token_buckets("", "uber")


def test_empty_text_sets_no_token_feature() -> None:
    assert token_part(extract_one("", "", 1.0)) == set()
    assert token_part(extract_one("#### 1234", "--", 1.0)) == set()


def test_token_features_do_not_depend_on_the_process_hash_seed() -> None:
    """Training and serving run in different processes: the hash must not be ``hash()``."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "from service.features import token_buckets;"
        "print(sorted(token_buckets('WHOLEFDS MKT 10233', 'weekly grocery run')))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{sorted(token_buckets('WHOLEFDS MKT 10233', 'weekly grocery run'))}\n"}


def test_a_feature_batch_is_immutable_and_takes_rows_in_the_given_order() -> None:
    merchants, memos, amounts = (
        ["UBER *TRIP", "NETFLIX.COM", "SHELL OIL"],
        ["", "", ""],
        [-1.0, -2.0, -3.0],
    )
    batch = extract(merchants, memos, amounts, [None, "4899", None])
    assert len(batch) == 3
    with pytest.raises(ValueError, match="read-only"):
        batch.dense[0, 0] = 5.0
    picked = batch.take([2, 0, 2])
    assert len(picked) == 3
    np.testing.assert_array_equal(picked.dense, batch.dense[[2, 0, 2]])
    joined = FeatureBatch.concat([batch.take([1]), picked])
    np.testing.assert_array_equal(joined.dense, batch.dense[[1, 2, 0, 2]])
    one = extract(merchants[:1], memos[:1], amounts[:1])
    np.testing.assert_array_equal(one.dense, batch.dense[:1])


def test_extract_refuses_columns_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        extract(["a", "b"], ["", ""], [1.0, 2.0], ["5411"])
