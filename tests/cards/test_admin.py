import pytest
from django.core import mail
from django.urls import reverse

from cards.models import CardEvent, CardInvitation, PaymentCard
from spaces.roles import APPROVER, CLERK
from tests.factories import CustomerFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup():
    mine, other = SpaceFactory(name="Mine"), SpaceFactory(name="Other")
    ada = CustomerFactory(space=mine, name="Ada Mine", external_number="0283759")
    PaymentCard.objects.create(
        space=mine,
        customer=ada,
        provider_payment_method_id="pm_ada",
        brand="Visa",
        last4="1881",
        exp_month=6,
        exp_year=2030,
        is_default=True,
    )
    CustomerFactory(space=other, name="Bob Other")
    clerk = StaffUserFactory(role=CLERK, spaces=[mine])
    return mine, ada, clerk


def test_clerk_sees_only_their_spaces_customers_and_can_search_by_last4(client, setup):
    _, ada, clerk = setup
    client.force_login(clerk)
    url = reverse("admin:cards_customer_changelist")

    listing = client.get(url)
    by_last4 = client.get(url, {"q": "1881"})
    by_number = client.get(url, {"q": "0283759"})

    assert [c.name for c in listing.context["cl"].result_list] == ["Ada Mine"]
    assert list(by_last4.context["cl"].result_list) == [ada]
    assert list(by_number.context["cl"].result_list) == [ada]


def test_provider_ids_are_read_only_and_cards_cannot_be_added(client, setup):
    _, ada, clerk = setup
    client.force_login(clerk)

    change = client.get(reverse("admin:cards_customer_change", args=[ada.pk]))

    assert "provider_customer_id" not in change.context["adminform"].form.fields
    assert client.get(reverse("admin:cards_paymentcard_add")).status_code == 403
    card_page = client.get(reverse("admin:cards_paymentcard_changelist"))
    assert card_page.status_code == 200 and "0283759-Visa-1881-06/30" in card_page.content.decode()


def test_send_registration_link_action_emails_an_invitation_and_audits_it(
    client, setup, django_capture_on_commit_callbacks
):
    _, ada, clerk = setup
    client.force_login(clerk)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:cards_customer_changelist"),
            {"action": "send_registration_link", "_selected_action": [ada.pk]},
            follow=True,
        )

    assert "Registration link sent to 1 customer" in response.content.decode()
    invitation = CardInvitation.objects.get()
    assert invitation.customer == ada and invitation.created_by == clerk
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [ada.email]
    assert "/register/invite/" in mail.outbox[0].body
    event = CardEvent.objects.get(kind=CardEvent.Kind.INVITATION_SENT)
    assert event.acting_user == clerk and event.customer == ada


def test_approver_cannot_send_links(client, setup):
    mine, ada, _ = setup
    client.force_login(StaffUserFactory(role=APPROVER, spaces=[mine]))

    response = client.post(
        reverse("admin:cards_customer_changelist"),
        {"action": "send_registration_link", "_selected_action": [ada.pk]},
    )

    assert not CardInvitation.objects.exists() and len(mail.outbox) == 0
    assert response.status_code == 200  # Django answers an unknown action with the list


def test_clerk_cannot_send_a_link_to_another_spaces_customer(client, setup):
    _, _, clerk = setup
    other_customer = CustomerFactory(space=SpaceFactory(), name="Zed")
    client.force_login(clerk)

    client.post(
        reverse("admin:cards_customer_changelist"),
        {"action": "send_registration_link", "_selected_action": [other_customer.pk]},
    )

    assert not CardInvitation.objects.exists()


def test_clerk_starts_a_charge_for_a_customer_with_a_card_and_is_told_about_one_without(
    client, setup
):
    from billing.models import ChargeIssue

    mine, ada, clerk = setup
    cardless = CustomerFactory(space=mine, name="No Card")
    client.force_login(clerk)

    response = client.post(
        reverse("admin:cards_customer_changelist"),
        {"action": "start_charge", "_selected_action": [ada.pk, cardless.pk]},
        follow=True,
    )

    issue = ChargeIssue.objects.get()
    assert issue.customer == ada and issue.state == ChargeIssue.State.AWAITING_AMOUNT
    assert issue.source == ChargeIssue.Source.STAFF and issue.card_last4 == "1881"
    assert issue.events.get().actor == clerk
    content = response.content.decode()
    assert "Started 1 charge(s)" in content
    assert "No Card: This customer has no active card on file." in content
