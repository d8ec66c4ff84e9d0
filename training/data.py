"""Labelled transactions: a seedable generator, validating readers, and a fingerprint.

A dataset is a :class:`pandas.DataFrame` with the columns of :data:`COLUMNS`:

- ``id`` (str, unique), ``merchant`` (str, non-empty), ``memo`` (str, may be empty),
  ``amount`` (float, finite; spending negative, income positive), ``user_id`` (str),
  ``label`` (str, the category);

and two optional ones (:data:`OPTIONAL_COLUMNS`): ``mcc`` (empty, or a four-digit ISO
18245 code) and ``group`` (the merchant or brand a row belongs to, for splits that keep a
merchant on one side; by default the merchant's normalised descriptor).

Every reader returns data through :func:`validate_transactions`, which raises
:class:`DataError` naming what is wrong and where (a missing column, a wrong type, a NaN,
a bad MCC, no rows, a single class, an unreadable file), so a training Job fails with one
clear line.

The generator (:func:`generate_transactions`) writes real brand names (the NSI lexicon,
``training/lexicon.py``) the way card processors print them: facilitator and bank prefixes,
store numbers, cities, reference codes, abbreviations, truncation to 22-25 characters;
memos mostly empty; the brand's MCC on most card rows. Income, transfers, rent and utility
bills, which have no brand list, come from templates.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from service import categories
from service.categories import is_known_mcc
from training import lexicon

COLUMNS: Final = ("id", "merchant", "memo", "amount", "user_id", "label")
OPTIONAL_COLUMNS: Final = ("mcc", "group")
TEXT_COLUMNS: Final = ("id", "merchant", "memo", "user_id", "label")

CATEGORIES: Final = categories.CATEGORIES


class DataError(Exception):
    """Training data that cannot be used, with what is wrong and where."""


# --------------------------------------------------------------------------- generator

# Processor and bank dress around a merchant name, as US card statements print it.
_FACILITATORS: Final = ("SQ *", "TST* ", "PAYPAL *", "SP * ", "PP*", "DD *", "IC* ")
_BANK_PREFIXES: Final = (
    "POS DEBIT ", "POS PURCHASE ", "CHECKCARD {mmdd4} ", "DEBIT CARD PURCHASE - ",
    "PURCHASE AUTHORIZED ON {mm}/{dd} ", "RECURRING PAYMENT AUTHORIZED ON {mm}/{dd} ",
    "DBT CRD {hhmm} ", "VISA PURCHASE ",
)  # fmt: skip
_CITIES: Final = (
    ("SAN FRANCISCO", "CA"), ("OAKLAND", "CA"), ("LOS ANGELES", "CA"), ("BROOKLYN", "NY"),
    ("NEW YORK", "NY"), ("AUSTIN", "TX"), ("HOUSTON", "TX"), ("SEATTLE", "WA"),
    ("DENVER", "CO"), ("CHICAGO", "IL"), ("BOSTON", "MA"), ("MIAMI", "FL"),
    ("ATLANTA", "GA"), ("PHOENIX", "AZ"), ("LAS VEGAS", "NV"), ("PORTLAND", "OR"),
    ("COLUMBUS", "OH"), ("NASHVILLE", "TN"), ("MINNEAPOLIS", "MN"), ("RALEIGH", "NC"),
    ("GAS CITY", "IN"), ("COFFEE SPRINGS", "AL"), ("TARGET", "PA"),
)  # fmt: skip
_ABBREVIATIONS: Final = {
    "MARKET": "MKT", "STORE": "STR", "RESTAURANT": "REST", "PHARMACY": "PHARM",
    "CENTER": "CTR", "CENTRE": "CTR", "INTERNATIONAL": "INTL", "COMPANY": "CO",
    "WHOLESALE": "WHSE", "SUPERMARKET": "SPMKT", "FOODS": "FDS", "COFFEE": "COFF",
    "SERVICE": "SVC", "SERVICES": "SVCS", "STATION": "STN", "AIRLINES": "AIR",
    "HOTEL": "HTL", "AUTOMOTIVE": "AUTO", "DEPARTMENT": "DEPT", "BROTHERS": "BROS",
    "FITNESS": "FTNS", "PIZZA": "PIZZ", "KITCHEN": "KTCHN", "GROCERY": "GROC",
}  # fmt: skip
_FIRST: Final = (
    "JOHN",
    "MARIA",
    "LI",
    "AISHA",
    "SAM",
    "JOSE",
    "EMILY",
    "DAVID",
    "PRIYA",
    "CHEN",
    "FATIMA",
    "LUCAS",
    "OLGA",
    "KWAME",
    "SOFIA",
    "NOAH",
    "YUKI",
    "OMAR",
)
_LAST: Final = (
    "SMITH",
    "GARCIA",
    "WEI",
    "PATEL",
    "OKAFOR",
    "NGUYEN",
    "KOWALSKI",
    "BROWN",
    "SILVA",
    "KIM",
    "MULLER",
    "ROSSI",
    "COHEN",
    "JOHNSON",
    "LOPEZ",
    "TANAKA",
)
_WORDS: Final = (
    "OAK",
    "PINE",
    "CEDAR",
    "MAPLE",
    "RIVER",
    "LAKE",
    "PARK",
    "HILL",
    "BAY",
    "SUMMIT",
    "HARBOR",
    "MEADOW",
    "STONE",
    "WILLOW",
    "AVALON",
    "LINCOLN",
    "MADISON",
    "ASPEN",
    "SUNSET",
    "UNION",
    "LIBERTY",
    "BRIDGE",
    "NORTH",
    "WEST",
)
_COMPANY_SUFFIX: Final = ("INC", "LLC", "CORP", "CO", "GROUP", "TECHNOLOGIES", "HOLDINGS")


@dataclass(frozen=True)
class Counterparty:
    """Templates for what has no brand list (income, transfers, rent, utility bills):
    descriptor patterns with ``{person}``, ``{company}``, ``{place}``, ``{ref}``,
    ``{digits}``, an amount (log-normal ``median``, ``sigma``; ``sign`` -1, +1 or 0 for
    either), the share of rows, and the MCC a card feed would carry (None: bank rails)."""

    label: str
    patterns: tuple[str, ...]
    median: float
    sigma: float
    sign: int
    weight: float
    mcc: str | None = None


COUNTERPARTIES: Final[tuple[Counterparty, ...]] = (
    Counterparty("Income", (
        "{company} PAYROLL", "{company} DIR DEP", "DIRECT DEP {company} PPD ID: {digits}",
        "ACH CREDIT {company} PAYROLL", "{company} SALARY", "PAYROLL {company} {ref}",
        "GUSTO PAY {ref}", "ADP PAYROLL FEES {company}",
    ), 2400.0, 0.5, 1, 6.0),
    Counterparty("Income", (
        "IRS TREAS 310 TAX REF", "STATE TAX REFUND", "INTEREST PAYMENT", "INTEREST PAID",
        "DIVIDEND {company}", "MOBILE DEPOSIT", "DEPOSIT REF {ref}", "REFUND {company}",
        "STRIPE TRANSFER {ref}", "CASHBACK REWARD", "ATM CASH DEPOSIT",
    ), 300.0, 1.0, 1, 2.0),
    Counterparty("Transfers", (
        "ZELLE TO {person}", "ZELLE FROM {person}", "ZELLE PAYMENT TO {person} {ref}",
        "VENMO PAYMENT {digits}", "VENMO CASHOUT", "CASH APP*{person}", "PAYPAL TRANSFER",
        "ONLINE TRANSFER TO CHK ...{digits}", "ONLINE TRANSFER FROM SAV ...{digits}",
        "TRANSFER TO {person}", "WIRE TRANSFER {ref}", "APPLE CASH SENT MONEY",
        "XFER TO SAVINGS {digits}",
    ), 150.0, 1.0, 0, 5.0),
    Counterparty("Transfers", (
        "WESTERN UNION {ref}", "MONEYGRAM {ref}", "REMITLY* {ref}", "WISE INC {ref}",
        "XOOM {ref}",
    ), 250.0, 0.8, -1, 1.0, "4829"),
    Counterparty("Rent", (
        "{place} APARTMENTS", "{place} APTS RENT", "{place} PROPERTY MGMT",
        "{place} PROPERTY MANAGEMENT", "RENT {place} APTS", "{company} PROPERTIES RENT",
        "APPFOLIO {place}", "RENTCAFE {place}", "ZELLE TO {person} RENT",
        "BILT RENT {place}", "{place} RESIDENTIAL LEASING",
    ), 2100.0, 0.35, -1, 3.0, "6513"),
    Counterparty("Utilities", (
        "{place} WATER DEPT", "CITY OF {place} UTILITIES", "{place} ELECTRIC COOP",
        "{place} GAS & ELECTRIC", "{place} POWER CO", "{place} ENERGY BILL PAY",
        "{place} WASTE MGMT", "{place} BROADBAND", "{place} FIBER INTERNET",
    ), 95.0, 0.5, -1, 2.5, "4900"),
)  # fmt: skip

# Real brands of online services that the NSI (a map of shops) does not hold, written
# out here: (names as printed, category, MCC).
ONLINE_BRANDS: Final[tuple[tuple[tuple[str, ...], str, str], ...]] = (
    (("NETFLIX.COM", "NETFLIX"), "Entertainment", "5815"),
    (("SPOTIFY USA", "SPOTIFY P{ref}"), "Entertainment", "5815"),
    (("HULU {digits}", "HULU.COM/BILL"), "Entertainment", "5815"),
    (("DISNEY PLUS", "DISNEYPLUS"), "Entertainment", "5815"),
    (("HBO MAX", "MAX.COM"), "Entertainment", "5815"),
    (("STEAMGAMES.COM", "STEAM PURCHASE"), "Entertainment", "5816"),
    (("PLAYSTATION NETWORK", "SONY PLAYSTATION"), "Entertainment", "5816"),
    (("MICROSOFT*XBOX", "XBOX LIVE"), "Entertainment", "5816"),
    (("NINTENDO AMERICA", "NINTENDO ESHOP"), "Entertainment", "5816"),
    (("TICKETMASTER", "TM *TICKETMASTER"), "Entertainment", "7922"),
    (("AMAZON.COM*{ref}", "AMZN MKTP US*{ref}", "AMAZON MKTPLACE PMTS"), "Shopping", "5942"),
    (("EBAY O*{digits}", "EBAY INC"), "Shopping", "5999"),
    (("ETSY.COM", "ETSY INC"), "Shopping", "5999"),
    (("UBER *TRIP", "UBER TRIP HELP.UBER.COM"), "Transportation", "4121"),
    (("LYFT *RIDE", "LYFT RIDE {ref}"), "Transportation", "4121"),
    (("UBER *EATS", "UBER EATS {ref}"), "Dining", "5812"),
    (("DOORDASH*{place}", "DOORDASH DASHPASS"), "Dining", "5812"),
    (("GRUBHUB*{place}",), "Dining", "5812"),
    (("COMCAST CABLE", "XFINITY MOBILE"), "Utilities", "4899"),
    (("VERIZON WIRELESS", "VZWRLSS*APOCC VISB"), "Utilities", "4814"),
    (("AT&T BILL PAYMENT", "ATT*BILL PAYMENT"), "Utilities", "4814"),
    (("T-MOBILE", "TMOBILE*AUTO PAY"), "Utilities", "4814"),
    (("PGANDE WEB ONLINE", "PG&E"), "Utilities", "4900"),
    (("CON ED OF NY", "CONSOLIDATED EDISON"), "Utilities", "4900"),
    (("DUKE ENERGY", "DUKE-ENERGY PAYMENT"), "Utilities", "4900"),
    (("CLASSPASS", "CLASSPASS INC"), "Healthcare", "7997"),
)

# Shares of spending rows by category (brand rows), beside the counterparties' weights.
CATEGORY_WEIGHTS: Final = {
    "Groceries": 9.0, "Dining": 12.0, "Transportation": 8.0, "Entertainment": 3.0,
    "Shopping": 12.0, "Healthcare": 4.0, "Utilities": 1.0, "Transfers": 0.3, "Rent": 0.5,
}  # fmt: skip
_AMOUNTS: Final = {  # median, sigma of a purchase
    "Groceries": (45.0, 0.7), "Dining": (18.0, 0.7), "Transportation": (35.0, 0.8),
    "Entertainment": (25.0, 0.8), "Shopping": (40.0, 1.0), "Healthcare": (30.0, 0.9),
    "Utilities": (70.0, 0.5), "Transfers": (200.0, 0.8), "Rent": (1900.0, 0.4),
}  # fmt: skip
MCC_RATE: Final = 0.7
"""Share of card rows that carry an MCC (the rest come from feeds without one)."""
MEMO_RATE: Final = 0.15
DRESS_RATE: Final = 0.6
LABEL_NOISE_RATE: Final = 0.01


@dataclass(frozen=True, slots=True)
class _Merchant:
    names: tuple[str, ...]
    category: str
    mcc: str
    group: str


def _merchants(brands: Sequence[lexicon.Brand]) -> dict[str, list[_Merchant]]:
    by_category: dict[str, list[_Merchant]] = {}
    for b in brands:
        names = (b.name, *b.alternates[:3])
        by_category.setdefault(b.category, []).append(_Merchant(names, b.category, b.mcc, b.group))
    for names, category, mcc in ONLINE_BRANDS:
        group = lexicon.brand_group(names[0].split("{")[0])
        by_category.setdefault(category, []).append(_Merchant(names, category, mcc, group))
    return by_category


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _fill(pattern: str, rng: np.random.Generator) -> str:
    if "{" not in pattern:
        return pattern
    return pattern.format(
        person=f"{_pick(_FIRST, rng)} {_pick(_LAST, rng)}",
        company=f"{_pick(_WORDS, rng)} {_pick(_WORDS, rng)} {_pick(_COMPANY_SUFFIX, rng)}",
        place=_pick(_WORDS, rng) + ("" if rng.random() < 0.5 else f" {_pick(_WORDS, rng)}"),
        ref="".join(_pick("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", rng) for _ in range(6)),
        digits=f"{int(rng.integers(1000, 9999))}",
        mm=f"{int(rng.integers(1, 13)):02d}",
        dd=f"{int(rng.integers(1, 29)):02d}",
        mmdd4=f"{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        hhmm=f"{int(rng.integers(100000, 999999))}",
    )


def _abbreviate(name: str, rng: np.random.Generator) -> str:
    words = name.split()
    kind = rng.random()
    if kind < 0.3:
        words = [_ABBREVIATIONS.get(w, w) for w in words]
    elif kind < 0.4 and len(words) >= 2:
        words = ["".join(words[:2]), *words[2:]]  # WHOLE FOODS -> WHOLEFOODS
    elif kind < 0.5 and len(words) >= 2 and len(words[1]) > 4:
        w = words[1]
        words = [words[0] + w[0] + "".join(ch for ch in w[1:] if ch not in "AEIOU"), *words[2:]]
    return " ".join(words)


def dress(name: str, rng: np.random.Generator, *, noisy: bool = True) -> str:
    """A merchant name as a card processor prints it: upper case, maybe abbreviated, a
    facilitator or bank prefix, a store number, city and state or a reference code, cut to
    the networks' 22-25 characters (``noisy=False``: the name in upper case only)."""
    text = _fill(name, rng).upper() if rng.random() < 0.9 else _fill(name, rng)
    if not noisy:
        return text
    if rng.random() < 0.35:
        text = _abbreviate(text, rng)
    if rng.random() < 0.15:  # many terminals drop accents and punctuation
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    if rng.random() < 0.2:
        text = f"{_pick(_FACILITATORS, rng)}{text}"
    r = rng.random()
    if r < 0.35:
        text += f" #{int(rng.integers(10, 99999))}"
    elif r < 0.5:
        text += f" {int(rng.integers(100, 99999)):05d}"
    elif r < 0.6:
        text += "*" + _fill("{ref}", rng)
    if rng.random() < 0.4:
        city, state = _CITIES[int(rng.integers(len(_CITIES)))]
        text += f" {city} {state}"
    limit = int(rng.integers(22, 26))
    text = text[:limit].rstrip()
    if rng.random() < 0.25:
        text = _fill(_pick(_BANK_PREFIXES, rng), rng) + text
    return text


