"""Labelled transactions: a seedable generator, validating readers, and a fingerprint.

A dataset is a :class:`pandas.DataFrame` with the columns of :data:`COLUMNS`:

- ``id`` (str, unique), ``merchant`` (str, non-empty), ``memo`` (str, may be empty),
  ``amount`` (float, finite; spending negative, income positive), ``user_id`` (str),
  ``label`` (str, the category).

Every reader returns data through :func:`validate_transactions`, which raises
:class:`DataError` naming what is wrong (a missing column, a wrong type, a NaN, no rows, a
single class, an unreadable file), so a training Job fails with one clear line.

The generator imitates card and bank statements: about thirty merchant templates over the
ten :data:`CATEGORIES`, with real-world spellings (``"WHOLEFDS MKT #10233"``,
``"UBER *TRIP"``, ``"SQ *BLUE BOTTLE"``), store numbers, typos, memo noise, per-template
amount distributions with signs (income positive), refunds, and a little label noise
(people file the same merchant under different categories).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from service import categories

COLUMNS: Final = ("id", "merchant", "memo", "amount", "user_id", "label")
TEXT_COLUMNS: Final = ("id", "merchant", "memo", "user_id", "label")

CATEGORIES: Final = categories.CATEGORIES


class DataError(Exception):
    """Training data that cannot be used, with what is wrong and where."""


# --------------------------------------------------------------------------- generator


@dataclass(frozen=True)
class Template:
    """One kind of transaction: who, what memo, how much, which category.

    ``merchants`` and ``memos`` may hold the placeholders ``{store}``, ``{city}``,
    ``{ref}``, ``{name}``, ``{month}``, ``{brand}`` (an invented name). The amount is
    log-normal around ``median`` with ``sigma``; ``sign`` is -1 (spending), +1 (income)
    or 0 (either way, as transfers). ``weight`` is the template's share of all rows.
    """

    label: str
    merchants: tuple[str, ...]
    memos: tuple[str, ...]
    median: float
    sigma: float
    sign: int
    weight: float


TEMPLATES: Final[tuple[Template, ...]] = (
    # Groceries
    Template(
        "Groceries",
        ("WHOLEFDS MKT #{store}", "WHOLE FOODS MARKET #{store}", "WHOLEFOODS {city}"),
        ("", "", "grocery", "weekly grocery run", "groceries"),
        55.0, 0.6, -1, 4.0,
    ),
    Template(
        "Groceries",
        ("TRADER JOE'S #{store}", "TRADER JOES #{store} {city}", "SAFEWAY #{store}"),
        ("", "grocery", "groceries", ""),
        45.0, 0.6, -1, 5.0,
    ),
    Template(
        "Groceries",
        ("COSTCO WHSE #{store}", "COSTCO WHOLESALE {city}"),
        ("", "bulk grocery", "grocery"),
        140.0, 0.5, -1, 2.0,
    ),
    Template(
        "Groceries",
        ("AMAZON FRESH*{ref}", "AMZN FRESH {ref}", "WALMART GROCERY {store}"),
        ("grocery delivery", "", "groceries"),
        70.0, 0.4, -1, 1.5,
    ),
    # Dining
    Template(
        "Dining",
        ("SQ *BLUE BOTTLE", "STARBUCKS STORE {store}", "PEETS COFFEE #{store}", "SQ *SIGHTGLASS"),
        ("coffee", "", "morning coffee", "coffee w/ team"),
        6.0, 0.35, -1, 6.0,
    ),
    Template(
        "Dining",
        ("TST* CHIPOTLE {store}", "SWEETGREEN {city}", "SQ *TACOS EL GORDO", "MCDONALD'S F{store}"),
        ("lunch", "", "team lunch", "lunch"),
        16.0, 0.4, -1, 6.0,
    ),
    Template(
        "Dining",
        ("TST* NOPA {city}", "OPENTABLE*{ref}", "THE CHEESECAKE FACTORY {store}"),
        ("dinner", "", "birthday dinner", "dinner w/ friends"),
        65.0, 0.5, -1, 3.0,
    ),
    Template(
        "Dining",
        ("UBER *EATS", "UBER EATS {ref}", "DOORDASH*{name}", "GRUBHUB*{ref}"),
        ("dinner", "", "lunch delivery"),
        32.0, 0.4, -1, 3.0,
    ),
    # Transportation
    Template(
        "Transportation",
        ("UBER *TRIP", "UBER *TRIP HELP.UBER.COM", "UBER TRIP {ref}"),
        ("", "ride to airport", "ride home"),
        21.0, 0.5, -1, 4.0,
    ),
    Template(
        "Transportation",
        ("LYFT *RIDE {month}", "LYFT *RIDE", "LYFT *1 RIDE {ref}"),
        ("", "ride"),
        18.0, 0.5, -1, 2.5,
    ),
    Template(
        "Transportation",
        ("SHELL OIL {store}", "CHEVRON {store}", "COSTCO GAS #{store}", "76 - {store} {city}"),
        ("gas", "fuel", "", "gas"),
        48.0, 0.3, -1, 3.5,
    ),
    Template(
        "Transportation",
        ("CLIPPER SERVICE", "BART-{city}", "MTA*NYCT PAYGO", "PARKWHIZ*{ref}"),
        ("", "transit", "parking"),
        12.0, 0.8, -1, 2.0,
    ),
    # Entertainment
    Template(
        "Entertainment",
        ("NETFLIX.COM", "NETFLIX COM", "Netflix.com {ref}"),
        ("", "subscription", "monthly"),
        15.5, 0.15, -1, 1.5,
    ),
    Template(
        "Entertainment",
        ("SPOTIFY USA", "Spotify P{ref}", "SPOTIFY*{ref}"),
        ("", "subscription"),
        11.0, 0.15, -1, 1.5,
    ),
    Template(
        "Entertainment",
        ("AMC {city} #{store}", "TICKETMASTER*{ref}", "STEAMGAMES.COM {ref}", "REGAL {store}"),
        ("", "movie night", "concert tickets", ""),
        38.0, 0.7, -1, 2.5,
    ),
    # Shopping
    Template(
        "Shopping",
        ("AMAZON.COM*{ref}", "AMZN MKTP US*{ref}", "AMAZON MKTPLACE PMTS", "Amazon.com {ref}"),
        ("", "", "order {ref}", "gift"),
        35.0, 0.9, -1, 6.0,
    ),
    Template(
        "Shopping",
        ("TARGET #{store}", "TARGET T-{store} {city}", "TARGET.COM *{ref}"),
        ("", "", "household"),
        42.0, 0.7, -1, 3.5,
    ),
    Template(
        "Shopping",
        ("WALMART SUPERCENTER #{store}", "WAL-MART #{store}", "WALMART.COM {ref}"),
        ("", "household"),
        48.0, 0.7, -1, 3.0,
    ),
    Template(
        "Shopping",
        ("BEST BUY {store}", "APPLE STORE R{store}", "NIKE.COM {ref}", "IKEA {city}"),
        ("", "", "new headphones", "furniture"),
        120.0, 0.9, -1, 2.5,
    ),
    # Healthcare
    Template(
        "Healthcare",
        ("CVS/PHARMACY #{store}", "WALGREENS #{store}", "RITE AID PHARMACY {store}"),
        ("pharmacy", "prescription", "", "pharmacy pickup"),
        22.0, 0.6, -1, 2.5,
    ),
    Template(
        "Healthcare",
        ("KAISER PERMANENTE", "SUTTER HEALTH {ref}", "{name} DDS", "ONE MEDICAL {ref}"),
        ("copay", "", "dentist", "doctor visit"),
        95.0, 0.8, -1, 1.5,
    ),
    Template(
        "Healthcare",
        ("PLANET FITNESS {store}", "24 HOUR FITNESS {store}", "EQUINOX {city}", "CLASSPASS*{ref}"),
        ("gym", "gym membership", "", "monthly gym"),
        45.0, 0.4, -1, 2.0,
    ),
    # Transfers
    Template(
        "Transfers",
        ("ZELLE TO {name}", "ZELLE FROM {name}", "Zelle payment to {name} {ref}"),
        ("", "thanks!", "split", "for tickets"),
        80.0, 0.9, 0, 3.0,
    ),
    Template(
        "Transfers",
        ("VENMO *{name}", "VENMO PAYMENT {ref}", "VENMO CASHOUT {ref}"),
        ("", "pizza", "split bill", "drinks"),
        40.0, 0.9, 0, 3.0,
    ),
    Template(
        "Transfers",
        ("ONLINE TRANSFER TO SAV ...{ref}", "TRANSFER FROM CHK ...{ref}", "WIRE TRANSFER {ref}"),
        ("", "savings", "transfer"),
        400.0, 0.9, 0, 1.5,
    ),
    # Utilities
    Template(
        "Utilities",
        ("PG&E WEBRECURRING", "PGANDE WEB ONLINE", "CON EDISON", "SOCALGAS PAYMENT"),
        ("gas and electric", "utility bill", "", "electric"),
        110.0, 0.4, -1, 2.0,
    ),
    Template(
        "Utilities",
        ("COMCAST CABLE COMM", "AT&T*BILL PAYMENT", "VERIZON WRLS {ref}", "T-MOBILE AUTO PAY"),
        ("", "internet", "phone bill", "autopay"),
        85.0, 0.3, -1, 2.5,
    ),
    Template(
        "Utilities",
        ("CITY OF {city} WATER", "EBMUD WATER {ref}", "RECOLOGY {city}"),
        ("", "water bill", "utility"),
        60.0, 0.4, -1, 1.0,
    ),
    # Income
    Template(
        "Income",
        ("ACME CORP PAYROLL", "DIRECT DEP {name} INC", "ADP PAYROLL {ref}", "GUSTO PAY {ref}"),
        ("salary", "payroll", "", "direct deposit"),
        3200.0, 0.35, 1, 2.0,
    ),
    Template(
        "Income",
        ("INTEREST PAYMENT", "IRS TREAS 310 TAX REF", "DIVIDEND {ref}", "STRIPE TRANSFER {ref}"),
        ("", "interest", "tax refund", "deposit"),
        180.0, 1.2, 1, 1.0,
    ),
    # Rent
    Template(
        "Rent",
        ("{name} PROPERTY MGMT", "AVALON COMMUNITIES", "ZELLE TO {name}", "APPFOLIO*{ref}"),
        ("rent", "{month} rent", "rent", "monthly rent"),
        2300.0, 0.25, -1, 2.0,
    ),
    # The long tail: local and small merchants that no keyword list knows ({brand} is an
    # invented name). Real statements are full of them; only the amount, the shape of the
    # text and an occasional memo tell their category.
    Template(
        "Groceries",
        ("{brand} MARKET #{store}", "{brand} FOODS", "SQ *{brand} FARM", "{brand} BODEGA"),
        ("", "", "", "groceries"),
        38.0, 0.6, -1, 1.2,
    ),
    Template(
        "Dining",
        ("SQ *{brand}", "TST* {brand}", "{brand} KITCHEN", "{brand} BISTRO {city}"),
        ("", "", "lunch", "dinner"),
        19.0, 0.7, -1, 2,
    ),
    Template(
        "Transportation",
        ("{brand} PETRO {store}", "{brand} AUTO REPAIR", "CITY OF {city} METER", "{brand} TOLL"),
        ("", "", "tolls"),
        30.0, 0.8, -1, 0.75,
    ),
    Template(
        "Entertainment",
        ("{brand} THEATRE", "{brand} BOWL", "SQ *{brand} ARCADE", "{brand}.TV"),
        ("", "", "tickets"),
        24.0, 0.7, -1, 0.75,
    ),
    Template(
        "Shopping",
        ("{brand} BOUTIQUE", "{brand}.COM", "ETSY*{brand}", "{brand} OUTLET #{store}"),
        ("", "", "gift"),
        48.0, 0.9, -1, 1.5,
    ),
    Template(
        "Healthcare",
        ("{brand} DENTAL", "{brand} CLINIC", "{brand} PHYSICAL THERAPY", "{brand} YOGA"),
        ("", "", "copay"),
        70.0, 0.7, -1, 0.75,
    ),
    Template(
        "Utilities",
        ("{brand} ENERGY", "{brand} TELECOM", "{brand} WASTE MGMT", "{brand} BROADBAND"),
        ("", "autopay"),
        95.0, 0.3, -1, 0.6,
    ),
    Template(
        "Transfers",
        ("CHECK #{store}", "MOBILE DEPOSIT {ref}", "{name}"),
        ("", ""),
        250.0, 0.9, 0, 0.5,
    ),
    Template(
        "Income",
        ("{brand} LLC ACH CREDIT", "{brand} INC PPD {ref}"),
        ("", ""),
        1800.0, 0.7, 1, 0.4,
    ),
    Template(
        "Rent",
        ("{brand} RESIDENTIAL", "{brand} HOMES LLC", "{brand} REALTY {ref}"),
        ("", ""),
        2100.0, 0.3, -1, 0.35,
    ),
)  # fmt: skip

_CITIES: Final = ("SAN FRANCISCO", "OAKLAND", "BROOKLYN", "AUSTIN", "SEATTLE", "DENVER", "SF")
_NAMES: Final = ("JOHN SMITH", "MARIA GARCIA", "LI WEI", "A PATEL", "SAM OKAFOR", "J NGUYEN")
_MONTHS: Final = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV")
_SYLLABLES: Final = ("KA", "LO", "MI", "RA", "ZEN", "TO", "BEL", "NOR", "VI", "SA", "LU", "DO")
_MEMO_NOISE: Final = ("POS PURCHASE", "CARD 4821", "REF #{ref}", "{month} {day}", "RECURRING")

TYPO_RATE: Final = 0.04
MEMO_NOISE_RATE: Final = 0.2
REFUND_RATE: Final = 0.02
LABEL_NOISE_RATE: Final = 0.02


def _typo(text: str, rng: np.random.Generator) -> str:
    """Drop, double or swap one letter, as a hurried clerk or a truncating terminal does."""
    if len(text) < 4:
        return text
    i = int(rng.integers(1, len(text) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return text[:i] + text[i + 1 :]
    if kind == 1:
        return text[:i] + text[i] + text[i:]
    return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]


def _fill(pattern: str, rng: np.random.Generator) -> str:
    if "{" not in pattern:
        return pattern
    return pattern.format(
        store=int(rng.integers(100, 40_000)),
        city=_CITIES[int(rng.integers(len(_CITIES)))],
        ref=f"{int(rng.integers(10**5, 10**9)):X}",
        name=_NAMES[int(rng.integers(len(_NAMES)))],
        month=_MONTHS[int(rng.integers(len(_MONTHS)))],
        day=int(rng.integers(1, 29)),
        brand="".join(_SYLLABLES[int(i)] for i in rng.integers(len(_SYLLABLES), size=3)),
    )


def generate_transactions(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` labelled transactions, the same for the same ``(rows, seed)``.

    Ids are ``"txn-<seed>-<n>"``; users come from a pool of about one per 20 rows,
    some far more active than others.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    rng = np.random.default_rng(seed)
    weights = np.array([t.weight for t in TEMPLATES])
    picks = rng.choice(len(TEMPLATES), size=rows, p=weights / weights.sum())
    n_users = max(50, rows // 20)
    users = (rng.zipf(1.3, size=rows) - 1) % n_users
    user_ids = rng.permutation(n_users)[users]
    labels_all = list(CATEGORIES)

    merchants: list[str] = []
    memos: list[str] = []
    amounts = np.empty(rows, dtype=np.float64)
    labels: list[str] = []
    for n, idx in enumerate(picks):
        t = TEMPLATES[int(idx)]
        merchant = _fill(t.merchants[int(rng.integers(len(t.merchants)))], rng)
        if rng.random() < TYPO_RATE:
            merchant = _typo(merchant, rng)
        if rng.random() < 0.05:
            merchant = merchant.title()
        memo = _fill(t.memos[int(rng.integers(len(t.memos)))], rng)
        if rng.random() < MEMO_NOISE_RATE:
            noise = _fill(_MEMO_NOISE[int(rng.integers(len(_MEMO_NOISE)))], rng)
            memo = f"{memo} {noise}".strip()
        magnitude = round(float(t.median * np.exp(t.sigma * rng.standard_normal())), 2)
        sign = t.sign if t.sign != 0 else (1 if rng.random() < 0.4 else -1)
        if sign < 0 and rng.random() < REFUND_RATE:
            sign = 1
        amounts[n] = max(magnitude, 0.01) * sign
        label = t.label
        if rng.random() < LABEL_NOISE_RATE:
            label = labels_all[int(rng.integers(len(labels_all)))]
        merchants.append(merchant)
        memos.append(memo)
        labels.append(label)

    return pd.DataFrame(
        {
            "id": [f"txn-{seed}-{n:07d}" for n in range(rows)],
            "merchant": merchants,
            "memo": memos,
            "amount": amounts,
            "user_id": [f"u{u:06d}" for u in user_ids],
            "label": labels,
        },
        columns=list(COLUMNS),
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
    out = out.sort_values("id", kind="stable").reset_index(drop=True)
    return out[list(COLUMNS)]


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
                dtype={c: str for c in TEXT_COLUMNS},
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

    Each row is its six fields joined by the unit separator, amounts in Python's
    shortest round-trip form, rows joined by newlines in ``id`` order.
    """
    canonical = validate_transactions(frame)
    digest = hashlib.sha256()
    digest.update(("\x1f".join(COLUMNS) + "\n").encode())
    amounts = [repr(float(a)) for a in canonical["amount"]]
    for row in zip(
        canonical["id"],
        canonical["merchant"],
        canonical["memo"],
        amounts,
        canonical["user_id"],
        canonical["label"],
        strict=True,
    ):
        digest.update(("\x1f".join(row) + "\n").encode())
    return digest.hexdigest()


def label_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}


def class_list(labels: Sequence[str]) -> list[str]:
    return sorted(set(labels))
