"""Admin: lines with filters (status, empty card, due soon), add/edit through the services
with form errors, actions, the missing-card list, the customer page with cards and lines."""

import pytest
from django.urls import reverse

from recurring import services
from recurring.models import RecurringEvent, RecurringLine, RecurringSettings
from tests.factories import CustomerFactory, SpaceFactory
from tests.recurring.conftest import SEED_KEY, soon

pytestmark = pytest.mark.django_db
Status = RecurringLine.Status


@pytest.fixture
def lines(seed_customer, seed_card, make_line, clerk):
    card = seed_card(exp_year=2034)
    with_card = make_line(seed_customer, card=card, charge_date=soon(30), description="with card")
    waiting = make_line(seed_customer, key=SEED_KEY, charge_date=soon(3), description="waiting")
    paused = make_line(seed_customer, key=SEED_KEY, charge_date=soon(2), description="paused")
    services.recurring_line_pause(line=paused, acting_user=clerk)
    other_space = services.recurring_line_create(
        customer=CustomerFactory(space=SpaceFactory()),
        amount_minor=4990,
        charge_date=soon(3),
        card_lookup_key="1-Visa-4242-01/30",
    )
    return with_card, waiting, paused, other_space


def _listed(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 200
    return {line.description for line in response.context["cl"].result_list}


def test_line_list_filters_by_status_empty_card_and_due_soon(client, clerk, lines):
    client.force_login(clerk)
    url = reverse("admin:recurring_recurringline_changelist")
    assert _listed(client, url) == {"with card", "waiting", "paused"}  # own space only
    # The parameters the list's own filters send (status__exact, not a bare field lookup).
    assert _listed(client, url, status__exact="paused") == {"paused"}
    assert _listed(client, url, card="empty") == {"waiting", "paused"}
    assert _listed(client, url, due="soon") == {"waiting"}


def test_missing_card_list_shows_active_lines_without_a_card(client, clerk, lines):
    client.force_login(clerk)
    assert _listed(client, reverse("admin:recurring_linemissingcard_changelist")) == {"waiting"}


def test_customer_page_lists_cards_and_open_lines(client, clerk, lines, seed_customer):
    client.force_login(clerk)
    page = client.get(reverse("admin:cards_customer_change", args=[seed_customer.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "0283759-Mastercard-4242-06/34" in html and SEED_KEY in html
    assert "waiting" in html and "paused" in html


def test_add_a_line_through_the_service_and_bad_input_is_a_form_error(
    client, clerk, seed_customer, seed_card
):
    card = seed_card(exp_year=2034)
    client.force_login(clerk)
    url = reverse("admin:recurring_recurringline_add")
    form = {
        "customer": seed_customer.pk,
        "description": "Tea",
        "amount": "19.90",
        "currency": "EUR",
        "interval": "monthly",
        "cron": "",
        "charge_date": soon(5).isoformat(),
        "card": card.pk,
        "card_lookup_key": "",
    }
    bad = client.post(url, {**form, "amount": "0.10", "interval": "cron", "cron": "nope"})
    assert bad.status_code == 200 and bad.context["adminform"].form.errors
    assert not RecurringLine.objects.exists()

    response = client.post(url, form)

    assert response.status_code == 302
    line = RecurringLine.objects.get()
    assert (line.amount_minor, line.card, line.card_lookup_key) == (1990, card, card.lookup_key)
    assert RecurringEvent.objects.get(line=line).actor == clerk


def test_actions_pause_and_refuse_with_a_message(client, clerk, lines):
    with_card, waiting, paused, _ = lines
    client.force_login(clerk)
    url = reverse("admin:recurring_recurringline_changelist")
    response = client.post(
        url,
        {"action": "pause_lines", "_selected_action": [with_card.pk, paused.pk]},
        follow=True,
    )
    assert response.status_code == 200
    with_card.refresh_from_db()
    assert with_card.status == Status.PAUSED
    texts = [str(m) for m in response.context["messages"]]
    assert any("Paused 1" in t for t in texts) and any("cannot be paused" in t for t in texts)


def test_admin_sets_the_approval_rule_audited(client, space_admin, space):
    client.force_login(space_admin)
    response = client.post(
        reverse("admin:recurring_recurringsettings_add"),
        {
            "space": space.pk,
            "auto_approve_up_to_minor": "5000",
            "auto_approve_currency": "EUR",
            "card_reminder_days": "",
        },
    )
    assert response.status_code == 302
    row = RecurringSettings.objects.get(space=space)
    assert (row.auto_approve_up_to_minor, row.updated_by) == (5000, space_admin)
    assert RecurringEvent.objects.get(action="settings_changed").actor == space_admin