def generate_transactions(
    rows: int,
    seed: int = 0,
    *,
    brands: Sequence[lexicon.Brand] | None = None,
    noisy: bool = True,
    mcc_rate: float = MCC_RATE,
) -> pd.DataFrame:
    """``rows`` labelled transactions, the same for the same inputs.

    Merchants are real brands (``brands``, by default :func:`training.lexicon.all_brands`:
    the NSI lexicon, plus :data:`ONLINE_BRANDS`) in processor dress (:func:`dress`), with
    the MCC of their tag on ``mcc_rate`` of the rows (the same rows for any rate: only
    which carry their code changes); income, transfers, rent and
    utility bills come from :data:`COUNTERPARTIES`. ``group`` is the brand (or the
    counterparty's name), for splits that keep a merchant on one side. Memos are mostly
    empty. Ids are ``"txn-<seed>-<n>"``; users come from a pool of about one per 20 rows.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    rng = np.random.default_rng(seed)
    by_category = _merchants(brands if brands is not None else lexicon.all_brands())
    kinds: list[tuple[str, object, float]] = [
        ("brand", c, w) for c, w in CATEGORY_WEIGHTS.items() if by_category.get(c)
    ]
    kinds += [("counterparty", cp, cp.weight) for cp in COUNTERPARTIES]
    weights = np.array([w for _, _, w in kinds])
    picks = rng.choice(len(kinds), size=rows, p=weights / weights.sum())
    n_users = max(50, rows // 20)
    user_ids = rng.permutation(n_users)[(rng.zipf(1.3, size=rows) - 1) % n_users]
    labels_all = list(CATEGORIES)
    merchants: list[str] = []
    memos: list[str] = []
    mccs: list[str | None] = []
    groups: list[str] = []
    labels: list[str] = []
    amounts = np.empty(rows, dtype=np.float64)
    for n, k in enumerate(picks):
        kind, what, _ = kinds[int(k)]
        if kind == "brand":
            category = str(what)
            choices = by_category[category]
            # Brands repeat the way real spending does: a few often, most rarely.
            m = (
                choices[int(rng.zipf(1.2) - 1) % len(choices)]
                if rng.random() < 0.3
                else (choices[int(rng.integers(len(choices)))])
            )
            merchant = dress(_pick(m.names, rng), rng, noisy=noisy)
            mcc: str | None = m.mcc if rng.random() < mcc_rate else None
            median, sigma = _AMOUNTS[category]
            sign = -1 if rng.random() > 0.02 else 1  # a few refunds
            group = m.group
            label = category if sign < 0 else "Income"
        else:
            assert isinstance(what, Counterparty)
            pattern = _pick(what.patterns, rng)
            filled = _fill(pattern, rng)
            merchant = filled if not noisy or rng.random() > 0.3 else dress(filled, rng)
            mcc = what.mcc if rng.random() < mcc_rate and what.mcc else None
            median, sigma, label = what.median, what.sigma, what.label
            sign = what.sign if what.sign else (1 if rng.random() < 0.4 else -1)
            group = lexicon.brand_group(filled) or filled
        amounts[n] = (
            max(round(float(median * np.exp(sigma * rng.standard_normal())), 2), 0.01) * sign
        )
        memo = ""
        if rng.random() < MEMO_RATE:
            memo = _pick(("purchase", "card purchase", "online order", "recurring", "ref {ref}",
                          label.lower(), "thanks"), rng)  # fmt: skip
            memo = _fill(memo, rng)
        if rng.random() < LABEL_NOISE_RATE:
            label = labels_all[int(rng.integers(len(labels_all)))]
        merchants.append(merchant)
        memos.append(memo)
        mccs.append(mcc)
        groups.append(group)
        labels.append(label)
    return pd.DataFrame(
        {
            "id": [f"txn-{seed}-{n:07d}" for n in range(rows)],
            "merchant": merchants,
            "memo": memos,
            "amount": amounts,
            "user_id": [f"u{u:06d}" for u in user_ids],
            "label": labels,
            "mcc": mccs,
            "group": groups,
        },
        columns=[*COLUMNS, *OPTIONAL_COLUMNS],
    )


# --------------------------------------------------------------------------- validation


def validate_transactions(frame: pd.DataFrame, *, source: str = "data") -> pd.DataFrame:
    """The dataset in canonical form, or :class:`DataError` saying what is wrong.

    Canonical: exactly :data:`COLUMNS` in that order, text columns as ``str`` (``memo``
    missing becomes ``""``), ``amount`` as float64, rows sorted by ``id`` (so the same
    data in another order trains the same model and has the same fingerprint).
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; expected {list(COLUMNS)}")
    if len(frame) == 0:
        raise DataError(f"{source}: no rows")
    out = pd.DataFrame(index=range(len(frame)))
    for col in TEXT_COLUMNS:
        values = frame[col].reset_index(drop=True)
        if col == "memo":
            values = values.where(values.notna(), "")
        nulls = values.isna()
        if nulls.any():
            raise DataError(
                f"{source}: column {col!r} has {int(nulls.sum())} missing value(s){_rows(nulls)}"
            )
        if col in ("merchant", "memo", "label"):
            not_str = ~values.map(lambda v: isinstance(v, str))
            if not_str.any():
                bad = values[not_str].iloc[0]
                raise DataError(
                    f"{source}: column {col!r} must be text, found {type(bad).__name__} "
                    f"{bad!r}{_rows(not_str)}"
                )
        out[col] = values.astype(str)
    empty = out["merchant"].str.strip() == ""
    if empty.any():
        raise DataError(
            f"{source}: column 'merchant' has {int(empty.sum())} empty value(s){_rows(empty)}"
        )
    empty = out["label"].str.strip() == ""
    if empty.any():
        raise DataError(
            f"{source}: column 'label' has {int(empty.sum())} empty value(s){_rows(empty)}"
        )

    amount = frame["amount"].reset_index(drop=True)
    if amount.dtype == object or pd.api.types.is_string_dtype(amount.dtype):
        numeric = pd.to_numeric(amount, errors="coerce")
        bad = numeric.isna() & amount.notna()
        if bad.any():
            raise DataError(
                f"{source}: column 'amount' must be numeric, "
                f"found {amount[bad].iloc[0]!r}{_rows(bad)}"
            )
        amount = numeric
    elif pd.api.types.is_bool_dtype(amount.dtype) or not pd.api.types.is_numeric_dtype(
        amount.dtype
    ):
        raise DataError(f"{source}: column 'amount' must be numeric, found dtype {amount.dtype}")
    amount = amount.astype(np.float64)
    not_finite = ~np.isfinite(amount.to_numpy())
    if not_finite.any():
        mask = pd.Series(not_finite)
        raise DataError(
            f"{source}: column 'amount' has {int(not_finite.sum())} missing or infinite value(s)"
            f"{_rows(mask)}"
        )
    out["amount"] = amount

    duplicated = out["id"].duplicated()
    if duplicated.any():
        raise DataError(
            f"{source}: column 'id' has {int(duplicated.sum())} duplicate(s), "
            f"e.g. {out['id'][duplicated].iloc[0]!r}"
        )
    classes = out["label"].nunique()
    if classes < 2:
        raise DataError(
            f"{source}: a single class {out['label'].iloc[0]!r}; a classifier needs at least two"
        )
    out["mcc"] = _mcc_column(frame, source)
    out["group"] = _group_column(frame, out, source)
    out = out.sort_values("id", kind="stable").reset_index(drop=True)
    return out[[*COLUMNS, *OPTIONAL_COLUMNS]]


