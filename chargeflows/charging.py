"""How a charge-flow level takes part in payments' money path (payments/attempts.py).

A level may charge twice: the saved card (step token), then another saved method (step
method). Each step is its own AttemptOwner instance with its own idempotency-key prefix, so
each is charged at most once per level; both share the purpose FLOW_LEVEL, the owner field
`flow_level` and the outcome handling registered with payments.

These owners take the ORM path on every database (single_statement = False): a level charge
is rare next to issue charges, and its outcome touches the case, the issue and the outbox,
which reads far better as ORM steps than as one more CTE chain.
"""

from django.utils import timezone

from payments.attempts import AttemptOwner, Snapshot
from payments.models import ChargeAttempt

from .locks import level_locked, link_locked
from .models import ChargeFlowLevel
from .selectors import level_payment_method

Step = ChargeFlowLevel.Step
Status = ChargeAttempt.Status


class LevelCharge(AttemptOwner):
    purpose = ChargeAttempt.Purpose.FLOW_LEVEL
    field = "flow_level"
    metadata_key = "charge_flow_level"
    single_statement = False

    def __init__(self, *, step: str, charging_step: str):
        self.step = step
        self.charging_step = charging_step
        self.key_prefix = f"flow-level-{step}-"

    def claim(self, *, owner_id, now) -> Snapshot | None:
        # Only a level whose run saved this step as the next thing to do. The run claims it
        # inside its own transaction, which holds these locks already (flow_level_run: claim
        # and charge in one step); the order is chargeflows/locks.py's.
        level = level_locked(owner_id, state=ChargeFlowLevel.State.PENDING, step=self.step)
        if level is None or level.case.state != level.case.State.RUNNING:
            return None
        if ChargeAttempt.objects.filter(idempotency_key=f"{self.key_prefix}{level.pk}").exists():
            return None  # this step was charged already (the unique key would refuse anyway)
        method = level_payment_method(level=level, step=self.step, today=now.date())
        if method is None:
            return None
        issue = level.case.issue
        return Snapshot(
            owner_id=level.pk,
            space_id=level.case.space_id,
            provider_customer_id=issue.provider_customer_id,
            payment_method_id=method.provider_payment_method_id,
            # Only the approved amount is ever collected: flows never change it.
            amount_minor=issue.amount_minor,
            currency=issue.currency,
        )

    def claimed(self, *, owner_id, attempt) -> None:
        # due_at NULL: neither the runner nor the period's end touches a charging level. A SEPA
        # debit ends `processing` and keeps the level here, for days on Stripe, until the
        # webhook or the reconciler records its outcome (level_charge_settled).
        ChargeFlowLevel.objects.filter(pk=owner_id).update(
            step=self.charging_step, due_at=None, claimed_until=None
        )

    def settled(self, *, attempt, outbound_id) -> list:
        from .services import level_charge_settled

        return level_charge_settled(attempt=attempt, outbound_id=outbound_id, now=timezone.now())


TOKEN_CHARGE = LevelCharge(step=Step.TOKEN, charging_step=Step.TOKEN_CHARGING)
METHOD_CHARGE = LevelCharge(step=Step.METHOD, charging_step=Step.METHOD_CHARGING)
CHARGES = {Step.TOKEN: TOKEN_CHARGE, Step.METHOD: METHOD_CHARGE}


class PaymentLinkCharge(AttemptOwner):
    """The charge of the card a customer entered on a link's payment page: at most one per
    link (its idempotency key is the link's), however often the page is submitted."""

    purpose = ChargeAttempt.Purpose.PAYMENT_LINK
    field = "payment_link"
    metadata_key = "charge_flow_payment_link"
    key_prefix = "payment-link-"
    single_statement = False
    customer_present = True

    def claim(self, *, owner_id, now) -> Snapshot | None:
        # Locked in the collection's order and waited for: a staff action that cancels the
        # case or ends the level is either before this claim (the link is retired, nothing is
        # charged) or after it (it sees the attempt under way and refuses); a second tab waits
        # for the first tab's claim and finds its attempt.
        link = link_locked(
            owner_id,
            used_at__isnull=True,
            retired_at__isnull=True,
            expires_at__gt=now,
            level__state=ChargeFlowLevel.State.PENDING,
        )
        if (
            link is None
            or not link.provider_payment_method_id
            or link.level.case.state != link.level.case.State.RUNNING
        ):
            return None
        if ChargeAttempt.objects.filter(payment_link_id=link.pk).exists():
            return None
        issue = link.level.case.issue
        return Snapshot(
            owner_id=link.pk,
            space_id=link.level.case.space_id,
            provider_customer_id=issue.provider_customer_id,
            payment_method_id=link.provider_payment_method_id,
            amount_minor=issue.amount_minor,  # from the database, never from the page
            currency=issue.currency,
        )

    def claimed(self, *, owner_id, attempt) -> None:
        pass

    def settled(self, *, attempt, outbound_id) -> list:
        from .services import payment_link_settled

        return payment_link_settled(attempt=attempt, now=timezone.now())


PAYMENT_LINK_CHARGE = PaymentLinkCharge()
