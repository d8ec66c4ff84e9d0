"""The features: one source of truth for training and serving (DESIGN.md contract 1).

Training and serving both call :func:`extract`, the one constructor of a
:class:`FeatureBatch` (docs/decisions/0008-scorer-interface.md). A batch holds two blocks:

- ``dense``: :data:`FEATURE_NAMES`, in this order:

  - 6 numeric: amount, amount_abs, is_negative, is_positive, merchant_len, memo_len;
  - 19 keyword flags of the original system (11 merchants, 8 category words), now
    matching **whole words** of the normalised text ("LAS VEGAS" is not gas; "whole
    foods" also matches "wholefoods");
  - 10 MCC features: ``has_mcc`` and one flag per category an ISO 18245 code defines
    (``service/categories.py``; Income has no code);
  - 10 brand features: ``brand_known`` and one flag per category, set when a brand of the
    lexicon (``service/brands.json``: the brands the name-suggestion-index lists in the
    United States, by default) is among the descriptor's words (:func:`brand_of`, the
    rules' own lookup). Training keeps the lexicon from knowing the held-out brands and a
    share of the training brands, so the trees learn to read the text where the lexicon
    is silent (``training/train.py``).

- ``tokens``: the hashed text of the normalised descriptor, a CSR block of
  :data:`TEXT_DIMENSIONS` (2^18) columns: each word (``w:``), each pair of adjacent words
  (``b:``), and every character 3-, 4- and 5-gram of `` <descriptor> `` (spaces included,
  so grams at word edges say where a word starts and ends), counted, then each row scaled
  to unit length. The memo's words are hashed apart (``m:``). A trained linear stage of
  the model turns this block into one score per class (``service/models.py``): the
  LightGBM input is ``dense`` followed by those scores (:func:`model_feature_names`).

Normalisation (:func:`normalise_descriptor`) is what card processors' noise needs: NFKC,
case folded (``"CAFÉ"`` -> ``"café"``: letters kept), processor and bank prefixes removed
(``SQ *``, ``TST*``, ``PAYPAL *``, ``POS DEBIT``, ``CHECKCARD 1102``, ``PURCHASE
AUTHORIZED ON 11/02``...), every word holding a digit removed (store numbers, dates,
reference codes such as ``*2K3GH7``), a trailing US state code removed, punctuation
folded to spaces.

The hashing is this module's own (a vectorised polynomial hash of UTF-8 bytes, in numpy):
scikit-learn's ``HashingVectorizer`` computes the same kind of features but costs about
2 ms for one row and 68 us a row in batches here, more than the whole serving budget
(docs/decisions/0009-features-for-real-descriptors.md).

>>> normalise_descriptor("SQ *BLUE BOTTLE COFFEE 0042 OAKLAND CA")
'blue bottle coffee oakland'
>>> normalise_descriptor("PURCHASE AUTHORIZED ON 11/02 WHOLEFDS MKT #10233")
'wholefds mkt'
>>> row = extract(["WHOLEFOODS MKT #123"], ["weekly grocery run"], [-54.2], ["5411"])
>>> d = dict(zip(FEATURE_NAMES, row.dense[0].tolist()))
>>> d["kw_whole_foods"], d["kw_grocery"], d["is_negative"], d["mcc_groceries"]
(1.0, 1.0, 1.0, 1.0)
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from service.categories import CATEGORIES, INCOME, mcc_category

FEATURE_VERSION: Final = 3
"""Version of the feature code. Bump it whenever the same inputs would give other feature
values (normalisation, tokens, hashing, keyword forms, MCC table): serving refuses an
artifact whose ``feature_version`` differs, since a model trained on other values answers
wrongly with no error (docs/decisions/0008-scorer-interface.md)."""

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
N_ORIGINAL: Final = len(ORIGINAL_FEATURES)

MCC_CATEGORIES: Final = tuple(c for c in CATEGORIES if c != INCOME)
MCC_FEATURES: Final[tuple[str, ...]] = (
    "has_mcc",
    *(f"mcc_{c.lower()}" for c in MCC_CATEGORIES),
)

BRAND_FEATURES: Final[tuple[str, ...]] = (
    "brand_known",
    *(f"brand_{c.lower()}" for c in MCC_CATEGORIES),
)

FEATURE_NAMES: Final[tuple[str, ...]] = ORIGINAL_FEATURES + MCC_FEATURES + BRAND_FEATURES
"""The dense block of a :class:`FeatureBatch`, in order."""

TEXT_BITS: Final = 18
TEXT_DIMENSIONS: Final = 1 << TEXT_BITS
"""Columns of the hashed text block."""
CHAR_NGRAMS: Final = (3, 4, 5)
TEXT_SCORE_PREFIX: Final = "text_"

FeatureMatrix = npt.NDArray[np.float64]

_KEYWORDS: Final = MERCHANT_KEYWORDS + CATEGORY_KEYWORDS
_MCC_COLUMN: Final = {c: N_ORIGINAL + 1 + i for i, c in enumerate(MCC_CATEGORIES)}
_BRAND_KNOWN: Final = N_ORIGINAL + len(MCC_FEATURES)
_BRAND_COLUMN: Final = {c: _BRAND_KNOWN + 1 + i for i, c in enumerate(MCC_CATEGORIES)}

# Payment facilitators that print "<PREFIX>*<merchant>", and bank wording before a name.
_FACILITATOR = re.compile(
    r"^\s*(?:sq|tst|sp|pp|paypal|py|ppl|bt|wpy|ic|dd|fs|cke|pos|sqc|clk|zip|ec|in)\s*\*\s*"
)
_BANK_WORDING = re.compile(
    r"^\s*(?:(?:recurring\s+)?purchase\s+authori[sz]ed\s+on\s+\d{1,2}/\d{1,2}(?:/\d{2,4})?"
    r"|pos\s+(?:debit|purchase|withdrawal)|pos|checkcard\s+\d{4}|check\s*card(?:\s+\d{4})?"
    r"|debit\s+card\s+purchase|dbt\s+crd\s+\d+|debit\s+purchase|card\s+purchase"
    r"|visa\s+purchase|purchase|point\s+of\s+sale)\s*[-:]?\s*"
)
_NON_WORD = re.compile(r"[\W_]+")
_STATE_CODES: Final = (
    "al ak az ar ca co ct de fl ga hi id il in ia ks ky la me md ma mi mn ms mo mt ne nv "
    "nh nj nm ny nc nd oh ok or pa ri sc sd tn tx ut vt va wa wv wi wy dc"
)
_US_STATES: Final = frozenset(_STATE_CODES.split())


def normalise_text(text: str) -> str:
    """NFKC, case folded, every run of non-word characters folded to one space.

    >>> normalise_text("  Whole-Foods MKT #10233 ")
    'whole foods mkt 10233'
    """
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


@lru_cache(maxsize=65536)
def normalise_descriptor(text: str) -> str:
    """A card descriptor without processor noise: see the module's doc (cached: a
    merchant's descriptor repeats)."""
    s = unicodedata.normalize("NFKC", text).casefold()
    for _ in range(3):  # "POS DEBIT SQ *..." has two layers
        stripped = _FACILITATOR.sub("", _BANK_WORDING.sub("", s, count=1), count=1)
        if stripped == s:
            break
        s = stripped
    words = [w for w in _NON_WORD.sub(" ", s).split() if not any(ch.isdigit() for ch in w)]
    if len(words) >= 3 and words[-1] in _US_STATES:
        words.pop()
    return " ".join(words)


