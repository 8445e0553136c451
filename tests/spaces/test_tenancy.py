"""Issue 7 §2, tenancy: no admin list, filter or choice shows another space; the global
schedules are for superusers only; a customer, its cards and its issues stay in one space."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import IntegrityError, transaction
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from billing import api_services
from billing import services as billing_services
from billing.exceptions import SpaceMismatch as BillingSpaceMismatch
from billing.models import ChargeIssue
from cards import services as card_services
from cards.exceptions import RegistrationRefused, SpaceMismatch
from cards.models import (
    CardEvent,
    CardInvitation,
    CardRegistration,
    Customer,
    PaymentCard,
)
from spaces.roles import ADMIN, CLERK, ROLE_PERMISSIONS
from tests.conftest import confirm_setup_intent
from tests.factories import (
    CustomerFactory,
    PaymentCardFactory,
    SpaceFactory,
    StaffUserFactory,
)

pytestmark = pytest.mark.django_db

OTHER_NAME = "Beta Secret Shop"
OTHER_CUSTOMER = "Bruno Beta"


def _issue(card, **fields) -> ChargeIssue:
    customer = card.customer
    return ChargeIssue.objects.create(
        space=card.space,
        customer=customer,
        card=card,
        source=ChargeIssue.Source.STAFF,
        customer_name=customer.name,
        customer_email=customer.email,
        provider_customer_id="cus_x",
        card_last4=card.last4,
        currency="EUR",
        **fields,
    )


@pytest.fixture
def world():
    """Two spaces of one user (so a space filter has something to offer) and another space
    with a row of every kind."""
    alpha = SpaceFactory(name="Alpha Shop", slug="alpha")
    gamma = SpaceFactory(name="Gamma Shop", slug="gamma")
    beta = SpaceFactory(name=OTHER_NAME, slug="beta")
    user = StaffUserFactory(username="both", role=CLERK, spaces=[alpha, gamma])
    user.groups.add(Group.objects.get(name=ADMIN))
    for space in (alpha, gamma, beta):
        name = OTHER_CUSTOMER if space == beta else f"Customer of {space.name}"
        card = PaymentCardFactory(customer=CustomerFactory(space=space, name=name))
        CardInvitation.objects.create(
            space=space, customer=card.customer, expires_at="2099-01-01T00:00Z"
        )
        CardEvent.objects.create(
            space=space, kind=CardEvent.Kind.CARD_EXPIRED, customer=card.customer, card=card
        )
        _issue(card)
        api_services.api_key_create(space=space, name=f"Key {space.slug}", acting_user=_superuser())
        StaffUserFactory(username=f"member-{space.slug}", spaces=[space])
    return alpha, gamma, beta, user


def _superuser():
    user, _ = get_user_model().objects.get_or_create(
        username="root", defaults={"is_staff": True, "is_superuser": True}
    )
    return user


CHANGELISTS = [
    "cards_customer",
    "cards_paymentcard",
    "cards_cardinvitation",
    "cards_cardevent",
    "billing_apikey",
    "billing_chargeissue",
    "spaces_spacemembership",
]


@pytest.mark.parametrize("changelist", CHANGELISTS)
def test_changelist_filters_offer_only_the_users_spaces(client, world, changelist):
    alpha, gamma, beta, user = world
    client.force_login(user)

    response = client.get(reverse(f"admin:{changelist}_changelist"))

    html = response.content.decode()
    assert response.status_code == 200
    # The space filter is shown, with the user's two spaces and nothing of the third.
    spec = next(s for s in response.context["cl"].filter_specs if s.field_path == "space")
    assert {label for _, label in spec.lookup_choices} == {"Alpha Shop", "Gamma Shop"}
    assert OTHER_NAME not in html and OTHER_CUSTOMER not in html


def test_a_filter_on_another_spaces_id_shows_nothing_of_it(client, world):
    _, _, beta, user = world
    client.force_login(user)

    response = client.get(reverse("admin:cards_customer_changelist"), {"space__id__exact": beta.pk})

    assert list(response.context["cl"].result_list) == []
    assert OTHER_NAME not in response.content.decode()


def test_choices_on_add_forms_are_only_the_users_spaces(client, world):
    alpha, gamma, beta, user = world
    client.force_login(user)

    for page in ("admin:cards_customer_add", "admin:billing_apikey_add"):
        response = client.get(reverse(page))
        field = response.context["adminform"].form.fields["space"]
        assert set(field.queryset) == {alpha, gamma}
        assert OTHER_NAME not in response.content.decode()


# --- Global schedules -------------------------------------------------------------------------


@pytest.fixture
def schedule():
    every_minute, _ = IntervalSchedule.objects.get_or_create(
        every=60, period=IntervalSchedule.SECONDS
    )
    return PeriodicTask.objects.create(
        name="billing-charge-due-issues",
        task="billing.charge_issues_due_dispatch",
        interval=every_minute,
    )


def _schedule_form(schedule, **changes):
    return {
        "name": schedule.name,
        "regtask": schedule.task,
        "task": "",
        "interval": schedule.interval_id,
        "args": "[]",
        "kwargs": "{}",
        "enabled": "",  # the attack: switch off the charging of every space
        "priority": "",
        "queue": "",
        "exchange": "",
        "routing_key": "",
        "headers": "{}",
        "expire_seconds": "",
        "description": "",
        **changes,
    }


def test_the_admin_role_has_no_schedule_permission():
    assert not any(code.startswith("django_celery_beat.") for code in ROLE_PERMISSIONS[ADMIN])


def test_a_space_admin_cannot_see_or_change_the_global_schedules(client, schedule):
    space_admin = StaffUserFactory(role=ADMIN, spaces=[SpaceFactory()])
    # Even a permission given by hand does not open them: only superusers do.
    space_admin.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="django_celery_beat")
    )
    client.force_login(space_admin)
    change = reverse("admin:django_celery_beat_periodictask_change", args=[schedule.pk])

    page = client.get(change)
    post = client.post(change, _schedule_form(schedule))
    listing = client.get(reverse("admin:django_celery_beat_periodictask_changelist"))
    interval = client.get(
        reverse("admin:django_celery_beat_intervalschedule_change", args=[schedule.interval_id])
    )
    index = client.get(reverse("admin:index"))

    assert (page.status_code, post.status_code, listing.status_code) == (403, 403, 403)
    assert interval.status_code == 403
    assert "Periodic tasks" not in index.content.decode()
    schedule.refresh_from_db()
    assert schedule.enabled is True


def test_a_superuser_can_change_a_schedule(client, schedule, admin_user):
    client.force_login(admin_user)
    change = reverse("admin:django_celery_beat_periodictask_change", args=[schedule.pk])

    response = client.post(change, _schedule_form(schedule))

    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule.refresh_from_db()
    assert schedule.enabled is False


# --- One customer, one space ------------------------------------------------------------------


def test_the_admin_shows_a_customers_space_read_only_and_never_moves_it(client, world):
    alpha, gamma, _, user = world
    customer = Customer.objects.get(space=alpha)
    client.force_login(user)
    url = reverse("admin:cards_customer_change", args=[customer.pk])

    page = client.get(url)
    response = client.post(
        url,
        {
            "space": gamma.pk,
            "name": "Renamed",
            "email": customer.email,
            "preferred_language": "en",
            "external_number": "",
            "cards-TOTAL_FORMS": 0,
            "cards-INITIAL_FORMS": 0,
        },
    )

    assert "space" not in page.context["adminform"].form.fields
    assert response.status_code == 302
    customer.refresh_from_db()
    assert (customer.name, customer.space) == ("Renamed", alpha)


def test_the_model_refuses_to_move_a_customer(world):
    alpha, gamma, _, _ = world
    customer = Customer.objects.get(space=alpha)

    customer.space = gamma
    with pytest.raises(SpaceMismatch):
        customer.save()

    assert Customer.objects.get(pk=customer.pk).space == alpha


def test_starting_an_issue_with_another_customers_card_is_refused(world):
    alpha, gamma, _, _ = world
    mine = Customer.objects.get(space=alpha)
    foreign_card = PaymentCard.objects.get(space=gamma)
    same_space_other_customer = PaymentCardFactory(customer=CustomerFactory(space=alpha))
    before = ChargeIssue.objects.count()

    for card in (foreign_card, same_space_other_customer):
        with pytest.raises(BillingSpaceMismatch) as refused:
            billing_services.charge_issue_start(
                customer=mine, card=card, source=ChargeIssue.Source.STAFF
            )
        assert refused.value.code == "card_other_customer"

    assert ChargeIssue.objects.count() == before


def test_an_invitation_registers_a_card_only_in_its_own_space(world, localstripe):
    alpha, gamma, _, _ = world
    invitation = CardInvitation.objects.get(space=alpha)
    # A page of another space that was handed this invitation (the SetupIntent is made for
    # exactly that page, so the provider's metadata matches it).
    intent = card_services.registration_setup_intent_start(space=gamma, invitation=invitation)
    confirm_setup_intent(localstripe, intent.client_secret, "4242424242424242")
    cards_before = PaymentCard.objects.count()

    with pytest.raises(RegistrationRefused) as refused:
        card_services.card_registration_complete(
            space=gamma, setup_intent_id=intent.id, invitation=invitation
        )

    assert refused.value.code == "invitation_other_space"
    assert not CardRegistration.objects.filter(setup_intent_id=intent.id).exists()
    assert PaymentCard.objects.count() == cards_before
    invitation.refresh_from_db()
    assert invitation.used_at is None


# Raw ORM updates bypass every service check: PostgreSQL's composite foreign keys refuse them.
def _mixing_updates(alpha, gamma):
    card = PaymentCard.objects.get(space=alpha)
    customer = card.customer
    other_card = PaymentCard.objects.get(space=gamma)
    issue = ChargeIssue.objects.get(space=alpha)
    registration = CardRegistration.objects.create(
        space=alpha, setup_intent_id="seti_x", customer=customer, card=card
    )
    same_space_card = PaymentCardFactory(customer=CustomerFactory(space=alpha))
    return {
        "customer moved": lambda: Customer.objects.filter(pk=customer.pk).update(space=gamma),
        "card moved": lambda: PaymentCard.objects.filter(pk=card.pk).update(space=gamma),
        "card given to another space's customer": lambda: PaymentCard.objects.filter(
            pk=card.pk
        ).update(customer=other_card.customer),
        "issue with another space's customer": lambda: ChargeIssue.objects.filter(
            pk=issue.pk
        ).update(customer=other_card.customer),
        "issue with another space's card": lambda: ChargeIssue.objects.filter(pk=issue.pk).update(
            card=other_card
        ),
        "issue with another customer's card": lambda: ChargeIssue.objects.filter(
            pk=issue.pk
        ).update(card=same_space_card),
        "issue moved": lambda: ChargeIssue.objects.filter(pk=issue.pk).update(space=gamma),
        "invitation moved": lambda: CardInvitation.objects.filter(space=alpha).update(space=gamma),
        "registration moved": lambda: CardRegistration.objects.filter(pk=registration.pk).update(
            space=gamma
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "customer moved",
        "card moved",
        "card given to another space's customer",
        "issue with another space's customer",
        "issue with another space's card",
        "issue with another customer's card",
        "issue moved",
        "invitation moved",
        "registration moved",
    ],
)
def test_the_database_refuses_rows_that_mix_spaces(world, case):
    alpha, gamma, _, _ = world
    update = _mixing_updates(alpha, gamma)[case]

    with pytest.raises(IntegrityError), transaction.atomic():
        update()
