"""Cost of the card-number guard per request, and of the detector per string.

Builds requests with Django's RequestFactory (no database, no server) and times
core.middleware's inspection of each: a typical admin form post, the API's JSON post, a
registration page GET with browser headers and cookies, and a 1 MB JSON body. Also the detector
(card numbers and IBANs, core.cardguard.card_data_kind) alone on strings of different shapes.
Prints microseconds of CPU time per call, the best of 5 repeats: on a shared machine the wall
clock also counts the time other processes ran. Asserts nothing.

Run from the project root:

    .venv/bin/python bench/cardguard.py [--number 2000]

`--smoke` runs every measurement once (tests/core/test_cardguard.py runs it so, to keep the
script working); its figures mean nothing.
"""

import argparse
import json
import os
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django  # noqa: E402

django.setup()

from django.test import RequestFactory  # noqa: E402

from core.cardguard import card_data_kind  # noqa: E402
from core.middleware import _inspect  # noqa: E402

BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.109 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "de-DE,de;q=0.9,en;q=0.8",
    "Cookie": "csrftoken=Vb3d8xQm2N0pLk7RtYw1Zc4Hs6Jf9Ga5; "
    "sessionid=k2j4h5g6f7d8s9a0q1w2e3r4t5y6u7i8; "
    "_ga=GA1.1.1234567890.1700000000",
    "Referer": "https://pay.example.com/admin/billing/chargeissue/42/change/",
}


def _requests():
    factory = RequestFactory()
    entry = {
        "amount": "49.90",
        "currency": "EUR",
        "notification_subject": "Your March order",
        "notification_body": "We will charge your card for order 1234567890 on 22.11.2026. " * 5,
        "charge_date": "",
        "csrfmiddlewaretoken": "x" * 64,
    }
    api = {"customer": "C-1001", "amount": "49.90", "reference": "INV-2026-000123"}
    big = {"lines": [{"sku": f"SKU-{n:08d}", "text": "Ware " * 10} for n in range(12000)]}
    return {
        "admin form post": factory.post(
            "/admin/billing/chargeissue/42/enter-amount/", entry, headers=BROWSER_HEADERS
        ),
        "API JSON post": factory.post(
            "/api/v1/charge-issues",
            json.dumps(api),
            content_type="application/json",
            headers={
                "Authorization": "Bearer bo_abcdefgh_" + "x" * 43,
                "Idempotency-Key": "a" * 36,
            },
        ),
        "registration page GET": factory.get("/register/shop/", headers=BROWSER_HEADERS),
        f"JSON body of {len(json.dumps(big)) // 1024} KiB": factory.post(
            "/api/v1/charge-issues", json.dumps(big), content_type="application/json"
        ),
    }


STRINGS = {
    "short text": "Kim Kunde",
    "1 KiB prose, no digits": "Lorem ipsum dolor sit amet. " * 37,
    "1 KiB with many numbers": "Order 1234567890 of 49.90 EUR on 22.11.2026; " * 23,
    "1 KiB Japanese": "日本語のテキストです。" * 93,
    "1 KiB of ids and references": (
        "pm_1OabCDeFGhIJklMN23opQRst cus_NffrFeUfNV2Hib AB12-3456 "
        "123e4567-e89b-12d3-a456-426614174000 DE123456789 "
    )
    * 9,
    "a card number, grouped": "4242 4242 4242 4242 12/34",
    "an IBAN, grouped": "DE89 3704 0044 0532 0130 00",
    "an IBAN, lower case, dashed": "gb29-nwbk-6016-1331-9268-19",
}


def _best(call, number: int) -> float:
    """Microseconds per call: the best of 5 repeats of number/5 calls (one call in smoke mode)."""
    repeat = 5 if number >= 5 else 1
    each = max(1, number // repeat)
    timer = timeit.Timer(call, timer=time.process_time)
    return min(timer.repeat(number=each, repeat=repeat)) / each * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="each measurement once")
    args = parser.parse_args()
    if args.smoke:
        args.number = 1
    print("core.middleware inspection, microseconds per request")
    for name, request in _requests().items():
        request.body  # read once, as Django would before the guard runs  # noqa: B018
        number = max(1, args.number // 100) if "KiB" in name else args.number
        print(f"  {name:32} {_best(lambda r=request: _inspect(r), number):10.1f}")
    print("core.cardguard.card_data_kind, microseconds per string")
    for name, text in STRINGS.items():
        print(f"  {name:32} {_best(lambda t=text: card_data_kind(t), args.number):10.1f}")


if __name__ == "__main__":
    main()
