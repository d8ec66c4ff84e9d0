"""Training data: the generator's realism, the readers' validation, the fingerprint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from service.categories import is_known_mcc
from training.data import (
    CATEGORIES,
    COLUMNS,
    OPTIONAL_COLUMNS,
    DataError,
    data_fingerprint,
    generate_transactions,
    read_transactions,
    validate_transactions,
    write_transactions,
)
from training.lexicon import Brand

pytestmark = pytest.mark.unit

SAMPLE = (
    Path(__file__).resolve().parents[2] / "training" / "sample_data" / "transactions_sample.csv"
)


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    return generate_transactions(5000, seed=3)


def test_generation_is_deterministic_per_seed() -> None:
    a = generate_transactions(500, seed=1)
    pd.testing.assert_frame_equal(a, generate_transactions(500, seed=1))
    assert not a.equals(generate_transactions(500, seed=2))


def test_generated_data_looks_like_a_statement(generated: pd.DataFrame) -> None:
    assert tuple(generated.columns) == (*COLUMNS, *OPTIONAL_COLUMNS)
    assert set(generated["label"]) == set(CATEGORIES)
    assert generated["id"].is_unique
    # Income is money in; rent and utilities money out (label noise aside).
    by_label = generated.groupby("label")["amount"]
    assert (by_label.apply(lambda s: (s > 0).mean())["Income"]) > 0.9
    assert (by_label.apply(lambda s: (s < 0).mean())["Rent"]) > 0.9
    assert by_label.median()["Rent"] < -1000
    assert -40 < by_label.median()["Dining"] < 0
    merchants = " ".join(generated["merchant"])
    for dress in ("SQ *", "TST* ", "POS DEBIT ", "PURCHASE AUTHORIZED ON ", " #"):
        assert dress in merchants, dress
    assert generated["merchant"].str.len().max() <= 25 + len(
        "RECURRING PAYMENT AUTHORIZED ON 11/02 "
    )
    assert generated["memo"].eq("").mean() > 0.7  # most statements carry no memo
    with_mcc = generated["mcc"].map(lambda m: isinstance(m, str))
    assert 0.4 < with_mcc.mean() < 0.8
    assert all(is_known_mcc(m) for m in generated["mcc"][with_mcc])
    assert generated["group"].nunique() > len(generated) / 20  # many brands, not a few templates
    assert 50 <= generated["user_id"].nunique() < len(generated)


def test_the_generator_names_real_brands_with_their_categories() -> None:
    brands = [
        Brand("Trader Joe's", (), "Groceries", "5411", "shop=supermarket", "traderjoes", "nsi"),
        Brand("Chipotle", (), "Dining", "5814", "amenity=fast_food", "chipotle", "nsi"),
    ]
    frame = generate_transactions(400, seed=3, brands=brands)
    rows = frame[frame["group"].isin(["traderjoes", "chipotle"]) & (frame["amount"] < 0)]
    assert set(rows["group"]) == {"traderjoes", "chipotle"}
    for group, label in (("traderjoes", "Groceries"), ("chipotle", "Dining")):
        mine = rows[rows["group"] == group]
        assert (mine["label"] == label).mean() > 0.9
        letters = mine["merchant"].str.upper().str.replace(r"[^A-Z]", "", regex=True)
        assert letters.str.contains("TRADER|CHIPOTLE|CHPTL|TRDR").mean() > 0.6


def test_an_mcc_column_is_optional_and_checked(generated: pd.DataFrame) -> None:
    bare = generated.drop(columns=["mcc", "group"])
    canonical = validate_transactions(bare)
    assert canonical["mcc"].isna().all()
    assert canonical["group"].str.len().min() > 0  # derived from the merchant
    bad = generated.copy()
    bad.loc[bad.index[7], "mcc"] = "54111"
    with pytest.raises(DataError, match=r"column 'mcc' .* found '54111' \(row 7\)"):
        validate_transactions(bad)


def test_the_shipped_sample_is_small_and_valid() -> None:
    assert SAMPLE.stat().st_size < 400_000
    frame = read_transactions(SAMPLE)
    assert len(frame) == 3000
    assert set(frame["label"]) == set(CATEGORIES)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".pq"])
def test_a_written_dataset_reads_back_identically(
    tmp_path: Path, generated: pd.DataFrame, suffix: str
) -> None:
    path = tmp_path / f"data{suffix}"
    write_transactions(generated, path)
    read = read_transactions(path)
    pd.testing.assert_frame_equal(read, validate_transactions(generated), check_exact=True)
    assert data_fingerprint(read) == data_fingerprint(generated)


def test_the_fingerprint_ignores_row_order_and_sees_any_change(generated: pd.DataFrame) -> None:
    shuffled = generated.sample(frac=1.0, random_state=0)
    assert data_fingerprint(shuffled) == data_fingerprint(generated)
    changed = generated.copy()
    changed.loc[17, "amount"] += 0.01
    assert data_fingerprint(changed) != data_fingerprint(generated)


def test_a_missing_memo_is_empty_text() -> None:
    frame = generate_transactions(50, seed=0)
    frame.loc[0, "memo"] = None
    assert validate_transactions(frame)["memo"].tolist().count("") >= 1


def _good() -> dict[str, list[Any]]:
    return {
        "id": ["a", "b", "c"],
        "merchant": ["UBER *TRIP", "SAFEWAY #12", "NETFLIX.COM"],
        "memo": ["", "grocery", ""],
        "amount": [-12.5, -40.0, -15.49],
        "user_id": ["u1", "u2", "u1"],
        "label": ["Transportation", "Groceries", "Entertainment"],
    }


def _with(**changes: Any) -> pd.DataFrame:
    data = _good()
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return pd.DataFrame(data)


_DROP = object()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_with(label=_DROP), r"missing column\(s\) \['label'\]"),
        (_with(merchant=_DROP, amount=_DROP), r"missing column\(s\) \['merchant', 'amount'\]"),
        (_with().iloc[0:0], "no rows"),
        (_with(label=["Dining"] * 3), "a single class 'Dining'"),
        (_with(amount=[-1.0, float("nan"), 3.0]), r"'amount' has 1 missing .*\(row 1\)"),
        (_with(amount=[-1.0, float("inf"), 3.0]), "'amount' has 1 missing or infinite"),
        (_with(amount=["-1.0", "twelve", "3"]), "'amount' must be numeric, found 'twelve'"),
        (_with(amount=[True, False, True]), "'amount' must be numeric, found dtype bool"),
        (_with(merchant=["UBER", None, "X"]), r"'merchant' has 1 missing value\(s\) \(row 1\)"),
        (_with(merchant=["UBER", 42, "X"]), "'merchant' must be text, found int 42"),
        (_with(merchant=["UBER", "  ", "X"]), "'merchant' has 1 empty"),
        (_with(label=["Dining", None, "Rent"]), "'label' has 1 missing"),
        (_with(id=["a", "a", "c"]), "'id' has 1 duplicate"),
    ],
)
def test_bad_data_is_refused_with_what_is_wrong(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(DataError, match=message):
        validate_transactions(frame)


def test_numeric_ids_and_amounts_as_text_are_accepted() -> None:
    frame = validate_transactions(_with(id=[3, 1, 2], amount=["-1", "2.5", "3"]))
    assert frame["id"].tolist() == ["1", "2", "3"]
    assert frame["amount"].dtype == np.float64


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("data.json", b"{}", "unknown format"),
        ("broken.parquet", b"PAR1 this is not parquet", "unreadable"),
        ("empty.csv", b"", "unreadable"),
        ("header-only.csv", b"id,merchant,memo,amount,user_id,label\n", "no rows"),
        ("wrong.csv", b"a,b\n1,2\n", r"missing column\(s\)"),
        ("bad-amount.csv", b"id,merchant,memo,amount,user_id,label\n1,X,,abc,u,A\n", "numeric"),
    ],
)
def test_unreadable_or_invalid_files_raise_data_error(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_transactions(path)
    assert str(path) in str(info.value)


def test_a_parquet_file_with_wrong_types_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    _with(merchant=[1, 2, 3]).to_parquet(path)
    with pytest.raises(DataError, match="'merchant' must be text"):
        read_transactions(path)
