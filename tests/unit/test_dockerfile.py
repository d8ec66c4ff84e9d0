"""The Dockerfile's pinned build arguments are the ones hack/versions.env pins.

hack/images.sh passes versions.env's values; a user's plain ``docker build`` gets the
Dockerfile's defaults. They must be the same, or the two builds differ silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from training import lexicon

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _pins(text: str, pattern: str) -> dict[str, str]:
    return dict(re.findall(pattern, text, flags=re.MULTILINE))


def test_dockerfile_defaults_equal_the_pins_of_versions_env() -> None:
    env = _pins((ROOT / "hack" / "versions.env").read_text(), r"^([A-Z0-9_]+)=(\S+)$")
    args = _pins((ROOT / "Dockerfile").read_text(), r"^ARG ([A-Z0-9_]+)=(\S+)$")
    for name in ("UV_VERSION", "NSI_VERSION", "NSI_SHA256"):
        assert args[name] == env[name], name
    assert (env["NSI_VERSION"], env["NSI_SHA256"]) == (lexicon.NSI_VERSION, lexicon.NSI_SHA256)


def test_the_training_image_holds_the_lexicon_where_training_reads_it() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    training = dockerfile[dockerfile.index("AS training") :]
    cache = re.search(r"^ENV MODELROLLOUT_CACHE=(\S+)$", training, flags=re.MULTILINE)
    assert cache is not None
    copied = re.search(r"^COPY --from=lexicon \S+ (\S+)$", training, flags=re.MULTILINE)
    assert copied is not None
    assert copied.group(1) == f"{cache.group(1)}/lexicon"