def _mcc_column(frame: pd.DataFrame, source: str) -> list[str | None]:
    """Optional ``mcc``: empty or missing is None; anything else a known ISO 18245 code."""
    if "mcc" not in frame.columns:
        return [None] * len(frame)
    out: list[str | None] = []
    for i, value in enumerate(frame["mcc"].reset_index(drop=True)):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            out.append(None)
            continue
        code = value if isinstance(value, str) else None
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            code = f"{int(value):04d}"  # a CSV read as numbers lost the leading zero
        if code is None or not is_known_mcc(code):
            raise DataError(
                f"{source}: column 'mcc' must be empty or a four-digit ISO 18245 code, "
                f"found {value!r} (row {i})"
            )
        out.append(code)
    return out


def _group_column(frame: pd.DataFrame, out: pd.DataFrame, source: str) -> list[str]:
    """Optional ``group`` (the merchant or brand, for splits); by default the merchant's
    normalised descriptor, so one merchant never lands on both sides of a split."""
    derived = [lexicon.brand_group(m) or m.strip().casefold() for m in out["merchant"]]
    if "group" not in frame.columns:
        return derived
    given = frame["group"].reset_index(drop=True)
    result: list[str] = []
    for i, value in enumerate(given):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            result.append(derived[i])
        elif isinstance(value, str):
            result.append(value)
        else:
            raise DataError(
                f"{source}: column 'group' must be text, found {type(value).__name__} "
                f"{value!r} (row {i})"
            )
    return result


