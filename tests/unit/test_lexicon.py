"""The brand lexicon: one reviewed tag table, consistent with the MCC table, and a split
group that is the rules' brand key."""

from __future__ import annotations

import pytest

from service.categories import CATEGORIES, is_known_mcc, mcc_category
from service.features import brand_key, default_brands
from training.lexicon import DROPPED_TAGS, TAG_CATEGORY, brand_group, sample_brands

pytestmark = pytest.mark.unit


def test_every_mapped_tag_has_the_code_of_its_category() -> None:
    for tag, (code, category) in TAG_CATEGORY.items():
        assert is_known_mcc(code), tag
        assert mcc_category(code) == category, (tag, code, category)
    assert not set(TAG_CATEGORY) & set(DROPPED_TAGS)


def test_the_sample_is_real_us_brands_in_nine_categories() -> None:
    brands = sample_brands()
    assert len(brands) > 1000
    assert {b.category for b in brands} <= set(CATEGORIES) - {"Income"}
    names = {b.name for b in brands}
    for known in ("Trader Joe's", "Chipotle", "Shell", "CVS Pharmacy", "The Home Depot"):
        assert known in names, known
    assert all(b.tag in TAG_CATEGORY for b in brands)


@pytest.mark.parametrize(
    ("name", "group"),
    [("Trader Joe's", "traderjoes"), ("7-Eleven", "eleven"), ("McDonald's", "mcdonalds")],
)
def test_a_brand_group_is_its_rules_key(name: str, group: str) -> None:
    assert brand_group(name) == brand_key(name) == group


def test_the_rules_lexicon_gives_a_key_several_categories_claim_to_the_most_common() -> None:
    table = default_brands()
    assert table["traderjoes"] == "Groceries"
    # Kroger: two supermarket entries, a pharmacy and a fuel station name it.
    assert table["kroger"] == "Groceries"
    assert table["krogerfuel"] == "Transportation"
    assert table["krogerpharmacy"] == "Healthcare"
    assert all(len(k) >= 3 for k in table)
