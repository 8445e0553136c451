"""Rows of every kind the dashboard reads, made the way bulk data arrives (bulk_create)."""

from itertools import count

from django.utils import timezone

from billing.models import ChargeIssue
from chargeflows.models import (
    ChargeFlow,
    ChargeFlowCase,
    ChargeFlowLevel,
    ChargeFlowLevelConfiguration,
)
from payments.models import ChargeAttempt, DeliveryAttempt, OutboundEvent, ProviderEvent

_keys = count()
IS = ChargeIssue.State
CS = ChargeFlowCase.State
LS = ChargeFlowLevel.State
Purpose = ChargeAttempt.Purpose


def issue_row(card, state=IS.COLLECTING, *, failure_code="", amount=1000, currency="EUR", **kw):
    return ChargeIssue(
        space_id=card.space_id,
        customer_id=card.customer_id,
        card=card,
        source=ChargeIssue.Source.STAFF,
        customer_name="Erika Mustermann",
        customer_email="erika@example.test",
        provider_customer_id="cus_dash",
        card_last4="4242",
        amount_minor=amount,
        currency=currency,
        state=state,
        failure_code=failure_code,
        **kw,
    )


def attempt_row(space, *, amount, currency="EUR", finished_at, status="succeeded", **owner):
    return ChargeAttempt(
        space=space,
        purpose=owner.pop("purpose"),
        provider_customer_id="cus_dash",
        provider_payment_method_id="pm_dash",
        amount_minor=amount,
        currency=currency,
        idempotency_key=f"dash-{next(_keys)}",
        status=status,
        finished_at=finished_at,
        **owner,
    )


def default_levels(space):
    flow = ChargeFlow.objects.get(space=space, is_default=True)
    return flow, list(ChargeFlowLevelConfiguration.objects.filter(flow=flow).order_by("priority"))


def fill_dashboard_data(space, card, n):
    """n rows of every kind the dashboard reads, the way bulk data arrives (bulk_create)."""
    now = timezone.now()
    flow, (l1, *_) = default_levels(space)
    issues = ChargeIssue.objects.bulk_create(
        [issue_row(card, failure_code=f"code_{i % 7}") for i in range(n)], batch_size=2000
    )
    ChargeAttempt.objects.bulk_create(
        [
            attempt_row(space, amount=100, finished_at=now, purpose=Purpose.ISSUE_CHARGE,
                     charge_issue=issue, currency=("EUR", "USD")[i % 2])
            for i, issue in enumerate(issues)
        ],
        batch_size=2000,
    )  # fmt: skip
    cases = ChargeFlowCase.objects.bulk_create(
        [
            ChargeFlowCase(
                space=space,
                issue=issue,
                flow=flow,
                state=(CS.RUNNING, CS.SUCCEEDED, CS.FAILED)[i % 3],
                recipient_email="e@x.test",
                finished_at=None if i % 3 == 0 else now,
            )
            for i, issue in enumerate(issues)
        ],
        batch_size=2000,
    )
    ChargeFlowLevel.objects.bulk_create(
        [
            ChargeFlowLevel(
                case=case,
                configuration=l1,
                position=1,
                state=(LS.PENDING, LS.SUCCESSFUL, LS.FAILED)[i % 3],
                started_at=now,
                times_out_at=now,
                finished_at=None if i % 3 == 0 else now,
            )
            for i, case in enumerate(cases)
        ],
        batch_size=2000,
    )
    events = OutboundEvent.objects.bulk_create(
        [
            OutboundEvent(space=space, type="t", payload={}, url="https://x.test", tries=1,
                          given_up=i % 2 == 0)
            for i in range(n)
        ],
        batch_size=2000,
    )  # fmt: skip
    DeliveryAttempt.objects.bulk_create(
        [DeliveryAttempt(event=event, latency_ms=1) for event in events], batch_size=2000
    )
    start = ProviderEvent.objects.count()
    ProviderEvent.objects.bulk_create(
        [
            ProviderEvent(provider_event_id=f"evt_{start + i}", type="t", payload={}, tries=1,
                          given_up=True)
            for i in range(n)
        ],
        batch_size=2000,
    )  # fmt: skip
