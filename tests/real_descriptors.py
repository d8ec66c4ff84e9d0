"""Real-looking US card descriptors, written by hand (nothing generated them), with the
MCC a card network would carry and the category it defines (DESIGN.md contract 6).

Used by the integration test that serves a model trained on the real-brand data and by
``benchmarks/bench_quality.py``.
"""

from __future__ import annotations

from typing import Final

REAL_DESCRIPTORS: Final[tuple[tuple[str, str | None, str], ...]] = (
    ("WHOLEFDS MKT #10233 SAN FRANCISCO CA", "5411", "Groceries"),
    ("TRADER JOE S #552 QPS BROOKLYN NY", "5411", "Groceries"),
    ("SAFEWAY #1234", "5411", "Groceries"),
    ("KROGER #0417", "5411", "Groceries"),
    ("PUBLIX SUPER MAR 1234", "5411", "Groceries"),
    ("ALDI 72055 CHICAGO IL", "5411", "Groceries"),
    ("7-ELEVEN 35417", "5499", "Groceries"),
    ("SQ *BLUE BOTTLE COFFEE", "5814", "Dining"),
    ("STARBUCKS STORE 08846", "5814", "Dining"),
    ("MCDONALD'S F12345", "5814", "Dining"),
    ("TST* SHAKE SHACK 1044", "5812", "Dining"),
    ("CHIPOTLE 1785", "5814", "Dining"),
    ("DUNKIN #352108 Q35", "5814", "Dining"),
    ("TACO BELL #031245", "5814", "Dining"),
    ("SHELL OIL 57442108", "5541", "Transportation"),
    ("CHEVRON 0203912", "5542", "Transportation"),
    ("EXXONMOBIL 47581234", "5541", "Transportation"),
    ("UBER *TRIP HELP.UBER.COM", "4121", "Transportation"),
    ("LYFT *RIDE WED 8PM", "4121", "Transportation"),
    ("HERTZ RENT-A-CAR", "3357", "Transportation"),
    ("DELTA AIR 0062345678901", "3058", "Transportation"),
    ("UNITED 0162345678", "3000", "Transportation"),
    ("NETFLIX.COM", "5815", "Entertainment"),
    ("SPOTIFY USA", "5815", "Entertainment"),
    ("AMC 4512 ONLINE", "7832", "Entertainment"),
    ("TICKETMASTER", "7922", "Entertainment"),
    ("AMZN MKTP US*2K3GH7", "5942", "Shopping"),
    ("TARGET 00012345 OAKLAND CA", "5310", "Shopping"),
    ("THE HOME DEPOT #6808", "5200", "Shopping"),
    ("BEST BUY 00005678", "5732", "Shopping"),
    ("COSTCO WHSE #0144", "5300", "Shopping"),
    ("IKEA EAST PALO ALTO", "5712", "Shopping"),
    ("CVS/PHARMACY #01234", "5912", "Healthcare"),
    ("WALGREENS #7845", "5912", "Healthcare"),
    ("PLANET FITNESS", "7997", "Healthcare"),
    ("COMCAST CABLE COMM", "4899", "Utilities"),
    ("VERIZON WIRELESS", "4814", "Utilities"),
    ("PGANDE WEB ONLINE", "4900", "Utilities"),
)
