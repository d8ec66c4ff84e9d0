"""The service's rule engine as the baseline a model must beat.

Training writes no rules of its own: it scores :class:`service.rules.RuleEngine` (the
heuristics that serve when no model may) on the same held-out rows as the model, through
the :class:`training.evaluate.RuleSuggester` protocol, so a test can pass any engine.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.rules import RuleEngine
from training.evaluate import RuleSuggester


class RuleEngineBaseline:
    """The top category of :meth:`service.rules.RuleEngine.suggest`.

    The engine always answers (its last rule is a low-confidence ``Other``); a category the
    model does not know, such as ``Other``, counts as a wrong answer and as not covered.
    """

    def __init__(self, engine: RuleEngine) -> None:
        self._engine = engine

    def top_label(
        self, merchant: str, memo: str, amount: float, mcc: str | None = None
    ) -> str | None:
        return self._engine.suggest(merchant, memo, amount, top_k=1, mcc=mcc).top


def load_rule_engine(unseen_groups: Iterable[str] = ()) -> RuleSuggester:
    """The service's default rule engine, not knowing the brands of ``unseen_groups`` (the
    test split's groups: graded on merchants the model never saw, the rules must not have
    them in their lexicon either; docs/decisions/0009-features-for-real-descriptors.md)."""
    return RuleEngineBaseline(RuleEngine.default_without(unseen_groups))
