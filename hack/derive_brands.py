"""Derive service/brands.json (the rules' brand lexicon, committed) from the pinned NSI.

Brands that NSI lists as operating in the United States (or worldwide), under a tag with a
category (training/lexicon.py's TAG_CATEGORY). Run after hack/setup.sh fetched the NSI:
``.venv/bin/python hack/derive_brands.py``.
"""

from __future__ import annotations

from training import lexicon


def _us(item: dict[str, object]) -> bool:
    location = item.get("locationSet")
    include = location.get("include", []) if isinstance(location, dict) else []
    return any(isinstance(x, str) and (x.lower() in ("us", "001") or x.lower().startswith("us-"))
               for x in include)  # fmt: skip


def main() -> None:
    data = lexicon.read_nsi(lexicon.default_nsi_path())
    names: set[str] = set()
    for entry in data.values():
        for item in entry.get("items", []):
            if _us(item):
                tags = item.get("tags", {})
                names.add(str(tags.get("brand:en") or tags.get("brand") or item.get("displayName")))
    brands = [b for b in lexicon.nsi_brands() if b.name in names]
    lexicon.write_sample(brands, lexicon.SAMPLE_FILE)
    print(f"{len(brands)} brands -> {lexicon.SAMPLE_FILE}")


if __name__ == "__main__":
    main()