_KEYWORD_INDEX: Final[dict[str, int]] = {
    form: i for i, k in enumerate(_KEYWORDS) for form in {k, k.replace(" ", "")}
}
_KEYWORD_FIRST_WORDS: Final = frozenset(k.split()[0] for k in _KEYWORDS if " " in k)


def keyword_flags(words: Sequence[str]) -> list[float]:
    """The 19 keyword flags of normalised words: a keyword is a whole word (or, written
    with several words, those words in a row or joined: "whole foods", "wholefoods")."""
    flags = [0.0] * len(_KEYWORDS)
    index = _KEYWORD_INDEX
    for i, w in enumerate(words):
        j = index.get(w)
        if j is not None:
            flags[j] = 1.0
        if w in _KEYWORD_FIRST_WORDS and i + 1 < len(words):
            j = index.get(f"{w} {words[i + 1]}")
            if j is not None:
                flags[j] = 1.0
    return flags


# -- the brand lexicon ---------------------------------------------------------------------

BRANDS_FILE: Final = Path(__file__).with_name("brands.json")
BRAND_MAX_WORDS: Final = 3
"""A brand's name is matched over runs of at most this many words of a descriptor."""
MIN_BRAND_KEY: Final = 3
"""Shorter brand keys ("3", "a1") would match stray words."""

