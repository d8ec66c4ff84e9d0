"""The features: one extractor, the same row by row and in batches (DESIGN.md contract 1)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.features import (
    BRAND_FEATURES,
    CACHED_BATCH_ROWS,
    FEATURE_NAMES,
    MCC_FEATURES,
    N_ORIGINAL,
    ORIGINAL_FEATURES,
    TEXT_DIMENSIONS,
    FeatureBatch,
    brand_of,
    extract,
    model_feature_names,
    normalise_descriptor,
    normalise_text,
)

pytestmark = pytest.mark.unit


def features(
    merchant: str, memo: str = "", amount: float = -1.0, mcc: str | None = None
) -> dict[str, float]:
    row = extract([merchant], [memo], [amount], [mcc]).dense[0]
    return dict(zip(FEATURE_NAMES, row.tolist(), strict=True))


def test_the_25_original_features_come_first_then_the_mcc_then_the_brand_features() -> None:
    assert len(ORIGINAL_FEATURES) == N_ORIGINAL == 25
    assert FEATURE_NAMES == ORIGINAL_FEATURES + MCC_FEATURES + BRAND_FEATURES
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
    assert MCC_FEATURES[0] == "has_mcc"
    assert BRAND_FEATURES[0] == "brand_known"
    assert model_feature_names(("A", "B")) == (*FEATURE_NAMES, "text_A", "text_B")


@pytest.mark.parametrize(
    ("descriptor", "normalised"),
    [
        ("SQ *BLUE BOTTLE COFFEE 0042 OAKLAND CA", "blue bottle coffee oakland"),
        ("TST* CHIPOTLE 1234", "chipotle"),
        ("PAYPAL *STEAMGAMES", "steamgames"),
        ("POS DEBIT SAFEWAY #1234 SAN FRANCISCO CA", "safeway san francisco"),
        ("CHECKCARD 1102 SHELL OIL 57442", "shell oil"),
        ("PURCHASE AUTHORIZED ON 11/02 WHOLEFDS MKT #10233", "wholefds mkt"),
        ("DEBIT CARD PURCHASE - TARGET T-1234", "target t"),
        ("AMZN MKTP US*2K3GH7", "amzn mktp us"),
        ("UBER *TRIP HELP.UBER.COM", "uber trip help uber com"),
        ("CAFÉ DE FLORE", "café de flore"),  # letters kept, case folded
        ("\uff23\uff21\uff26\uff25 NERO", "cafe nero"),  # full-width (NFKC)
        ("McDonald's F1234", "mcdonald s"),
        ("7-ELEVEN 35417", "eleven"),  # words holding digits go
        ("TRADER JOE'S #552 QPS", "trader joe s qps"),
        ("DD *DOORDASH SWEETGREEN", "doordash sweetgreen"),
        ("LAS VEGAS", "las vegas"),  # two words: no state removed
        ("", ""),
        ("#### 1234 *", ""),
    ],
)
def test_normalisation_strips_processor_noise(descriptor: str, normalised: str) -> None:
    assert normalise_descriptor(descriptor) == normalised


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
        # Whole words only: no substrings.
        ("LAS VEGAS CASINO", "", "kw_gas", 0.0),
        ("CURRENT ACCOUNT", "", "kw_rent", 0.0),
        ("SOCALGAS", "", "kw_gas", 0.0),
        ("TARGETED ADS", "", "kw_target", 0.0),
        ("", "", "kw_grocery", 0.0),
    ],
)
def test_keyword_features_match_whole_words(
    merchant: str, memo: str, keyword: str, expected: float
) -> None:
    assert features(merchant, memo)[keyword] == expected


@pytest.mark.parametrize(
    ("mcc", "expected"),
    [
        (None, {}),
        ("5411", {"has_mcc", "mcc_groceries"}),
        ("5812", {"has_mcc", "mcc_dining"}),
        ("3000", {"has_mcc", "mcc_transportation"}),
        ("6513", {"has_mcc", "mcc_rent"}),
        ("7011", {"has_mcc"}),  # lodging: a code, but no category of the ten
    ],
)
def test_mcc_features(mcc: str | None, expected: set[str]) -> None:
    row = features("ACME", mcc=mcc)
    assert {name for name in MCC_FEATURES if row[name] == 1.0} == set(expected)


@pytest.mark.parametrize(
    ("descriptor", "category"),
    [
        ("PURCHASE AUTHORIZED ON 11/02 CVS/PHARMACY #04821", "healthcare"),
        ("KROGER #512 COLUMBUS OH", "groceries"),
        ("SQ *STARBUCKS STORE 0042", "dining"),
        ("WHOLEFDS MKT #10233", None),  # an abbreviation the lexicon does not list
        ("ZQX WIDGETS 0042", None),
    ],
)
def test_brand_features_name_the_shipped_lexicons_category(
    descriptor: str, category: str | None
) -> None:
    got = features(descriptor)
    flags = {name for name in BRAND_FEATURES[1:] if got[name]}
    assert got["brand_known"] == (category is not None)
    assert flags == ({f"brand_{category}"} if category else set())


def test_brand_features_read_the_table_they_are_given() -> None:
    """Training keeps the lexicon from knowing held-out brands: a table without a brand
    gives that brand's rows no brand feature, a table given another category says so."""
    row = ["POS DEBIT KROGER #512"]
    without = extract(row, [""], [-5.0], None, {}).dense[0]
    other = extract(row, [""], [-5.0], None, {"kroger": "Dining"}).dense[0]
    named = dict(zip(FEATURE_NAMES, other.tolist(), strict=True))
    assert not any(without[FEATURE_NAMES.index(n)] for n in BRAND_FEATURES)
    assert named["brand_known"] == named["brand_dining"] == 1.0
    assert named["brand_groceries"] == 0.0


