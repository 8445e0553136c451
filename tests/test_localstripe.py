"""The SDK reaches localstripe over HTTP through the gateway: the base for every provider test."""

import pytest

from payments import gateway

pytestmark = pytest.mark.django_db


def test_gateway_client_creates_a_customer_at_the_provider(localstripe):
    before = len(localstripe.list("customers"))

    customer = gateway.client().v1.customers.create(
        params={"name": "Test Customer", "email": "someone@example.test"}
    )

    assert customer.id.startswith("cus_")
    customers = localstripe.list("customers")
    assert len(customers) == before + 1
    assert {"id": customer.id, "email": "someone@example.test"}.items() <= next(
        c for c in customers if c["id"] == customer.id
    ).items()
