"""Event ids: what an answer was, carried by the client back to any pod with its feedback.

Pods are stateless, so the id itself says who served the answer, which model version, and
the top-1 category it suggested; any pod can then count feedback by who served it::

    e1.<base64url(JSON [served_by, model_version, top1])>.<12 random base64url chars>[.<tag>]

The first part is the same for every answer with the same (served_by, version, top1), so
it is encoded once and cached. With a key (``MODELROLLOUT_EVENT_KEY``, the same on every
pod of a target) a truncated HMAC-SHA256 ``tag`` is appended and checked, so forged
feedback is refused; without a key, a well-formed id is trusted (and a tag is ignored).

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
from dataclasses import dataclass
from typing import Final

from service.metric_names import NO_VERSION, Source

PREFIX: Final = "e1"
MAX_LABEL_LENGTH: Final = 128
MAX_EVENT_ID_LENGTH: Final = 2048
"""Above the longest id :meth:`EventCodec.encode` can make: a 128-character version and a
128-character label of 4-byte UTF-8 characters, JSON, base64url, nonce and tag."""
_RANDOM_BYTES: Final = 9  # 12 base64url characters
_TAG_BYTES: Final = 12
_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CACHE_LIMIT: Final = 4096


class EventIdError(ValueError):
    """An event id that this service did not issue (or was altered)."""


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
    """Encodes and decodes event ids; ``key`` enables signing."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or None
        self._heads: dict[tuple[Source, str, str], str] = {}

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
        event_id = f"{self._head(served_by, version, label)}.{nonce}"
        if self._key is not None:
            event_id = f"{event_id}.{self._tag(event_id)}"
        return event_id

    def decode(self, event_id: str) -> Event:
        """The answer an event id describes, or :class:`EventIdError` saying what is wrong."""
        if len(event_id) > MAX_EVENT_ID_LENGTH:
            raise EventIdError(f"longer than {MAX_EVENT_ID_LENGTH} characters")
        parts = event_id.split(".")
        if len(parts) not in (3, 4) or parts[0] != PREFIX:
            raise EventIdError(
                f"not an event id of this service (expected '{PREFIX}.<answer>.<random>')"
            )
        if self._key is not None:
            if len(parts) != 4:
                raise EventIdError("signature missing")
            signed = ".".join(parts[:3])
            if not hmac.compare_digest(parts[3], self._tag(signed)):
                raise EventIdError("signature does not match")
        try:
            raw = _b64decode(parts[1])
            random_part = _b64decode(parts[2])
            payload = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise EventIdError("not valid base64url JSON") from None
        if len(random_part) != _RANDOM_BYTES:
            raise EventIdError("random part has the wrong length")
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
        return Event(served_by, version, label)