def test_brand_lookup_prefers_the_longest_key_and_joins_words() -> None:
    table = {"whole": "Shopping", "wholefoods": "Groceries", "bestbuy": "Shopping"}
    assert brand_of(table, "whole foods market") == "Groceries"
    assert brand_of(table, "whole earth") == "Shopping"
    assert brand_of(table, "best buy") == "Shopping"
    assert brand_of(table, "ab") is None
    assert brand_of({}, "whole foods") is None


@pytest.mark.parametrize(
    ("amount", "negative", "positive"), [(-3.5, 1.0, 0.0), (0.0, 0.0, 0.0), (12.0, 0.0, 1.0)]
)
def test_amount_features(amount: float, negative: float, positive: float) -> None:
    row = features("X", amount=amount)
    assert row["amount"] == amount
    assert row["amount_abs"] == abs(amount)
    assert (row["is_negative"], row["is_positive"]) == (negative, positive)


def test_lengths_count_characters_as_written() -> None:
    row = features("Café Ünïcode", "  memo ")
    assert row["merchant_len"] == len("Café Ünïcode")
    assert row["memo_len"] == 7


def test_normalise_text_folds_case_and_punctuation() -> None:
    assert normalise_text("  Whole-Foods MKT #10233 ") == "whole foods mkt 10233"
    assert normalise_text("***") == ""


def test_the_text_block_ignores_store_numbers_and_is_unit_length() -> None:
    a = extract(["SHELL OIL 57442"], [""], [-40.0])
    b = extract(["SHELL OIL 10233 "], [""], [-40.0])
    np.testing.assert_array_equal(a.indices, b.indices)
    assert np.isclose(float(np.sum(a.data.astype(np.float64) ** 2)), 1.0, atol=1e-6)
    assert a.text_matrix().shape == (1, TEXT_DIMENSIONS)
    empty = extract([""], [""], [1.0])
    assert len(empty.indices) == 0  # "  " has no 3-gram and no word
    assert int(empty.indptr[-1]) == len(empty.indices)


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["AMAZON", "whole foods", "UBER *EATS", "coffee", "rent", "Zelle", "SQ *X 123", ""]
)
mcc = st.none() | st.sampled_from(["5411", "5812", "7011", "3000"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(text, text, st.floats(-1e6, 1e6, allow_nan=False), mcc), min_size=1, max_size=8
    )
)
def test_a_batch_equals_its_rows_one_by_one(rows: list[tuple[str, str, float, str | None]]) -> None:
    merchants, memos, amounts, mccs = (list(c) for c in zip(*rows, strict=True))
    batch = extract(merchants, memos, amounts, mccs)
    assert len(batch) == len(rows)
    for i, (m, d, a, c) in enumerate(rows):
        one = extract([m], [d], [a], [c])
        np.testing.assert_array_equal(batch.dense[i], one.dense[0])
        taken = batch.take([i])
        np.testing.assert_array_equal(taken.indices, one.indices)
        np.testing.assert_array_equal(taken.data, one.data)
    # Small batches join each row's cached text block; past CACHED_BATCH_ROWS the block is
    # hashed in one pass: the same rows give the same arrays either way.
    filler = CACHED_BATCH_ROWS + 1 - len(rows)
    large = extract(
        merchants + ["SQ *FILLER"] * filler,
        memos + [""] * filler,
        amounts + [1.0] * filler,
        mccs + [None] * filler,
    ).take(list(range(len(rows))))
    for name in ("dense", "indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(large, name), getattr(batch, name))
        assert getattr(large, name).dtype == getattr(batch, name).dtype


def test_a_feature_batch_is_immutable_and_takes_rows_in_the_given_order() -> None:
    merchants = ["UBER *TRIP", "NETFLIX.COM", "SHELL OIL"]
    batch = extract(merchants, ["", "", ""], [-1.0, -2.0, -3.0], [None, "4899", None])
    assert len(batch) == 3
    with pytest.raises(ValueError, match="read-only"):
        batch.dense[0, 0] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        batch.data[0] = 5.0
    picked = batch.take([2, 0, 2])
    np.testing.assert_array_equal(picked.dense, batch.dense[[2, 0, 2]])
    dense = batch.text_matrix().toarray()
    np.testing.assert_array_equal(picked.text_matrix().toarray(), dense[[2, 0, 2]])
    joined = FeatureBatch.concat([batch.take([1]), picked])
    np.testing.assert_array_equal(joined.dense, batch.dense[[1, 2, 0, 2]])
    np.testing.assert_array_equal(joined.text_matrix().toarray(), dense[[1, 2, 0, 2]])
    assert len(batch.take([])) == 0


def test_extract_refuses_columns_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        extract(["a", "b"], ["", ""], [1.0, 2.0], ["5411"])
    with pytest.raises(ValueError, match="differ in length"):
        extract(["a"], ["b", "c"], [1.0])


def test_hashing_is_the_same_in_every_process() -> None:
    """No dependence on PYTHONHASHSEED: the model's text weights must mean the same."""
    code = (
        "from service.features import extract;"
        "b = extract(['WHOLEFDS MKT 10233'], ['weekly grocery run'], [-1.0]);"
        "print(b.indices.tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "12345")
    }
    assert len(outputs) == 1
