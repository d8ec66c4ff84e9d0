"""Who serves a transaction, and what is computed silently beside it (pure; DESIGN.md contract 4).

**Canary** membership is sticky per user and monotonic in the percent: a user's bucket is a
stable hash of ``(salt, user_id)`` into :data:`BUCKETS` buckets, and the user is in the
canary when ``bucket < round(canary_percent * 100)``. Raising the percent only adds buckets,
so no user ever leaves the canary while it grows; a new salt reshuffles everyone.

**Shadow** sampling hashes the transaction id (with the salt) under another domain
separator, so whether a transaction is shadowed is independent of whether its user is in
the canary.

Worked example (salt ``"s"``): if ``canary_bucket("s", "u1") == 1234`` then u1 is outside
a 12% canary (threshold 1200) and inside a 12.35% one (threshold 1235) and every larger one.

The decision table (:meth:`Router.route`), for a transaction whose model roles are loaded:

====================  ==============  ===============================  ==================
mode                  user            serves                           shadow (if sampled)
====================  ==============  ===============================  ==================
disabled              any             rules                            none
heuristic             any             rules                            candidate, else stable
model / auto          in canary       candidate                        stable
model / auto          not in canary   stable (rules when none)         candidate, else none
====================  ==============  ===============================  ==================

A role that is configured but not loaded (missing or corrupt version) never serves: the
candidate falls back to the stable, the stable to rules, and a shadow that is not loaded
is skipped. The confidence threshold and model errors are applied later, by the caller,
because they depend on the model's answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from service.metric_names import FallbackReason, Source
from service.serving_config import BUCKETS, ServingConfig, SuggestMode

_CANARY_PERSON: Final = b"mr/canary/v1"
_SHADOW_PERSON: Final = b"mr/shadow/v1"


def _bucket(person: bytes, salt: str, key: str) -> int:
    # blake2b's personalisation string is the domain separator; "\x00" cannot occur in
    # a salt, so ("a", "b\x00c") and ("a\x00b", "c") never collide.
    digest = hashlib.blake2b(
        salt.encode() + b"\x00" + key.encode(), digest_size=8, person=person
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def canary_bucket(salt: str, user_id: str) -> int:
    """The user's canary bucket in ``[0, BUCKETS)``; the same for the same salt and user."""
    return _bucket(_CANARY_PERSON, salt, user_id)


def shadow_bucket(salt: str, transaction_id: str) -> int:
    """The transaction's shadow bucket in ``[0, BUCKETS)``, independent of the canary bucket."""
    return _bucket(_SHADOW_PERSON, salt, transaction_id)


def percent_threshold(percent: float) -> int:
    """Buckets below this are selected at ``percent``; monotonic non-decreasing.

    >>> percent_threshold(10.0), percent_threshold(0.29), percent_threshold(100.0)
    (1000, 29, 10000)
    """
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent {percent} not in [0, 100]")
    return round(percent * (BUCKETS / 100))


@dataclass(frozen=True, slots=True)
class Route:
    """The plan for one transaction.

    ``fallback`` says why rules serve although a model was configured to (a version that
    did not load, or models disabled); ``None`` when the designated server serves.
    """

    serve: Source
    shadow: Source | None = None
    fallback: FallbackReason | None = None


@dataclass(frozen=True, slots=True)
class Router:
    """The routing of one serving configuration over the models that are actually loaded."""

    salt: str
    mode: SuggestMode
    enabled: bool
    stable_configured: bool
    candidate_configured: bool
    stable_loaded: bool
    candidate_loaded: bool
    canary_threshold: int
    shadow_threshold: int

    @classmethod
    def build(cls, config: ServingConfig, loaded: frozenset[Source]) -> Router:
        return cls(
            salt=config.salt,
            mode=config.mode,
            enabled=config.enabled,
            stable_configured=config.stable is not None,
            candidate_configured=config.candidate is not None,
            stable_loaded=config.stable is not None and Source.STABLE in loaded,
            candidate_loaded=config.candidate is not None and Source.CANDIDATE in loaded,
            canary_threshold=percent_threshold(config.canary_percent),
            shadow_threshold=percent_threshold(config.shadow_percent),
        )

    def in_canary(self, user_id: str) -> bool:
        if self.canary_threshold >= BUCKETS:  # every bucket: no need to hash
            return True
        return self.canary_threshold > 0 and canary_bucket(self.salt, user_id) < (
            self.canary_threshold
        )

    def shadowed(self, transaction_id: str) -> bool:
        if self.shadow_threshold >= BUCKETS:
            return True
        return self.shadow_threshold > 0 and shadow_bucket(self.salt, transaction_id) < (
            self.shadow_threshold
        )

    def route(self, user_id: str, transaction_id: str) -> Route:
        """Who serves this transaction and which model (if any) runs in its shadow."""
        if not self.enabled:
            configured = self.stable_configured or self.candidate_configured
            return Route(Source.RULES, None, FallbackReason.DISABLED if configured else None)
        if self.mode is SuggestMode.HEURISTIC:
            return Route(Source.RULES, self._shadow_of(Source.RULES, transaction_id))
        designated = Source.STABLE
        if self.candidate_configured and self.in_canary(user_id):
            designated = Source.CANDIDATE
        elif not self.stable_configured:
            designated = Source.RULES
        serve = designated
        if serve is Source.CANDIDATE and not self.candidate_loaded:
            serve = Source.STABLE if self.stable_configured else Source.RULES
        if serve is Source.STABLE and not self.stable_loaded:
            serve = Source.RULES
        fallback = (
            FallbackReason.NO_MODEL
            if serve is Source.RULES and designated is not (Source.RULES)
            else None
        )
        return Route(serve, self._shadow_of(serve, transaction_id), fallback)

    def _shadow_of(self, serve: Source, transaction_id: str) -> Source | None:
        if self.shadow_threshold == 0:
            return None
        if serve is Source.CANDIDATE:
            shadow = Source.STABLE if self.stable_loaded else None
        elif self.candidate_loaded:
            shadow = Source.CANDIDATE
        elif serve is Source.RULES and self.stable_loaded:
            shadow = Source.STABLE
        else:
            shadow = None
        if shadow is None or not self.shadowed(transaction_id):
            return None
        return shadow
