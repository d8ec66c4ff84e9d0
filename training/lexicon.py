"""Real brand names with categories: the training data's merchants and the rules' lexicon.

Two public sources, both licensed for this use:

- the ``name-suggestion-index`` npm package (NSI, BSD-3-Clause, (c) its contributors):
  about 19,000 brands with OpenStreetMap tags. ``hack/setup.sh`` fetches the pinned
  version (:data:`NSI_VERSION`, sha256 :data:`NSI_SHA256`) with the npm client into
  ``~/.cache/modelrollout/lexicon``; the package carries its licence, and
  ``LICENSES/name-suggestion-index.md`` keeps the notice in this repository.
- PyPI's ``iso18245`` (MIT): the card networks' codes 3000-3500 name airlines and car
  rental agencies, with the name each prints in authorisation records (3000 UNITED
  AIRLINES, "UNITED AIR").

A brand's category comes from its tag through :data:`TAG_CATEGORY`, one reviewed table:
each tag is mapped to the ISO 18245 code a card network would give such a merchant, and so
to the category that code defines (``service/categories.py``). Tags with no counterpart
among the ten categories (banks, ATMs, hotels, insurance, hairdressers, post offices...)
are in :data:`DROPPED_TAGS` or simply absent, never forced into a category.

A brand's *group* is its normalised brand name: the same brand in several countries or
under several tags is one group, so a split by group never puts a brand on both sides.

Names not written in the Latin script are left out: card descriptors in the networks'
authorisation records are Latin (often ASCII) text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from service import categories as c
from service.features import brand_key

log = logging.getLogger(__name__)

NSI_VERSION: Final = "8.0.20260918"
NSI_SHA256: Final = "3ee22f0f0a99528ac9c65a57211575defd968e21fd6374e746bfd02e94422121"
NSI_MEMBER: Final = "package/dist/json/nsi.min.json"

SAMPLE_FILE: Final = Path(__file__).resolve().parents[1] / "service" / "brands.json"
"""The derived US sample (committed): the rules' lexicon, unit tests, machines without
the cache (hack/derive_brands.py writes it)."""

# tag -> (typical ISO 18245 code, category). Reviewed against service/categories.py.
TAG_CATEGORY: Final[dict[str, tuple[str, str]]] = {
    # Groceries: 5411 supermarkets, 5499 convenience and speciality food, 5462 bakeries...
    "shop=supermarket": ("5411", c.GROCERIES),
    "shop=convenience": ("5499", c.GROCERIES),
    "shop=greengrocer": ("5499", c.GROCERIES),
    "shop=butcher": ("5422", c.GROCERIES),
    "shop=seafood": ("5422", c.GROCERIES),
    "shop=frozen_food": ("5422", c.GROCERIES),
    "shop=deli": ("5499", c.GROCERIES),
    "shop=cheese": ("5451", c.GROCERIES),
    "shop=dairy": ("5451", c.GROCERIES),
    "shop=bakery": ("5462", c.GROCERIES),
    "shop=pastry": ("5462", c.GROCERIES),
    "shop=confectionery": ("5441", c.GROCERIES),
    "shop=chocolate": ("5441", c.GROCERIES),
    "shop=nuts": ("5441", c.GROCERIES),
    "shop=health_food": ("5499", c.GROCERIES),
    "shop=nutrition_supplements": ("5499", c.GROCERIES),
    "shop=tea": ("5499", c.GROCERIES),
    "shop=coffee": ("5499", c.GROCERIES),
    "shop=spices": ("5499", c.GROCERIES),
    "shop=food": ("5499", c.GROCERIES),
    # Dining: 5812 restaurants, 5813 bars, 5814 fast food (coffee shops included)
    "amenity=restaurant": ("5812", c.DINING),
    "amenity=fast_food": ("5814", c.DINING),
    "amenity=cafe": ("5814", c.DINING),
    "amenity=ice_cream": ("5814", c.DINING),
    "amenity=food_court": ("5812", c.DINING),
    "amenity=bar": ("5813", c.DINING),
    "amenity=pub": ("5813", c.DINING),
    "amenity=biergarten": ("5813", c.DINING),
    "amenity=nightclub": ("5813", c.DINING),
    # Transportation: fuel, car rental, repair, parts, dealers, washes, parking, travel
    "amenity=fuel": ("5541", c.TRANSPORTATION),
    "highway=services": ("5541", c.TRANSPORTATION),
    "shop=gas": ("5983", c.TRANSPORTATION),
    "amenity=charging_station": ("5541", c.TRANSPORTATION),
    "amenity=car_rental": ("7512", c.TRANSPORTATION),
    "amenity=car_sharing": ("7512", c.TRANSPORTATION),
    "amenity=bicycle_rental": ("4121", c.TRANSPORTATION),
    "amenity=motorcycle_rental": ("7512", c.TRANSPORTATION),
    "amenity=car_wash": ("7542", c.TRANSPORTATION),
    "amenity=parking": ("7523", c.TRANSPORTATION),
    "amenity=vehicle_inspection": ("7549", c.TRANSPORTATION),
    "shop=car_repair": ("7538", c.TRANSPORTATION),
    "shop=truck_repair": ("7538", c.TRANSPORTATION),
    "shop=tyres": ("5532", c.TRANSPORTATION),
    "shop=car_parts": ("5533", c.TRANSPORTATION),
    "shop=car": ("5511", c.TRANSPORTATION),
    "shop=truck": ("5511", c.TRANSPORTATION),
    "shop=travel_agency": ("4722", c.TRANSPORTATION),
    # Entertainment: 5815-5818 digital media, 7832 cinemas, 7922 tickets, 7993-7999 recreation
    "amenity=cinema": ("7832", c.ENTERTAINMENT),
    "amenity=theatre": ("7922", c.ENTERTAINMENT),
    "shop=ticket": ("7922", c.ENTERTAINMENT),
    "amenity=casino": ("7995", c.ENTERTAINMENT),
    "amenity=gambling": ("7995", c.ENTERTAINMENT),
    "shop=bookmaker": ("7995", c.ENTERTAINMENT),
    "amenity=karaoke_box": ("7999", c.ENTERTAINMENT),
    "leisure=bowling_alley": ("7933", c.ENTERTAINMENT),
    "leisure=amusement_arcade": ("7994", c.ENTERTAINMENT),
    "leisure=adult_gaming_centre": ("7994", c.ENTERTAINMENT),
    "leisure=escape_game": ("7999", c.ENTERTAINMENT),
    "leisure=trampoline_park": ("7999", c.ENTERTAINMENT),
    "leisure=indoor_play": ("7999", c.ENTERTAINMENT),
    "leisure=miniature_golf": ("7992", c.ENTERTAINMENT),
    "leisure=sports_centre": ("7941", c.ENTERTAINMENT),
    "tourism=theme_park": ("7996", c.ENTERTAINMENT),
    # Healthcare: 5912 pharmacies, 8011-8099, 5975-5976, gyms (7997, see categories.py)
    "amenity=pharmacy": ("5912", c.HEALTHCARE),
    "shop=chemist": ("5912", c.HEALTHCARE),
    "amenity=clinic": ("8011", c.HEALTHCARE),
    "amenity=doctors": ("8011", c.HEALTHCARE),
    "amenity=dentist": ("8021", c.HEALTHCARE),
    "amenity=hospital": ("8062", c.HEALTHCARE),
    "healthcare=laboratory": ("8071", c.HEALTHCARE),
    "healthcare=sample_collection": ("8071", c.HEALTHCARE),
    "healthcare=physiotherapist": ("8049", c.HEALTHCARE),
    "healthcare=audiologist": ("8099", c.HEALTHCARE),
    "healthcare=dialysis": ("8099", c.HEALTHCARE),
    "healthcare=rehabilitation": ("8099", c.HEALTHCARE),
    "shop=optician": ("8043", c.HEALTHCARE),
    "shop=hearing_aids": ("5975", c.HEALTHCARE),
    "shop=medical_supply": ("5976", c.HEALTHCARE),
    "leisure=fitness_centre": ("7997", c.HEALTHCARE),
    # Utilities: 4812-4816 telecom, 4899 cable and streaming TV, 4900 power, gas, water
    "shop=telecommunication": ("4814", c.UTILITIES),
    "office=telecommunication": ("4814", c.UTILITIES),
    "office=energy_supplier": ("4900", c.UTILITIES),
    # Transfers: 4829 money transfer
    "amenity=money_transfer": ("4829", c.TRANSFERS),
    # Rent: 6513 real estate agents and managers (rentals)
    "office=estate_agent": ("6513", c.RENT),
    # Shopping: every other retail code in 5200-5999
    "shop=clothes": ("5651", c.SHOPPING),
    "shop=shoes": ("5661", c.SHOPPING),
    "shop=department_store": ("5311", c.SHOPPING),
    "shop=wholesale": ("5300", c.SHOPPING),
    "shop=variety_store": ("5331", c.SHOPPING),
    "shop=general": ("5399", c.SHOPPING),
    "shop=country_store": ("5399", c.SHOPPING),
    "shop=electronics": ("5732", c.SHOPPING),
    "shop=mobile_phone": ("5732", c.SHOPPING),
    "shop=mobile_phone_accessories": ("5732", c.SHOPPING),
    "shop=computer": ("5732", c.SHOPPING),
    "shop=hifi": ("5732", c.SHOPPING),
    "shop=camera": ("5946", c.SHOPPING),
    "shop=photo": ("5946", c.SHOPPING),
    "shop=appliance": ("5722", c.SHOPPING),
    "shop=vacuum_cleaner": ("5722", c.SHOPPING),
    "shop=furniture": ("5712", c.SHOPPING),
    "shop=bed": ("5712", c.SHOPPING),
    "shop=kitchen": ("5712", c.SHOPPING),
    "shop=bathroom_furnishing": ("5712", c.SHOPPING),
    "shop=interior_decoration": ("5719", c.SHOPPING),
    "shop=houseware": ("5719", c.SHOPPING),
    "shop=household_linen": ("5719", c.SHOPPING),
    "shop=lighting": ("5719", c.SHOPPING),
    "shop=candles": ("5719", c.SHOPPING),
    "shop=carpet": ("5713", c.SHOPPING),
    "shop=flooring": ("5713", c.SHOPPING),
    "shop=tiles": ("5713", c.SHOPPING),
    "shop=curtain": ("5714", c.SHOPPING),
    "shop=window_blind": ("5714", c.SHOPPING),
    "shop=doityourself": ("5200", c.SHOPPING),
    "shop=hardware": ("5251", c.SHOPPING),
    "shop=trade": ("5211", c.SHOPPING),
    "shop=paint": ("5231", c.SHOPPING),
    "shop=electrical": ("5251", c.SHOPPING),
    "shop=power_tools": ("5251", c.SHOPPING),
    "shop=doors": ("5211", c.SHOPPING),
    "shop=garden_centre": ("5261", c.SHOPPING),
    "shop=florist": ("5992", c.SHOPPING),
    "shop=books": ("5942", c.SHOPPING),
    "shop=stationery": ("5943", c.SHOPPING),
    "shop=newsagent": ("5994", c.SHOPPING),
    "shop=jewelry": ("5944", c.SHOPPING),
    "shop=watches": ("5944", c.SHOPPING),
    "shop=gold_buyer": ("5944", c.SHOPPING),
    "shop=toys": ("5945", c.SHOPPING),
    "shop=games": ("5945", c.SHOPPING),
    "shop=model": ("5945", c.SHOPPING),
    "shop=anime": ("5945", c.SHOPPING),
    "shop=video_games": ("5734", c.SHOPPING),
    "shop=music": ("5735", c.SHOPPING),
    "shop=video": ("5735", c.SHOPPING),
    "shop=musical_instrument": ("5733", c.SHOPPING),
    "shop=sports": ("5941", c.SHOPPING),
    "shop=outdoor": ("5941", c.SHOPPING),
    "shop=bicycle": ("5940", c.SHOPPING),
    "shop=fishing": ("5941", c.SHOPPING),
    "shop=motorcycle": ("5571", c.SHOPPING),
    "shop=boat": ("5551", c.SHOPPING),
    "shop=caravan": ("5561", c.SHOPPING),
    "shop=cosmetics": ("5977", c.SHOPPING),
    "shop=perfumery": ("5977", c.SHOPPING),
    "shop=hairdresser_supply": ("5977", c.SHOPPING),
    "shop=alcohol": ("5921", c.SHOPPING),
    "shop=wine": ("5921", c.SHOPPING),
    "shop=tobacco": ("5993", c.SHOPPING),
    "shop=e-cigarette": ("5993", c.SHOPPING),
    "shop=pet": ("5995", c.SHOPPING),
    "shop=baby_goods": ("5641", c.SHOPPING),
    "shop=bag": ("5948", c.SHOPPING),
    "shop=leather": ("5948", c.SHOPPING),
    "shop=fashion_accessories": ("5631", c.SHOPPING),
    "shop=fabric": ("5949", c.SHOPPING),
    "shop=craft": ("5970", c.SHOPPING),
    "shop=art": ("5971", c.SHOPPING),
    "shop=frame": ("5971", c.SHOPPING),
    "shop=party": ("5999", c.SHOPPING),
    "shop=gift": ("5947", c.SHOPPING),
    "shop=charity": ("5931", c.SHOPPING),
    "shop=second_hand": ("5931", c.SHOPPING),
    "shop=pawnbroker": ("5933", c.SHOPPING),
    "shop=erotic": ("5999", c.SHOPPING),
    "shop=printer_ink": ("5943", c.SHOPPING),
    "shop=bbq": ("5719", c.SHOPPING),
    "shop=pottery": ("5719", c.SHOPPING),
    "shop=swimming_pool": ("5999", c.SHOPPING),
    "shop=catalogue": ("5964", c.SHOPPING),
    "shop=agrarian": ("5261", c.SHOPPING),
    "shop=herbalist": ("5999", c.SHOPPING),
    "shop=pyrotechnics": ("5999", c.SHOPPING),
}

DROPPED_TAGS: Final[dict[str, str]] = {
    "amenity=atm": "6011: no category of the ten",
    "amenity=bank": "6011/6012: no category",
    "amenity=bureau_de_change": "6051: quasi-cash, no category",
    "amenity=payment_terminal": "a device, not a merchant",
    "amenity=payment_centre": "bill payment agents: the payee decides",
    "amenity=vending_machine": "5962/5814/5499: depends on what it sells",
    "amenity=parcel_locker": "not a merchant",
    "amenity=post_office": "9402: government",
    "amenity=post_depot": "9402: government",
    "advertising=totem": "not a merchant",
    "man_made=charge_point": "duplicates amenity=charging_station",
    "tourism=hotel": "7011 / 3501-3999: lodging has no category of the ten",
    "tourism=motel": "7011: lodging",
    "tourism=hostel": "7011: lodging",
    "tourism=caravan_site": "7033: lodging",
    "office=insurance": "6300: no category",
    "office=financial_advisor": "no category",
    "office=mortgage": "no category",
    "shop=money_lender": "6012: no category",
    "shop=hairdresser": "7230: services, not the ten",
    "shop=beauty": "7230/7298: services",
    "shop=massage": "7297: services",
    "shop=dry_cleaning": "7216: services",
    "shop=laundry": "7211: services",
    "shop=funeral_directors": "7261: services",
    "shop=copyshop": "7338: services",
    "shop=storage_rental": "4225 is in 4000-4799 but storage is not transportation",
    "shop=mall": "a place of many merchants",
    "shop=outpost": "pick-up points of online shops",
    "shop=kiosk": "sells anything: no single code",
    "shop=beverages": "5499 or 5921 depending on the shop",
    "shop=lottery": "7800: government lotteries, outside 7829-7999",
    "shop=cannabis": "no code in use",
    "amenity=veterinary": "0742: not the ten",
    "amenity=kindergarten": "8351: outside 8011-8099",
    "amenity=childcare": "8351",
    "amenity=school": "8211",
    "amenity=prep_school": "8299",
    "amenity=language_school": "8299",
    "amenity=driving_school": "8299",
    "amenity=music_school": "8299",
    "office=*": "other offices (government, employment, lawyers...): services",
}
"""Tags of the lexicon with no category of the ten, and why (any tag not in
:data:`TAG_CATEGORY` is dropped; these are the ones worth saying why)."""


@dataclass(frozen=True, slots=True)
class Brand:
    """One brand under one tag: its names as they may be printed, category and code."""

    name: str
    alternates: tuple[str, ...]
    category: str
    mcc: str
    tag: str
    group: str
    source: str  # "nsi" or "iso18245"


def brand_group(name: str) -> str:
    """The group of a brand for split purposes: its normalised name without spaces (the
    rules' brand key, so a split can keep the rules from knowing the test's brands)."""
    return brand_key(name)


def _latin(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return False
    latin = sum(1 for ch in letters if "LATIN" in unicodedata.name(ch, ""))
    return latin / len(letters) >= 0.9


def default_nsi_path() -> Path:
    cache_root = os.environ.get("MODELROLLOUT_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelrollout"
    )
    return Path(cache_root) / "lexicon" / f"name-suggestion-index-{NSI_VERSION}.tgz"


class LexiconError(Exception):
    """The brand lexicon is missing or not the pinned version."""


def read_nsi(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LexiconError(
            f"{path} is missing: run hack/setup.sh (it fetches name-suggestion-index "
            f"{NSI_VERSION} with npm)"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != NSI_SHA256:
        raise LexiconError(f"{path} has sha256 {digest}, expected {NSI_SHA256} (pinned)")
    with tarfile.open(path) as archive:
        member = archive.extractfile(NSI_MEMBER)
        if member is None:
            raise LexiconError(f"{path} holds no {NSI_MEMBER}")
        data: dict[str, Any] = json.load(member)["nsi"]
    return data


def nsi_brands(path: Path | None = None) -> list[Brand]:
    """The NSI brands whose tag has a category, Latin-script names only."""
    data = read_nsi(path or default_nsi_path())
    out: list[Brand] = []
    for key, entry in data.items():
        kind, _, tag_path = key.partition("/")
        if kind != "brands":
            continue
        tag = tag_path.replace("/", "=", 1)
        mapped = TAG_CATEGORY.get(tag)
        if mapped is None:
            continue
        mcc, category = mapped
        for item in entry.get("items", []):
            tags = item.get("tags", {})
            name = str(tags.get("brand:en") or tags.get("brand") or item.get("displayName", ""))
            if not _latin(name):
                continue
            alternates = tuple(
                dict.fromkeys(
                    a
                    for a in (str(item.get("displayName", "")), *item.get("matchNames", []))
                    if a and _latin(a) and a.casefold() != name.casefold()
                )
            )
            group = brand_group(name)
            if not group:
                continue
            out.append(Brand(name, alternates, category, mcc, tag, group, "nsi"))
    return out


def iso18245_brands() -> list[Brand]:
    """Airlines (3000-3350) and car rental agencies (3351-3500) of the networks' private
    codes, with the names they print: all Transportation, each code its own brand."""
    import iso18245  # noqa: PLC0415

    out: list[Brand] = []
    for m in iso18245.get_all_mccs_in_range("3000", "3500"):
        names = [
            m.visa_description,
            m.mastercard_description,
            m.amex_description,
            m.usda_description,
            m.visa_req_clearing_name,
            m.mastercard_abbreviated_airline_name,
        ]
        names = [n.strip() for n in names if n and n.strip()]
        if not names:
            continue
        name = names[0]
        alternates = tuple(dict.fromkeys(n for n in names[1:] if n.casefold() != name.casefold()))
        tag = "mcc=airline" if int(m.mcc) <= 3350 else "mcc=car_rental"
        out.append(
            Brand(name, alternates, c.TRANSPORTATION, m.mcc, tag, brand_group(name), "iso18245")
        )
    return out


def write_sample(brands: Iterable[Brand], path: Path = SAMPLE_FILE) -> None:
    """Write a derived sample (with the licence notice) for tests and offline machines."""
    rows = [[b.name, list(b.alternates), b.category, b.mcc, b.tag, b.source] for b in brands]
    doc = {
        "notice": (
            "Derived from name-suggestion-index "
            f"{NSI_VERSION} (BSD-3-Clause, (c) name-suggestion-index contributors; see "
            "LICENSES/name-suggestion-index.md) and iso18245 (MIT)."
        ),
        "columns": ["name", "alternates", "category", "mcc", "tag", "source"],
        "brands": rows,
    }
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


@cache
def sample_brands(path: Path = SAMPLE_FILE) -> tuple[Brand, ...]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return tuple(
        Brand(n, tuple(a), cat, mcc, tag, brand_group(n), src)
        for n, a, cat, mcc, tag, src in doc["brands"]
    )


@cache
def all_brands() -> tuple[Brand, ...]:
    """The full lexicon (NSI from the cache), or the committed sample when the cache has
    no NSI package (a machine that never ran hack/setup.sh)."""
    try:
        return tuple(nsi_brands())
    except LexiconError as exc:
        log.warning("%s; using the committed US sample (%s)", exc, SAMPLE_FILE.name)
        return tuple(b for b in sample_brands() if b.source == "nsi")
