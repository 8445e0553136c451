import pytest

from cards import services as card_services
from spaces.roles import APPROVER, CLERK
from tests.conftest import confirm_setup_intent
from tests.factories import SpaceFactory, StaffUserFactory

VISA = "4242424242424242"
DECLINES_ON_CHARGE = "4000000000000341"  # saves fine, declines when charged


@pytest.fixture
def space():
    return SpaceFactory(name="Shop", slug="shop", default_currency="EUR")


@pytest.fixture
def clerk(space):
    return StaffUserFactory(username="clerk1", role=CLERK, spaces=[space])


@pytest.fixture
def approver(space):
    return StaffUserFactory(username="approver1", role=APPROVER, spaces=[space])


@pytest.fixture
def register_card(localstripe, django_capture_on_commit_callbacks):
    """Register a card as a customer would (through localstripe), which starts an issue."""

    def register(space, *, number=VISA, name="Kim Kunde", email="kim@example.test"):
        intent = card_services.registration_setup_intent_start(space=space)
        confirm_setup_intent(localstripe, intent.client_secret, number)
        with django_capture_on_commit_callbacks(execute=True):
            return card_services.card_registration_complete(
                space=space, setup_intent_id=intent.id, name=name, email=email
            )

    return register


def payment_intents_for(localstripe, issue) -> list[dict]:
    """Every PaymentIntent localstripe holds for this issue."""
    return [
        pi
        for pi in localstripe.list("payment_intents")
        if pi["metadata"].get("charge_issue") == str(issue.pk)
    ]


@pytest.fixture
def nothing_collects(space):
    """No charge flow applies in the space, so a failed charge fails at once (a charge flow
    otherwise collects it: tests/chargeflows)."""
    from chargeflows.models import ChargeFlow

    ChargeFlow.objects.filter(space=space).update(state=ChargeFlow.State.INACTIVE)
