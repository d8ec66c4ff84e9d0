"""Bounded load for the kind suite: runs inside the cluster as a Job (see test_kind_rollout).

Sends batches of 20 transactions every 50 ms for LOAD_SECONDS. A connection the server
or the Service's proxying drops is counted and retried on the next turn (a pod being
reconfigured or replaced must not end the load); more than MAX_ERRORS of them fail the Job.
"""

import os
import time

import httpx

URL = os.environ["SUGGEST_URL"]
MAX_ERRORS = int(os.environ.get("MAX_ERRORS", "200"))
MERCHANTS = ["WHOLEFDS MKT #10233", "UBER *TRIP", "NETFLIX.COM", "SHELL OIL 5744", "CVS #0212"]
end = time.monotonic() + float(os.environ.get("LOAD_SECONDS", "840"))
i = errors = answered = 0
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
        try:
            client.post(URL, json={"transactions": txs}).raise_for_status()
            answered += 1
        except httpx.HTTPError as exc:
            errors += 1
            print(f"request {i}: {type(exc).__name__}: {exc}", flush=True)
            if errors > MAX_ERRORS:
                raise SystemExit(f"{errors} failed requests, {answered} answered") from exc
        i += 1
        time.sleep(0.05)
print(f"{answered} answered, {errors} failed", flush=True)
