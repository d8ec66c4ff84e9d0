"""Event ids: what an answer was, carried by the client back to any pod with its feedback.

Pods are stateless, so the id itself says who served the answer, which model version, the
top-1 category it suggested and when it was issued; any pod can then count feedback by
who served it::

    e2.<base64url(JSON [served_by, model_version, top1])>.<issued>.<random>[.<tag>]

with 12 random base64url characters and a 16-character tag.

``issued`` is the Unix time in whole seconds. The first part is the same for every answer
with the same (served_by, version, top1), so it is encoded once and cached.

Integrity, because feedback acceptance can gate a rollout:

- **Signed.** With a key (``MODELROLLOUT_EVENT_KEY``, the same on every pod of a target;
  the chart generates one into a Secret and sets it by default) a truncated HMAC-SHA256
  ``tag`` over everything before it is appended and checked, so a forged or altered id is
  refused. Without a key a well-formed id is trusted (and a tag is ignored).
- **Expiring.** An id older than ``ttl_seconds`` (``MODELROLLOUT_EVENT_TTL_SECONDS``,
  default one hour), or issued more than a minute in the future, is refused.
- **Counted once per pod.** :meth:`EventCodec.redeem` remembers the ids it counted until
  they expire, at most ``recent_limit`` of them (default 100,000, a few MB); a second
  feedback on the same id is :class:`DuplicateEventError`. Limits: the set is per pod and
  in memory, so one id can be counted once on *each* pod, and again after a pod restarts;
  when more than ``recent_limit`` ids are redeemed within one TTL on one pod, the oldest
  are forgotten early. So a client holding an id can count it at most (pods x restarts)
  times within its TTL, never more; counting exactly once across pods would need a shared
  store, which this service avoids on the answer path.
- **Malformed is refused, never a crash.** Every part is checked for shape (ASCII
  base64url, digits, lengths) before any decoding; anything else, including deeply nested
  or non-ASCII payloads and tags, is :class:`EventIdError` (the API's 422).

>>> codec = EventCodec()
>>> event = codec.decode(codec.encode(Source.CANDIDATE, "v2", "Dining"))
>>> event.served_by, event.model_version, event.label
(<Source.CANDIDATE: 'candidate'>, 'v2', 'Dining')
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from service.metric_names import NO_VERSION, Source

PREFIX: Final = "e2"
DEFAULT_TTL_SECONDS: Final = 3600.0
DEFAULT_RECENT_LIMIT: Final = 100_000
FUTURE_SKEW_SECONDS: Final = 60.0
"""Clocks of pods differ a little: an id issued up to this far in the future is fine."""
MAX_LABEL_LENGTH: Final = 128
MAX_EVENT_ID_LENGTH: Final = 2048
"""Above the longest id :meth:`EventCodec.encode` can make: a 128-character version and a
128-character label of 4-byte UTF-8 characters, JSON, base64url, nonce and tag."""
_RANDOM_BYTES: Final = 9  # 12 base64url characters
_TAG_BYTES: Final = 12
_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CACHE_LIMIT: Final = 4096
_B64URL_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_NONCE_RE: Final = re.compile(r"^[A-Za-z0-9_-]{12}$")
_TAG_RE: Final = re.compile(r"^[A-Za-z0-9_-]{16}$")
_ISSUED_RE: Final = re.compile(r"^[0-9]{1,12}$")


class EventIdError(ValueError):
    """An event id that this service did not issue, altered, or expired."""


class DuplicateEventError(Exception):
    """Feedback on an id that this pod has already counted."""


@dataclass(frozen=True, slots=True)
class Event:
    served_by: Source
    model_version: str
    label: str


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class EventCodec:
    """Encodes, decodes and redeems event ids; ``key`` enables signing.

    ``clock`` (seconds, default :func:`time.time`) is for tests.
    """

    def __init__(
        self,
        key: bytes | None = None,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        recent_limit: int = DEFAULT_RECENT_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= 0 or recent_limit < 1:
            raise ValueError("ttl_seconds must be positive and recent_limit at least 1")
        self._key = key or None
        self._heads: dict[tuple[Source, str, str], str] = {}
        self.ttl_seconds = ttl_seconds
        self.recent_limit = recent_limit
        self._clock = clock
        self._recent: OrderedDict[str, float] = OrderedDict()  # id body -> expiry, by issue
        self._lock = threading.Lock()

    def _head(self, served_by: Source, version: str, label: str) -> str:
        key = (served_by, version, label)
        head = self._heads.get(key)
        if head is None:
            body = json.dumps(
                [served_by.value, version, label], separators=(",", ":"), ensure_ascii=False
            )
            head = f"{PREFIX}.{_b64encode(body.encode())}"
            if len(self._heads) >= _CACHE_LIMIT:
                self._heads.clear()
            self._heads[key] = head
        return head

    def _tag(self, message: str) -> str:
        assert self._key is not None
        mac = hmac.new(self._key, message.encode("ascii"), hashlib.sha256).digest()
        return _b64encode(mac[:_TAG_BYTES])

    @staticmethod
    def nonces(n: int) -> list[str]:
        """``n`` random parts at once (one read of the OS's random source for a whole batch):
        9 random bytes each, 12 base64url characters, as :meth:`encode` makes them."""
        text = _b64encode(secrets.token_bytes(_RANDOM_BYTES * n))
        width = _RANDOM_BYTES * 4 // 3
        return [text[i : i + width] for i in range(0, width * n, width)]

    def encode(self, served_by: Source, version: str, label: str, nonce: str | None = None) -> str:
        """A new event id for one answer (``version`` is :data:`NO_VERSION` for rules);
        ``nonce`` from :meth:`nonces`, or drawn here."""
        if nonce is None:
            nonce = _b64encode(secrets.token_bytes(_RANDOM_BYTES))
        issued = int(self._clock())
        event_id = f"{self._head(served_by, version, label)}.{issued}.{nonce}"
        if self._key is not None:
            event_id = f"{event_id}.{self._tag(event_id)}"
        return event_id

    def decode(self, event_id: str) -> Event:
        """The answer an event id describes, or :class:`EventIdError` saying what is wrong."""
        return self._check(event_id)[0]

    def redeem(self, event_id: str) -> Event:
        """:meth:`decode`, and remember the id until it expires: feedback on it again is
        :class:`DuplicateEventError` (on this pod; see the module doc for the limits)."""
        event, body, expires = self._check(event_id)
        now = self._clock()
        with self._lock:
            recent = self._recent
            if body in recent:
                raise DuplicateEventError("feedback on this event id was already counted")
            while recent:  # forget what expired (ids arrive roughly by issue time)
                oldest, until = next(iter(recent.items()))
                if until > now and len(recent) < self.recent_limit:
                    break
                del recent[oldest]
            recent[body] = expires
        return event

    def _check(self, event_id: str) -> tuple[Event, str, float]:
        """(event, the id without its tag, when it expires) or :class:`EventIdError`."""
        if len(event_id) > MAX_EVENT_ID_LENGTH:
            raise EventIdError(f"longer than {MAX_EVENT_ID_LENGTH} characters")
        parts = event_id.split(".")
        if parts[0] != PREFIX or len(parts) not in (4, 5):
            raise EventIdError(
                f"not an event id of this service (expected '{PREFIX}.<answer>.<issued>.<random>')"
            )
        answer, issued_text, nonce = parts[1], parts[2], parts[3]
        if not _B64URL_RE.match(answer) or len(answer) % 4 == 1:
            raise EventIdError("answer part is not base64url")
        if not _ISSUED_RE.match(issued_text):
            raise EventIdError("issued time is not a whole number of seconds")
        if not _NONCE_RE.match(nonce):
            raise EventIdError("random part is not 12 base64url characters")
        body = ".".join(parts[:4])
        if len(parts) == 5 and not _TAG_RE.match(parts[4]):
            raise EventIdError("signature is not 16 base64url characters")
        if self._key is not None:
            if len(parts) != 5:
                raise EventIdError("signature missing")
            tag = parts[4]
            if not _TAG_RE.match(tag) or not hmac.compare_digest(tag, self._tag(body)):
                raise EventIdError("signature does not match")
        issued = float(issued_text)
        now = self._clock()
        expires = issued + self.ttl_seconds
        if expires <= now:
            raise EventIdError(
                f"expired (issued {now - issued:.0f}s ago, ttl {self.ttl_seconds:g}s)"
            )
        if issued > now + FUTURE_SKEW_SECONDS:
            raise EventIdError("issued in the future")
        try:
            payload = json.loads(_b64decode(answer))
        except (binascii.Error, ValueError, RecursionError):
            raise EventIdError("answer part is not base64url JSON") from None
        if (
            not isinstance(payload, list)
            or len(payload) != 3
            or not all(isinstance(p, str) for p in payload)
        ):
            raise EventIdError("payload is not [served_by, model_version, label]")
        served_raw, version, label = payload
        try:
            served_by = Source(served_raw)
        except ValueError:
            raise EventIdError(f"unknown served_by {served_raw[:20]!r}") from None
        if served_by is Source.RULES:
            if version != NO_VERSION:
                raise EventIdError("rules answers carry no model version")
        elif not _VERSION_RE.match(version):
            raise EventIdError("malformed model version")
        if not label or len(label) > MAX_LABEL_LENGTH:
            raise EventIdError("malformed label")
        return Event(served_by, version, label), body, expires
