"""The ten categories and what card networks mean by them (DESIGN.md contract 6).

Defined once, imported by the features, the rules, the training data and the API.

A category is defined by ISO 18245 merchant category codes (MCC) wherever a code exists:
:data:`MCC_CATEGORY_RANGES` is the table of the design, first matching row wins. Income
has no code (credits are told by sign and text). Codes outside every row (hotels,
wholesale, professional services, government...) have no category here:
:func:`mcc_category` answers None and the MCC then says nothing about the category.

One reading of the design is recorded here: 7997 (membership clubs: gyms, athletic and
sports clubs) is Healthcare, because the design counts gyms there "as in the original
system"; the rest of 7829-7999 is Entertainment.

:func:`is_known_mcc` is what the API accepts: four ASCII digits that the ``iso18245``
package (MIT) lists, or any code in the networks' private ranges 3000-3999 (airlines,
car rental, lodging: the networks assign them to single brands, and new ones appear
before a library lists them).

>>> mcc_category("5411"), mcc_category("3000"), mcc_category("7997"), mcc_category("7011")
('Groceries', 'Transportation', 'Healthcare', None)
>>> mcc_category("5732"), mcc_category(None)
('Shopping', None)
>>> is_known_mcc("5411"), is_known_mcc("541"), is_known_mcc("0001"), is_known_mcc("3999")
(True, False, False, True)
"""

from __future__ import annotations

from functools import cache
from typing import Final

GROCERIES: Final = "Groceries"
DINING: Final = "Dining"
TRANSPORTATION: Final = "Transportation"
ENTERTAINMENT: Final = "Entertainment"
SHOPPING: Final = "Shopping"
HEALTHCARE: Final = "Healthcare"
TRANSFERS: Final = "Transfers"
UTILITIES: Final = "Utilities"
INCOME: Final = "Income"
RENT: Final = "Rent"

CATEGORIES: Final[tuple[str, ...]] = (
    GROCERIES,
    DINING,
    TRANSPORTATION,
    ENTERTAINMENT,
    SHOPPING,
    HEALTHCARE,
    TRANSFERS,
    UTILITIES,
    INCOME,
    RENT,
)
"""The ten categories of the original system, in its order."""

OTHER: Final = "Other"
"""What the rules answer when nothing fits (never a training label)."""

MCC_CATEGORY_RANGES: Final[tuple[tuple[int, int, str], ...]] = (
    # (first code, last code, category), inclusive; the first matching row wins.
    (5411, 5411, GROCERIES),  # grocery stores, supermarkets
    (5422, 5422, GROCERIES),  # freezer and locker meat provisioners
    (5441, 5441, GROCERIES),  # candy, nut and confectionery stores
    (5451, 5451, GROCERIES),  # dairy products stores
    (5462, 5462, GROCERIES),  # bakeries
    (5499, 5499, GROCERIES),  # convenience stores, speciality food markets
    (5811, 5814, DINING),  # caterers, restaurants, bars, fast food
    (3000, 3500, TRANSPORTATION),  # airlines, car rental agencies
    (4000, 4799, TRANSPORTATION),  # rail, transit, taxis, tolls, parking, travel agencies
    (5511, 5511, TRANSPORTATION),  # car and truck dealers (new and used)
    (5521, 5521, TRANSPORTATION),  # car and truck dealers (used only)
    (5532, 5533, TRANSPORTATION),  # tyres, auto parts
    (5541, 5542, TRANSPORTATION),  # service stations, automated fuel dispensers
    (5983, 5983, TRANSPORTATION),  # fuel dealers
    (7511, 7549, TRANSPORTATION),  # truck stops, car rental, parking, repair, car washes
    (5815, 5818, ENTERTAINMENT),  # digital goods: media, games, applications
    (7997, 7997, HEALTHCARE),  # membership clubs, gyms (see the module's note)
    (7829, 7999, ENTERTAINMENT),  # films, cinemas, theatre, events, sports, recreation
    (5912, 5912, HEALTHCARE),  # drug stores and pharmacies
    (5975, 5976, HEALTHCARE),  # hearing aids, orthopaedic goods
    (8011, 8099, HEALTHCARE),  # doctors, dentists, opticians, hospitals, labs
    (4812, 4816, UTILITIES),  # telecom equipment and services, computer networks
    (4899, 4900, UTILITIES),  # cable and pay TV, electricity, gas, water
    (4829, 4829, TRANSFERS),  # money transfer
    (6540, 6540, TRANSFERS),  # stored-value card loads
    (6513, 6513, RENT),  # real estate agents and managers: rentals
    (5200, 5999, SHOPPING),  # every other retail code, warehouse clubs (5300) included
)

PRIVATE_RANGE: Final = (3000, 3999)
"""The networks' private codes (airlines 3000-3350, car rental 3351-3500, lodging 3501-3999)."""


@cache
def _listed_codes() -> frozenset[str]:
    import iso18245  # noqa: PLC0415 - reads its CSV tables once, on first use

    return frozenset(m.mcc for m in iso18245.get_all_mccs())


def is_mcc_syntax(code: str) -> bool:
    """Four ASCII digits."""
    return len(code) == 4 and code.isascii() and code.isdigit()


def is_known_mcc(code: str) -> bool:
    """Four ASCII digits naming a code that ``iso18245`` lists or a private-range code."""
    if not is_mcc_syntax(code):
        return False
    return code in _listed_codes() or PRIVATE_RANGE[0] <= int(code) <= PRIVATE_RANGE[1]


def mcc_category(code: str | None) -> str | None:
    """The category an MCC defines, or None (no code, or a code of no category)."""
    if code is None or not is_mcc_syntax(code):
        return None
    return _category_by_code(int(code))


@cache
def _category_by_code(value: int) -> str | None:
    for first, last, category in MCC_CATEGORY_RANGES:
        if first <= value <= last:
            return category
    return None
