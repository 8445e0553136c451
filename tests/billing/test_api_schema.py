"""Schemathesis against /api/v1/openapi.json on a live server: generated requests (valid and
invalid, every operation, with a valid key) get no 500 and no answer the schema does not
describe.

The schemathesis CLI runs as a subprocess against pytest-django's live_server, bounded in
examples per operation and in time. Its exit code is the verdict; its output is shown on
failure (each failure with the request that reproduces it).
"""

import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from billing import api as billing_api
from billing import api_services, services
from billing.models import ChargeIssue
from recurring import services as recurring_services
from spaces.roles import ADMIN
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
        "unsupported_method",
        "allow_header_conformance",
    ]
)
MAX_EXAMPLES = 30
# The time bound (schemathesis' own --max-time would instead repeat fuzzing until it is spent).
MAX_SECONDS = 300


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(
    live_server, monkeypatch, tmp_path
):
    space = SpaceFactory(slug="fuzz", default_currency="EUR")
    admin = StaffUserFactory(role=ADMIN, spaces=[space])
    _, key = api_services.api_key_create(space=space, name="fuzz", acting_user=admin)
    customer = CustomerFactory(space=space, external_number="0283759")
    PaymentCardFactory(customer=customer)
    # Something to read, list, cancel and page through.
    for n in range(3):
        services.charge_issue_start(
            customer=customer, source=ChargeIssue.Source.STAFF, external_reference=f"SO-{n}"
        )
    recurring_services.recurring_line_create(
        customer=customer,
        amount_minor=4990,
        currency="EUR",
        charge_date=date.today() + timedelta(days=5),
        interval="monthly",
        cron="",
        card_lookup_key="0283759-Mastercard-4242-06/30",
        description="Coffee",
        via={"api_key": "fuzz"},
    )
    # Hundreds of requests a minute from one key: the limit is tested elsewhere.
    monkeypatch.setattr(billing_api, "RATE_LIMIT", 1_000_000)

    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{live_server.url}/api/v1/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--header",
            f"Authorization: Bearer {key}",
            "--workers",
            "1",
            "--seed",
            "12",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS,
    )
    print(result.stdout[-3_000:])  # the summary, shown with -s or -rP

    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout, result.stdout