BrandTable = Mapping[str, str]
"""Brand key (:func:`brand_key`) -> category."""


def brand_key(name: str) -> str:
    """A brand's key: its normalised descriptor without spaces (also its split group)."""
    return normalise_descriptor(name).replace(" ", "")


def brand_table(entries: Iterable[tuple[Sequence[str], str]]) -> dict[str, str]:
    """Brand key -> category, from ``(names, category)`` entries. A key that entries of
    several categories claim goes to the category most of them give ("Kroger" names two
    supermarket entries, a pharmacy and a fuel station: Groceries; "Kroger Fuel" keeps
    its own key); on a tie it is left out.

    >>> brand_table([(["Kroger"], "Groceries"), (["Kroger", "Kroger Fuel"], "Transportation"),
    ...              (["Kroger"], "Groceries"), (["Apex"], "Dining"), (["Apex"], "Shopping")])
    {'kroger': 'Groceries', 'krogerfuel': 'Transportation'}
    """
    claims: dict[str, Counter[str]] = {}
    for names, category in entries:
        forms = [*names, *(n[4:] for n in names if n.casefold().startswith("the "))]
        for key in {brand_key(name) for name in forms}:
            if len(key) >= MIN_BRAND_KEY:
                claims.setdefault(key, Counter())[category] += 1
    table: dict[str, str] = {}
    for key, counts in claims.items():
        ranked = counts.most_common(2)
        if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
            table[key] = ranked[0][0]
    return table


def default_brands(path: Path = BRANDS_FILE, exclude: Iterable[str] = ()) -> dict[str, str]:
    """The brand table of ``service/brands.json``, without the brands whose
    :func:`brand_key` is in ``exclude`` (all their names), nor any key in ``exclude`` (the
    alternate name of another brand: "Coco's Bakery" is also "coco's", the key of an
    unrelated brand a test may hold)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    skip = set(exclude)
    table = brand_table(
        ((name, *alts), category)
        for name, alts, category, *_ in doc["brands"]
        if brand_key(name) not in skip
    )
    return {k: v for k, v in table.items() if k not in skip}


@lru_cache(maxsize=1)
def shipped_brands() -> BrandTable:
    """The default brand table (loaded once)."""
    return default_brands()


@lru_cache(maxsize=1)
def lexicon_digest(path: Path = BRANDS_FILE) -> str:
    """sha256 of the lexicon file: part of what the brand features mean, recorded in a
    model's manifest and checked when it is loaded."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def brand_of(table: BrandTable, descriptor: str) -> str | None:
    """The category of the first known brand among the words of a normalised descriptor,
    the longest key first at each position ("whole foods" and "wholefoods" are one key).

    >>> brand_of({"wholefoods": "Groceries", "whole": "Shopping"}, "wholefds mkt whole foods")
    'Groceries'
    """
    if not table:
        return None
    words = descriptor.split()
    for i in range(len(words)):
        for j in range(min(len(words), i + BRAND_MAX_WORDS), i, -1):
            key = "".join(words[i:j])
            if len(key) >= MIN_BRAND_KEY:
                found = table.get(key)
                if found is not None:
                    return found
    return None


