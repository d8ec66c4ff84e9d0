"""The categories and the ISO 18245 MCC table of DESIGN.md contract 6."""

from __future__ import annotations

import pytest

from service.categories import (
    CATEGORIES,
    MCC_CATEGORY_RANGES,
    OTHER,
    is_known_mcc,
    mcc_category,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("mcc", "category"),
    [
        ("5411", "Groceries"), ("5422", "Groceries"), ("5441", "Groceries"),
        ("5451", "Groceries"), ("5462", "Groceries"), ("5499", "Groceries"),
        ("5811", "Dining"), ("5812", "Dining"), ("5813", "Dining"), ("5814", "Dining"),
        ("3000", "Transportation"), ("3351", "Transportation"), ("3500", "Transportation"),
        ("4111", "Transportation"), ("4121", "Transportation"), ("4784", "Transportation"),
        ("4722", "Transportation"), ("5541", "Transportation"), ("5542", "Transportation"),
        ("5511", "Transportation"), ("5533", "Transportation"), ("5983", "Transportation"),
        ("7523", "Transportation"), ("7542", "Transportation"),
        ("5815", "Entertainment"), ("5818", "Entertainment"), ("7832", "Entertainment"),
        ("7922", "Entertainment"), ("7996", "Entertainment"), ("7999", "Entertainment"),
        ("5300", "Shopping"), ("5311", "Shopping"), ("5921", "Shopping"), ("5942", "Shopping"),
        ("5732", "Shopping"), ("5999", "Shopping"), ("5200", "Shopping"),
        ("5912", "Healthcare"), ("5975", "Healthcare"), ("5976", "Healthcare"),
        ("8011", "Healthcare"), ("8021", "Healthcare"), ("8099", "Healthcare"),
        ("7997", "Healthcare"),  # gyms (membership clubs), as in the original system
        ("4812", "Utilities"), ("4814", "Utilities"), ("4899", "Utilities"),
        ("4900", "Utilities"),
        ("4829", "Transfers"), ("6540", "Transfers"),
        ("6513", "Rent"),
        ("3501", None), ("7011", None),  # lodging: no category of the ten
        ("5045", None), ("8999", None), ("9399", None), ("6011", None),
        (None, None), ("54", None), ("abcd", None),
    ],
)  # fmt: skip
def test_an_mcc_means_what_the_card_networks_mean(mcc: str | None, category: str | None) -> None:
    assert mcc_category(mcc) == category


def test_every_row_of_the_table_names_one_of_the_ten_and_income_has_no_code() -> None:
    named = {category for _, _, category in MCC_CATEGORY_RANGES}
    assert named == set(CATEGORIES) - {"Income"}
    assert all(first <= last for first, last, _ in MCC_CATEGORY_RANGES)
    assert OTHER not in CATEGORIES
    assert len(CATEGORIES) == 10


@pytest.mark.parametrize(
    ("code", "known"),
    [
        ("5411", True), ("0742", True), ("3000", True), ("3999", True), ("9402", True),
        ("0000", False), ("0001", False), ("5410", False), ("541", False), ("54111", False),
        ("5a11", False), ("٥٤١١", False), ("", False),
    ],
)  # fmt: skip
def test_known_codes_are_the_listed_ones_and_the_private_ranges(code: str, known: bool) -> None:
    assert is_known_mcc(code) is known


def test_the_rules_and_the_training_data_use_these_categories() -> None:
    from service import rules  # noqa: PLC0415
    from training import data  # noqa: PLC0415

    assert rules.CATEGORIES is CATEGORIES
    assert data.CATEGORIES is CATEGORIES
