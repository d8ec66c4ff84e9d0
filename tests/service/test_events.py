"""Event ids: compact, self-describing, optionally signed."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.events import (
    MAX_EVENT_ID_LENGTH,
    DuplicateEventError,
    EventCodec,
    EventIdError,
)
from service.metric_names import NO_VERSION, Source


@given(
    served_by=st.sampled_from([Source.STABLE, Source.CANDIDATE]),
    version=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,40}\Z"),
    label=st.text(min_size=1, max_size=60),
)
def test_an_event_id_round_trips(served_by: Source, version: str, label: str) -> None:
    for codec in (EventCodec(), EventCodec(b"key")):
        event_id = codec.encode(served_by, version, label)
        event = codec.decode(event_id)
        assert (event.served_by, event.model_version, event.label) == (served_by, version, label)


def test_the_longest_answer_still_makes_an_id_that_decodes() -> None:
    label = "\U0001f600" * 128  # 4 bytes each in UTF-8
    version = "v" * 128
    for codec in (EventCodec(), EventCodec(b"key")):
        event_id = codec.encode(Source.CANDIDATE, version, label)
        assert len(event_id) <= MAX_EVENT_ID_LENGTH
        assert codec.decode(event_id).label == label


def test_event_ids_are_compact_unique_and_url_safe() -> None:
    codec = EventCodec(b"key")
    ids = {
        codec.encode(Source.STABLE, "20260101T000000Z-ab12cd34", "Groceries") for _ in range(1000)
    }
    assert len(ids) == 1000
    sample = next(iter(ids))
    assert len(sample) < 120
    assert all(c.isalnum() or c in "-_." for c in sample)


def test_rules_answers_carry_no_version() -> None:
    codec = EventCodec()
    assert codec.decode(codec.encode(Source.RULES, NO_VERSION, "Other")).model_version == NO_VERSION
    forged = codec.encode(Source.RULES, "v1", "Other")
    with pytest.raises(EventIdError, match="no model version"):
        codec.decode(forged)


def test_a_signed_id_is_refused_when_altered_or_signed_with_another_key() -> None:
    codec = EventCodec(b"key")
    event_id = codec.encode(Source.CANDIDATE, "v2", "Dining")
    head, answer, issued, nonce, tag = event_id.split(".")
    other = EventCodec().encode(Source.STABLE, "v2", "Dining").split(".")[1]
    with pytest.raises(EventIdError, match="signature does not match"):
        codec.decode(f"{head}.{other}.{issued}.{nonce}.{tag}")
    with pytest.raises(EventIdError, match="signature does not match"):
        codec.decode(f"{head}.{answer}.{int(issued) + 3000}.{nonce}.{tag}")  # a later issue
    with pytest.raises(EventIdError, match="signature does not match"):
        EventCodec(b"another key").decode(event_id)
    with pytest.raises(EventIdError, match="signature missing"):
        codec.decode(f"{head}.{answer}.{issued}.{nonce}")
    # Without a key, a signed id is accepted (the tag is ignored).
    assert EventCodec().decode(event_id).label == "Dining"


@given(st.text(max_size=MAX_EVENT_ID_LENGTH + 10))
def test_decoding_anything_either_succeeds_or_raises_event_id_error(text: str) -> None:
    with contextlib.suppress(EventIdError):
        EventCodec().decode(text)


def test_nonces_drawn_for_a_batch_are_distinct_and_shaped_like_single_ones() -> None:
    codec = EventCodec(b"key")
    nonces = EventCodec.nonces(1000)
    assert len(nonces) == len(set(nonces)) == 1000
    single = codec.encode(Source.STABLE, "v1", "Dining").split(".")[3]
    assert {len(n) for n in nonces} == {len(single)} == {12}
    event_id = codec.encode(Source.STABLE, "v1", "Dining", nonces[7])
    assert event_id.split(".")[3] == nonces[7]
    assert codec.decode(event_id).label == "Dining"
    assert EventCodec.nonces(0) == []


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ids_expire_after_the_ttl_and_are_refused_from_the_future() -> None:
    clock = Clock()
    codec = EventCodec(b"key", ttl_seconds=600, clock=clock)
    event_id = codec.encode(Source.STABLE, "v1", "Dining")
    clock.now += 599
    assert codec.decode(event_id).label == "Dining"
    clock.now += 1
    with pytest.raises(EventIdError, match="expired"):
        codec.decode(event_id)
    clock.now -= 3600  # this pod's clock is far behind the issuing pod's
    with pytest.raises(EventIdError, match="future"):
        codec.decode(event_id)


def test_an_id_is_redeemed_once_until_it_expires() -> None:
    clock = Clock()
    codec = EventCodec(b"key", ttl_seconds=600, clock=clock)
    first, second = (codec.encode(Source.STABLE, "v1", "Dining") for _ in range(2))
    assert codec.redeem(first).label == "Dining"
    with pytest.raises(DuplicateEventError):
        codec.redeem(first)
    assert codec.redeem(second).label == "Dining"
    clock.now += 600
    with pytest.raises(EventIdError, match="expired"):  # never counted again after expiry
        codec.redeem(first)


def test_the_recent_id_set_is_bounded_and_forgets_the_oldest_first() -> None:
    codec = EventCodec(b"key", recent_limit=3)
    ids = [codec.encode(Source.STABLE, "v1", "Dining") for _ in range(5)]
    for event_id in ids:
        codec.redeem(event_id)
    assert len(codec._recent) == 3
    for event_id in ids[-3:]:
        with pytest.raises(DuplicateEventError):
            codec.redeem(event_id)
    codec.redeem(ids[0])  # forgotten early (documented limit), not refused


def test_a_signature_covers_the_tag_only_in_ascii() -> None:
    codec = EventCodec(b"key")
    head, answer, issued, nonce, _ = codec.encode(Source.STABLE, "v1", "Dining").split(".")
    for tag in ("\u00e9" * 16, "\U0001f600" * 16, "A" * 15 + "\u00e9", "=" * 16, ""):
        with pytest.raises(EventIdError, match="signature"):
            codec.decode(f"{head}.{answer}.{issued}.{nonce}.{tag}")


@pytest.mark.parametrize("key", [None, b"key"], ids=["unsigned", "signed"])
@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 1400,
        b"[" * 100_000,
        b'["stable","v1",' + b"[" * 1400 + b"]" * 1400 + b"]",
        '["stable","v1","D\u00eening\u2603"]'.encode("utf-8", "surrogatepass"),
        b"\xff\xfe\x00not utf-8",
        b'{"a": 1}',
        b"1e999999",
    ],
    ids=[
        "1400-brackets",
        "100k-brackets",
        "nested-label",
        "non-ascii",
        "not-utf8",
        "object",
        "huge",
    ],
)
def test_every_malformed_payload_is_an_event_id_error(key: bytes | None, payload: bytes) -> None:
    """Issue 12 point 7: ~1,400 ``[`` raised RecursionError, non-ASCII a UnicodeEncodeError."""
    codec = EventCodec(key)
    head, _, issued, nonce, *_ = codec.encode(Source.STABLE, "v1", "Dining").split(".")
    answer = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    event_id = f"{head}.{answer}.{issued}.{nonce}"
    if key is not None:
        event_id += "." + codec._tag(event_id)
    with contextlib.suppress(EventIdError):
        codec.decode(event_id[:MAX_EVENT_ID_LENGTH])
        if len(event_id) <= MAX_EVENT_ID_LENGTH:
            # Only a well-formed payload decodes: the non-ASCII label is one.
            assert payload.startswith(b'["stable"')


@given(st.text(max_size=MAX_EVENT_ID_LENGTH + 10))
def test_decoding_anything_with_a_key_either_succeeds_or_raises_event_id_error(
    text: str,
) -> None:
    with contextlib.suppress(EventIdError):
        EventCodec(b"key").decode(text)


@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.text(alphabet='[]{}"\\,:', max_size=400),
            st.from_regex(r"\A[A-Za-z0-9_-]{0,40}\Z"),
        ),
        min_size=1,
        max_size=6,
    ).map(lambda parts: ".".join(["e2", *parts]))
)
def test_decoding_id_shaped_text_either_succeeds_or_raises_event_id_error(text: str) -> None:
    for codec in (EventCodec(), EventCodec(b"key")):
        with contextlib.suppress(EventIdError):
            codec.decode(text)