def _rows(mask: pd.Series) -> str:
    """`` (rows 3, 17, ...)``: the first offending row numbers, 0-based, as read."""
    idx = [int(i) for i in np.flatnonzero(mask.to_numpy())[:5]]
    more = ", ..." if int(mask.sum()) > len(idx) else ""
    return f" (row {', '.join(map(str, idx))}{more})"


# --------------------------------------------------------------------------- files


def read_transactions(path: Path) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) dataset, validated."""
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz")):
            frame = pd.read_csv(
                path,
                dtype={c: str for c in (*TEXT_COLUMNS, *OPTIONAL_COLUMNS)},
                keep_default_na=False,
                na_values={"amount": ["", "NA", "NaN", "nan", "null"]},
            )
        else:
            raise DataError(f"{path}: unknown format; expected .csv, .csv.gz, .parquet or .pq")
    except DataError:
        raise
    except (OSError, ValueError, ImportError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own types (ArrowInvalid, ...)
        raise DataError(f"{path}: unreadable: {type(exc).__name__}: {exc}") from exc
    return validate_transactions(frame, source=str(path))


def write_transactions(frame: pd.DataFrame, path: Path) -> None:
    """Write a dataset as CSV or Parquet, chosen by the file name's suffix."""
    name = path.name.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith((".parquet", ".pq")):
        frame.to_parquet(path, index=False)
    elif name.endswith((".csv", ".csv.gz")):
        frame.to_csv(path, index=False)
    else:
        raise DataError(f"{path}: unknown format; expected .csv, .csv.gz, .parquet or .pq")


def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 over the canonical data (see :func:`validate_transactions`), as hex.

    Each row is its eight fields joined by the unit separator (an absent MCC as the
    empty string), amounts in Python's shortest round-trip form, rows joined by newlines
    in ``id`` order.
    """
    canonical = validate_transactions(frame)
    digest = hashlib.sha256()
    digest.update(("\x1f".join((*COLUMNS, *OPTIONAL_COLUMNS)) + "\n").encode())
    amounts = [repr(float(a)) for a in canonical["amount"]]
    for row in zip(
        canonical["id"],
        canonical["merchant"],
        canonical["memo"],
        amounts,
        canonical["user_id"],
        canonical["label"],
        [m if isinstance(m, str) else "" for m in canonical["mcc"]],
        canonical["group"],
        strict=True,
    ):
        digest.update(("\x1f".join(row) + "\n").encode())
    return digest.hexdigest()


def label_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}


def class_list(labels: Sequence[str]) -> list[str]:
    return sorted(set(labels))