@lru_cache(maxsize=65536)
def _shipped_brand_of(descriptor: str) -> str | None:
    return brand_of(shipped_brands(), descriptor)


# -- hashed text ---------------------------------------------------------------------------

_MULTIPLIER: Final = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime
_MIX: Final = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing of the final value
_SHIFT: Final = np.uint64(64 - TEXT_BITS)
_SEEDS: Final = {n: np.uint64(0xCBF29CE484222325 + 7919 * n) for n in CHAR_NGRAMS}


def _hash_bytes_rows(
    codes: npt.NDArray[np.uint64], lengths: npt.NDArray[np.int64], n: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(row, column) of every character n-gram of each row of ``codes`` (padded bytes)."""
    width = codes.shape[1] - n + 1
    if width <= 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    h = np.full((codes.shape[0], width), _SEEDS[n], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = (h ^ codes[:, k : k + width]) * _MULTIPLIER
        cols = (h * _MIX) >> _SHIFT
    valid = np.arange(width)[None, :] <= (lengths[:, None] - n)
    rows = np.nonzero(valid)[0]
    return rows, cols[valid].astype(np.intp)


def _hash_token(token: str) -> int:
    h = 0xCBF29CE484222325
    for byte in token.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return ((h * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> (64 - TEXT_BITS)


@lru_cache(maxsize=262144)
def _word_columns(prefix: str, normalised: str) -> tuple[int, ...]:
    words = normalised.split()
    tokens = [f"{prefix}w:{w}" for w in words]
    tokens += [f"{prefix}b:{a} {b}" for a, b in pairwise(words)]
    return tuple(_hash_token(t) for t in tokens)


def _text_block(
    descriptors: Sequence[str], memos: Sequence[str]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """CSR ``(indptr, indices, data)`` of the hashed text, rows scaled to unit length."""
    n = len(descriptors)
    encoded = [f" {d} ".encode() for d in descriptors]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=n)
    width = int(lengths.max()) if n else 0
    padded = np.zeros((n, max(width, 1)), dtype=np.uint8)
    for i, e in enumerate(encoded):
        padded[i, : len(e)] = np.frombuffer(e, dtype=np.uint8)
    codes = padded.astype(np.uint64)
    row_parts: list[npt.NDArray[np.intp]] = []
    col_parts: list[npt.NDArray[np.intp]] = []
    for gram in CHAR_NGRAMS:
        r, cidx = _hash_bytes_rows(codes, lengths, gram)
        row_parts.append(r)
        col_parts.append(cidx)
    word_rows: list[int] = []
    word_cols: list[int] = []
    for i, (d, m) in enumerate(zip(descriptors, memos, strict=True)):
        words = _word_columns("", d)
        if m:
            words = words + _word_columns("m:", m)
        word_rows.extend([i] * len(words))
        word_cols.extend(words)
    row_parts.append(np.asarray(word_rows, dtype=np.intp))
    col_parts.append(np.asarray(word_cols, dtype=np.intp))
    rows = np.concatenate(row_parts)
    cols = np.concatenate(col_parts)
    # Count duplicates (a gram may repeat in a row): sort by (row, col), run-length.
    key = rows.astype(np.int64) * TEXT_DIMENSIONS + cols
    key.sort()
    unique, counts = np.unique(key, return_counts=True)
    urows = (unique // TEXT_DIMENSIONS).astype(np.intp)
    data = counts.astype(np.float64)
    norms = np.sqrt(np.bincount(urows, weights=data * data, minlength=n))
    data /= np.where(norms > 0, norms, 1.0)[urows]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(urows, minlength=n), out=indptr[1:])
    return indptr, (unique % TEXT_DIMENSIONS).astype(np.int32), data.astype(np.float32)


Block = tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]
"""One row's text block: its column indices and values (read-only)."""


class _TextBlocks:
    """Rows' text blocks by ``(descriptor, memo)``, the least recently used dropped first:
    descriptors repeat, and one row hashed alone costs ~150 us. A batch looks every row up
    and hashes the rows it misses together, in one vectorised pass (``functools.lru_cache``
    would hash each miss alone). Thread-safe."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._blocks: OrderedDict[tuple[str, str], Block] = OrderedDict()
        self._lock = threading.Lock()

    def csr(
        self, descriptors: Sequence[str], memos: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """The CSR block of these rows, as :func:`_text_block` gives it."""
        keys = list(zip(descriptors, memos, strict=True))
        found: list[Block | None] = []
        with self._lock:
            for key in keys:
                block = self._blocks.get(key)
                if block is not None:
                    self._blocks.move_to_end(key)
                found.append(block)
        missing = [i for i, block in enumerate(found) if block is None]
        if missing:
            indptr, indices, data = _text_block(
                [descriptors[i] for i in missing], [memos[i] for i in missing]
            )
            with self._lock:
                for k, i in enumerate(missing):
                    row = slice(int(indptr[k]), int(indptr[k + 1]))
                    block = (indices[row].copy(), data[row].copy())
                    for array in block:
                        array.setflags(write=False)  # shared by every batch holding the row
                    found[i] = self._blocks[keys[i]] = block
                while len(self._blocks) > self._size:
                    self._blocks.popitem(last=False)
        blocks = [block for block in found if block is not None]
        indptr = np.array([0, *accumulate(len(b[0]) for b in blocks)], dtype=np.int64)
        if len(blocks) == 1:
            return indptr, blocks[0][0], blocks[0][1]
        indices = np.concatenate([b[0] for b in blocks])
        return indptr, indices, np.concatenate([b[1] for b in blocks])


_TEXT_BLOCKS: Final = _TextBlocks(16384)


# -- the batch -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class FeatureBatch:
    """The features of a batch of transactions: what every model of a request scores.

    Immutable (its arrays are made read-only), so it can be handed to another thread while
    the request goes on. Only this module and ``service/models.py`` look inside:

    - ``dense``: ``(n, len(FEATURE_NAMES))`` float64, in :data:`FEATURE_NAMES` order;
    - ``indptr``, ``indices``, ``data``: the hashed text block as CSR arrays over
      :data:`TEXT_DIMENSIONS` columns (:meth:`text_matrix` gives it as a SciPy matrix).
    """

    dense: FeatureMatrix
    indptr: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int32]
    data: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        if self.dense.ndim != 2 or self.dense.shape[1] != len(FEATURE_NAMES):
            raise ValueError(
                f"dense features must be (n, {len(FEATURE_NAMES)}), got {self.dense.shape}"
            )
        if len(self.indptr) != self.dense.shape[0] + 1 or len(self.indices) != len(self.data):
            raise ValueError("the text block's CSR arrays do not fit the dense block")
        for array in (self.dense, self.indptr, self.indices, self.data):
            array.setflags(write=False)

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def take(self, rows: Sequence[int]) -> FeatureBatch:
        """The given rows, in that order (a row may repeat)."""
        picked = np.asarray(rows, dtype=np.intp)
        starts, ends = self.indptr[picked], self.indptr[picked + 1]
        sizes = ends - starts
        indptr = np.zeros(len(picked) + 1, dtype=np.int64)
        np.cumsum(sizes, out=indptr[1:])
        if len(picked) and indptr[-1]:
            gather = np.repeat(starts - indptr[:-1], sizes) + np.arange(indptr[-1])
        else:
            gather = np.empty(0, dtype=np.intp)
        return FeatureBatch(
            self.dense[picked], indptr, self.indices[gather].copy(), self.data[gather].copy()
        )

    @staticmethod
    def concat(batches: Sequence[FeatureBatch]) -> FeatureBatch:
        """The rows of ``batches``, in order (the shadow queue joins requests with it)."""
        if len(batches) == 1:
            return batches[0]
        offsets = np.cumsum([0] + [int(b.indptr[-1]) for b in batches[:-1]])
        tails = [b.indptr[1:] + o for b, o in zip(batches, offsets, strict=True)]
        indptr = np.concatenate([np.zeros(1, np.int64), *tails])
        return FeatureBatch(
            np.vstack([b.dense for b in batches]),
            indptr,
            np.concatenate([b.indices for b in batches]),
            np.concatenate([b.data for b in batches]),
        )

    def text_matrix(self) -> Any:
        """The hashed text block as a ``scipy.sparse.csr_matrix`` (training's input)."""
        from scipy import sparse  # type: ignore[import-untyped]  # noqa: PLC0415

        return sparse.csr_matrix(
            (self.data, self.indices, self.indptr), shape=(len(self), TEXT_DIMENSIONS)
        )


def model_feature_names(classes: Sequence[str]) -> tuple[str, ...]:
    """What the trees of a model with these classes read: :data:`FEATURE_NAMES`, then the
    text stage's score of each class (``text_<class>``)."""
    return FEATURE_NAMES + tuple(f"{TEXT_SCORE_PREFIX}{c}" for c in classes)


def extract(
    merchants: Sequence[str],
    memos: Sequence[str],
    amounts: Sequence[float] | npt.NDArray[np.floating],
    mccs: Sequence[str | None] | None = None,
    brands: BrandTable | None = None,
) -> FeatureBatch:
    """The features of a batch, rows in input order: the one constructor of
    :class:`FeatureBatch`, for training and serving alike.

    ``mccs`` holds each row's ISO 18245 code or None (``None`` or empty: no row has one).
    ``brands`` is the brand table the brand features read (``None``: the shipped one, what
    serving uses; training passes one without the brands it holds out).
    """
    n = len(merchants)
    if len(memos) != n or len(amounts) != n or (mccs is not None and len(mccs) not in (0, n)):
        raise ValueError(
            f"merchants, memos, amounts and mccs differ in length: {n}, {len(memos)}, "
            f"{len(amounts)}, {len(mccs) if mccs is not None else '-'}"
        )
    dense = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float64)
    amt = np.asarray(amounts, dtype=np.float64).reshape(n)
    dense[:, 0] = amt
    dense[:, 1] = np.abs(amt)
    dense[:, 2] = amt < 0
    dense[:, 3] = amt > 0
    dense[:, 4] = [len(m) for m in merchants]
    dense[:, 5] = [len(m) for m in memos]
    descriptors = [normalise_descriptor(m) for m in merchants]
    memo_texts = [normalise_text(m) if m else "" for m in memos]
    for r in range(n):
        words = descriptors[r].split()
        if memo_texts[r]:
            words += memo_texts[r].split()
        dense[r, 6:N_ORIGINAL] = keyword_flags(words)
    if mccs:
        for r, code in enumerate(mccs):
            if code is None:
                continue
            dense[r, N_ORIGINAL] = 1.0
            category = mcc_category(code)
            if category is not None and category in _MCC_COLUMN:
                dense[r, _MCC_COLUMN[category]] = 1.0
    lookup = _shipped_brand_of if brands is None else partial(brand_of, brands)
    for r, descriptor in enumerate(descriptors):
        category = lookup(descriptor)
        if category is not None:
            dense[r, _BRAND_KNOWN] = 1.0
            column = _BRAND_COLUMN.get(category)
            if column is not None:
                dense[r, column] = 1.0
    if n <= CACHED_BATCH_ROWS:  # a request's or a coalesced batch's rows: each cached
        return FeatureBatch(dense, *_TEXT_BLOCKS.csr(descriptors, memo_texts))
    return FeatureBatch(dense, *_text_block(descriptors, memo_texts))


CACHED_BATCH_ROWS: Final = 64
"""Batches up to this many rows (what serving answers on its event loop, one request or
several coalesced) take each row's text block from a cache (:class:`_TextBlocks`); larger
batches (training, big requests) hash in one vectorised pass. The two give the same arrays:
each row's block depends on that row alone."""
