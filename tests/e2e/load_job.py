"""Bounded load for the kind suite: runs inside the cluster as a Job (see test_kind_rollout)."""

import os
import time

import httpx

URL = os.environ["SUGGEST_URL"]
MERCHANTS = ["WHOLEFDS MKT #10233", "UBER *TRIP", "NETFLIX.COM", "SHELL OIL 5744", "CVS #0212"]
end = time.monotonic() + float(os.environ.get("LOAD_SECONDS", "840"))
i = 0
with httpx.Client(timeout=5) as client:
    while time.monotonic() < end:
        txs = [
            {
                "id": f"t{i}-{k}",
                "merchant": MERCHANTS[(i + k) % len(MERCHANTS)],
                "memo": "",
                "amount": -12.5 - k,
                "user_id": f"u{(i * 7 + k) % 5000}",
            }
            for k in range(20)
        ]
        client.post(URL, json={"transactions": txs})
        i += 1
        time.sleep(0.05)
