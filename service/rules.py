"""The rule engine: the heuristics that answer when no model may, and the safety floor.

Rules are data: :data:`DEFAULT_RULES` is a table of :class:`Rule` rows (keywords or a
regular expression over the merchant and memo, conditions on the amount, a category and a
confidence), evaluated by one small interpreter, :class:`RuleEngine`. Adding a rule is
adding a row; the training engineer scores each row on held-out data
(``training/evaluate.py``), so a confidence can be set to the precision it measured.

How an answer is formed, for one transaction:

1. Text is normalised with :func:`service.features.normalise_text` (the features' own
   normalisation, so rules and model read the same words): lower case, runs of
   non-alphanumerics folded to one space. ``"WHOLEFDS MKT #10233"`` -> ``"wholefds mkt 10233"``.
2. A keyword matches whole words: ``"uber eats"`` matches ``"uber eats 7f3a"`` but ``"gas"``
   does not match ``"socalgas"``. A keyword also matches with its spaces removed, as the
   features do (``"whole foods"`` matches ``"wholefoods"``). A ``pattern`` is a regular
   expression searched in the normalised text (of the merchant, the memo, or both).
3. A rule fires when its text condition holds (or it has none) and the amount satisfies
   its sign and range.
4. Every category gets the highest confidence among the rules that fired for it; the
   candidates are the categories by that confidence, ties broken by table order. The
   answer names the rule behind the top candidate.
5. The last row, ``fallback-other``, always fires at a low confidence, so every answer
   has at least one candidate.

Two rows come from data rather than the table:

- ``mcc``: a transaction's ISO 18245 code names its category (``service/categories.py``)
  at :data:`MCC_CONFIDENCE`;
- ``brand``: a known brand's name among the words of the normalised descriptor
  (:func:`service.features.normalise_descriptor`; one to three words, joined without
  spaces: "whole foods" and "wholefoods" are one key) names its category at
  :data:`BRAND_CONFIDENCE`. The default lexicon is ``service/brands.json``: brands the
  name-suggestion-index lists in the United States, with categories by their tag
  (``training/lexicon.py``). A key that several categories claim goes to the one most
  entries give, or is left out on a tie.

Confidences are the rule's precision (how often the category is right when it fires), not
probabilities that sum to one across candidates.

>>> engine = RuleEngine.default()
>>> answer = engine.suggest("ZELLE TO JOHN SMITH", "march rent", -2300.0, top_k=2)
>>> answer.rule, answer.candidates[0][0], answer.candidates[1][0]
('rent-memo', 'Rent', 'Transfers')
>>> engine.suggest("???", "", -3.5, top_k=3).candidates[-1]
('Other', 0.05)
>>> engine.suggest("POS DEBIT HOME DEPOT #4521", "", -30.0).candidates[0]
('Shopping', 0.85)
>>> engine.suggest("ACME 123", "", -30.0, mcc="5812").candidates[0]
('Dining', 0.92)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from service import categories
from service.categories import mcc_category
from service.features import (
    brand_of,
    default_brands,
    normalise_descriptor,
    normalise_text,
    shipped_brands,
)

OTHER: Final = categories.OTHER
CATEGORIES: Final = categories.CATEGORIES
"""The categories the rules know, beside :data:`OTHER` (the same as the training data's)."""

MAX_NGRAM: Final = 3
"""Keywords are at most this many words long."""

MCC_CONFIDENCE: Final = 0.92
BRAND_CONFIDENCE: Final = 0.85


class Sign(StrEnum):
    """Direction of money: spending is negative, income positive (the data's convention)."""

    ANY = "any"
    DEBIT = "debit"
    CREDIT = "credit"


class Scope(StrEnum):
    """Which text a rule reads."""

    TEXT = "text"
    MERCHANT = "merchant"
    MEMO = "memo"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the rule table.

    ``keywords`` and ``pattern`` are alternatives (either may match); a rule with neither
    matches any text and is decided by its amount conditions alone. ``min_abs`` and
    ``max_abs`` bound the absolute amount, inclusive.
    """

    id: str
    category: str
    confidence: float
    keywords: tuple[str, ...] = ()
    pattern: str | None = None
    scope: Scope = Scope.TEXT
    sign: Sign = Sign.ANY
    min_abs: float | None = None
    max_abs: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence <= 1.0:
            raise ValueError(f"rule {self.id}: confidence {self.confidence} not in (0, 1]")
        for keyword in self.keywords:
            if normalise_text(keyword) != keyword or not keyword:
                raise ValueError(f"rule {self.id}: keyword {keyword!r} is not normalised text")
            if len(keyword.split(" ")) > MAX_NGRAM:
                raise ValueError(f"rule {self.id}: keyword {keyword!r} has > {MAX_NGRAM} words")
        if self.pattern is not None:
            re.compile(self.pattern)

    def amount_holds(self, amount: float) -> bool:
        if self.sign is Sign.DEBIT and not amount < 0:
            return False
        if self.sign is Sign.CREDIT and not amount > 0:
            return False
        magnitude = abs(amount)
        if self.min_abs is not None and magnitude < self.min_abs:
            return False
        return self.max_abs is None or magnitude <= self.max_abs


DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    # Rent: the memo says so, or a property manager is paid.
    Rule("rent-memo", "Rent", 0.95, ("rent", "monthly rent"), scope=Scope.MEMO,
         sign=Sign.DEBIT, min_abs=300.0),
    Rule("rent-payee", "Rent", 0.9,
         ("property mgmt", "property management", "avalon communities", "appfolio",
          "apartments", "landlord", "equity residential")),
    Rule("rent-word", "Rent", 0.6, ("rent",)),
    # Income: payroll and other credits.
    Rule("income-payroll", "Income", 0.95,
         ("payroll", "direct dep", "direct deposit", "salary", "gusto pay", "adp"),
         sign=Sign.CREDIT),
    Rule("income-other", "Income", 0.85,
         ("interest", "dividend", "tax ref", "irs treas", "tax refund", "stripe transfer",
          "deposit"),
         sign=Sign.CREDIT),
    Rule("income-large-credit", "Income", 0.45, sign=Sign.CREDIT, min_abs=1000.0),
    # Transfers between people and accounts.
    Rule("transfers-p2p", "Transfers", 0.85, ("zelle", "venmo", "cash app", "paypal")),
    Rule("transfers-bank", "Transfers", 0.85,
         ("online transfer", "transfer to", "transfer from", "wire transfer", "xfer")),
    # Groceries.
    Rule("groceries-store", "Groceries", 0.9,
         ("whole foods", "wholefds", "trader joe", "trader joes", "safeway", "kroger",
          "aldi", "amazon fresh", "amzn fresh", "walmart grocery", "sprouts", "grocery",
          "groceries")),
    Rule("groceries-warehouse", "Groceries", 0.7, ("costco", "costco whse"), sign=Sign.DEBIT),
    # Dining.
    Rule("dining-coffee", "Dining", 0.9,
         ("coffee", "starbucks", "peets", "blue bottle", "sightglass", "cafe")),
    Rule("dining-delivery", "Dining", 0.9, ("uber eats", "doordash", "grubhub", "postmates")),
    Rule("dining-restaurant", "Dining", 0.85,
         ("lunch", "dinner", "restaurant", "chipotle", "sweetgreen", "mcdonald", "mcdonalds",
          "tacos", "opentable", "cheesecake factory", "tst", "pizza")),
    # Transportation.
    Rule("transport-fuel-station", "Transportation", 0.9,
         ("costco gas", "shell oil", "chevron", "exxon", "arco", "fuel")),
    Rule("transport-gas-word", "Transportation", 0.6, ("gas",), sign=Sign.DEBIT, max_abs=150.0),
    Rule("transport-rideshare", "Transportation", 0.85, ("uber trip", "lyft", "lyft ride")),
    Rule("transport-uber", "Transportation", 0.6, ("uber",)),
    Rule("transport-transit", "Transportation", 0.85,
         ("clipper", "bart", "mta", "nyct", "transit", "parking", "parkwhiz")),
    # Entertainment.
    Rule("entertainment-streaming", "Entertainment", 0.95,
         ("netflix", "spotify", "hulu", "disney plus", "hbo max")),
    Rule("entertainment-events", "Entertainment", 0.85,
         ("amc", "ticketmaster", "steamgames", "regal cinemas", "cinema", "movie", "concert")),
    # Utilities (before shopping: "t mobile" must not look like a store).
    Rule("utilities-energy", "Utilities", 0.9,
         ("pg e", "pgande", "con edison", "socalgas", "gas and electric", "electric",
          "utility", "utility bill")),
    Rule("utilities-telecom", "Utilities", 0.85,
         ("comcast", "at t", "verizon", "t mobile", "internet", "phone bill")),
    Rule("utilities-water", "Utilities", 0.85, ("water", "ebmud", "recology", "water bill")),
    # Healthcare, fitness included (as the data files it).
    Rule("healthcare-pharmacy", "Healthcare", 0.9,
         ("pharmacy", "cvs", "walgreens", "rite aid", "prescription")),
    Rule("healthcare-care", "Healthcare", 0.85,
         ("kaiser", "kaiser permanente", "sutter health", "one medical", "dds", "dentist",
          "doctor", "copay", "medical")),
    Rule("healthcare-fitness", "Healthcare", 0.8,
         ("gym", "fitness", "planet fitness", "equinox", "classpass")),
    # Shopping: big stores; grocery and fuel rows above outrank them.
    Rule("shopping-online", "Shopping", 0.75,
         ("amazon", "amzn", "amzn mktp", "amazon com", "amazon mktplace")),
    Rule("shopping-store", "Shopping", 0.75,
         ("target", "walmart", "wal mart", "best buy", "apple store", "nike", "ikea",
          "household")),
    # Best guesses from the amount alone, then the floor.
    Rule("guess-large-debit", "Rent", 0.2, sign=Sign.DEBIT, min_abs=1500.0),
    Rule("guess-credit", "Transfers", 0.15, sign=Sign.CREDIT),
    Rule("fallback-other", OTHER, 0.05),
)  # fmt: skip
"""The default table. Order matters only to break ties between equal confidences."""


@dataclass(frozen=True, slots=True)
class RulesAnswer:
    """Candidates ``(category, confidence)``, best first, and the rule behind the first."""

    candidates: tuple[tuple[str, float], ...]
    rule: str

    @property
    def top(self) -> str:
        return self.candidates[0][0]


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    index: int
    rule: Rule
    pattern: re.Pattern[str] | None


@dataclass(slots=True)
class _Index:
    """Keyword -> rules, per scope, for lookups by the n-grams of a transaction's text."""

    by_scope: dict[Scope, dict[str, list[int]]] = field(
        default_factory=lambda: {s: {} for s in Scope}
    )


def _ngrams(words: Sequence[str]) -> list[str]:
    """Every run of 1..MAX_NGRAM words, spaced and with spaces removed.

    >>> sorted(set(_ngrams(["whole", "foods"])))
    ['foods', 'whole', 'whole foods', 'wholefoods']
    """
    grams: list[str] = []
    n = len(words)
    for i in range(n):
        w1 = words[i]
        grams.append(w1)
        if i + 1 < n:
            w2 = words[i + 1]
            grams.append(f"{w1} {w2}")
            grams.append(w1 + w2)
            if i + 2 < n:
                w3 = words[i + 2]
                grams.append(f"{w1} {w2} {w3}")
                grams.append(w1 + w2 + w3)
    return grams


class RuleEngine:
    """Evaluates a rule table. Immutable after construction; safe to share across threads."""

    def __init__(self, rules: Iterable[Rule], brands: Mapping[str, str] | None = None) -> None:
        self._brands: dict[str, str] = dict(brands or {})
        self._rules: tuple[Rule, ...] = tuple(rules)
        if not self._rules:
            raise ValueError("a rule table needs at least one rule")
        ids = [r.id for r in self._rules]
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"rule ids are not unique: {sorted(i for i in ids if ids.count(i) > 1)}"
            )
        last = self._rules[-1]
        if (
            last.keywords
            or last.pattern
            or last.sign is not Sign.ANY
            or last.min_abs
            or last.max_abs
        ):
            raise ValueError(
                f"the last rule ({last.id}) must be an unconditional fallback, so every "
                "transaction gets an answer"
            )
        self._index = _Index()
        self._always: list[_CompiledRule] = []  # no keywords: checked for every transaction
        self._compiled: list[_CompiledRule] = []
        for i, rule in enumerate(self._rules):
            compiled = _CompiledRule(i, rule, re.compile(rule.pattern) if rule.pattern else None)
            self._compiled.append(compiled)
            if rule.keywords:
                table = self._index.by_scope[rule.scope]
                for keyword in rule.keywords:
                    for form in {keyword, keyword.replace(" ", "")}:
                        table.setdefault(form, []).append(i)
            if not rule.keywords or compiled.pattern is not None:
                self._always.append(compiled)
        self._tables = [(scope, t) for scope, t in self._index.by_scope.items() if t]

    @classmethod
    def default(cls) -> RuleEngine:
        return cls(DEFAULT_RULES, shipped_brands())

    @property
    def brands(self) -> Mapping[str, str]:
        """Brand key (normalised name without spaces) -> category."""
        return self._brands

    @classmethod
    def default_without(cls, groups: Iterable[str]) -> RuleEngine:
        """The default engine not knowing the brands of ``groups`` (brand keys): the honest
        baseline on merchants a model never saw, which the rules must not know either."""
        return cls(DEFAULT_RULES, default_brands(exclude=groups))

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.category for r in self._rules))

    def fired(self, merchant: str, memo: str, amount: float) -> list[Rule]:
        """Every rule of the table that fires for one transaction, in table order."""
        merchant_n = normalise_text(merchant)
        memo_n = normalise_text(memo)
        texts = {
            Scope.MERCHANT: merchant_n,
            Scope.MEMO: memo_n,
            Scope.TEXT: f"{merchant_n} {memo_n}" if memo_n else merchant_n,
        }
        hits: set[int] = set()
        for scope, table in self._tables:
            text = texts[scope]
            if not text:
                continue
            for gram in _ngrams(text.split(" ")):
                found = table.get(gram)
                if found is not None:
                    hits.update(found)
        for compiled in self._always:
            if compiled.pattern is None or compiled.pattern.search(texts[compiled.rule.scope]):
                hits.add(compiled.index)
        rules = self._rules
        return [rules[i] for i in sorted(hits) if rules[i].amount_holds(amount)]

    def brand_category(self, merchant: str) -> str | None:
        """The category of the first known brand in the merchant's descriptor, longest
        key first at each position."""
        return brand_of(self._brands, normalise_descriptor(merchant))

    def suggest(
        self, merchant: str, memo: str, amount: float, top_k: int = 3, mcc: str | None = None
    ) -> RulesAnswer:
        """The best ``top_k`` categories for one transaction (at least one, always)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        best: dict[str, tuple[float, int, str]] = {}  # category -> (confidence, -order, rule)
        for order, rule in enumerate(self.fired(merchant, memo, amount)):
            seen = best.get(rule.category)
            if seen is None or rule.confidence > seen[0]:
                best[rule.category] = (rule.confidence, -order, rule.id)
        # The lexicon and the code: above the table only where more confident, and below
        # it on ties (a hand-written row is the more specific knowledge).
        for category, confidence, rule_id in (
            (self.brand_category(merchant), BRAND_CONFIDENCE, "brand"),
            (mcc_category(mcc), MCC_CONFIDENCE, "mcc"),
        ):
            if category is None:
                continue
            seen = best.get(category)
            if seen is None or confidence > seen[0]:
                best[category] = (confidence, -len(self._rules), rule_id)
        ranked = sorted(best.items(), key=lambda kv: (kv[1][0], kv[1][1]), reverse=True)
        candidates = tuple((category, conf) for category, (conf, _, _) in ranked[:top_k])
        return RulesAnswer(candidates=candidates, rule=ranked[0][1][2])

    def suggest_batch(
        self,
        merchants: Sequence[str],
        memos: Sequence[str],
        amounts: Sequence[float],
        top_k: int = 3,
    ) -> list[RulesAnswer]:
        """:meth:`suggest` for each transaction, in input order."""
        if not len(merchants) == len(memos) == len(amounts):
            raise ValueError(
                "merchants, memos and amounts differ in length: "
                f"{len(merchants)}, {len(memos)}, {len(amounts)}"
            )
        return [
            self.suggest(m, d, float(a), top_k)
            for m, d, a in zip(merchants, memos, amounts, strict=True)
        ]
