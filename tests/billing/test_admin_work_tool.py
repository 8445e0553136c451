"""Issue 12 §1: the admin as a work tool (home page work queue, sidebar counts, badges and
columns, steps not offered, return banner, approval comment, history labels, 1r. confirmation
and double click, emails), through the test client."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from billing import notifications, services
from billing.models import ChargeIssue
from payments.models import OutboundEvent
from spaces.roles import CLERK
from tests.billing.test_admin import ENTRY, change_url, enter, step_url, with_both_roles
from tests.factories import CustomerFactory, PaymentCardFactory, StaffUserFactory

pytestmark = pytest.mark.django_db
State = ChargeIssue.State


@pytest.fixture
def issue(space, register_card):
    return ChargeIssue.objects.get(customer=register_card(space).customer)


def _start(space, **customer):
    card = PaymentCardFactory(customer=CustomerFactory(space=space, **customer))
    return services.charge_issue_start(customer=card.customer, source="staff")


def _queue(response, key):
    sections = {s["queue"].key: s for s in response.context["work_queue"]}
    return sections.get(key)


# --- Home page: work queue per person ---------------------------------------------------------


def test_the_clerks_home_page_lists_what_awaits_entry_and_what_came_back(
    client, space, clerk, approver
):
    waiting = _start(space, name="Wanda Waiting")
    returned = _start(space, name="Rita Returned")
    enter(returned, clerk)
    services.charge_issue_return(issue=returned, acting_user=approver, comment="Wrong amount")
    other_clerk = StaffUserFactory(username="clerk2", role=CLERK, spaces=[space])
    theirs = _start(space, name="Theo Theirs")
    enter(theirs, other_clerk)
    services.charge_issue_return(issue=theirs, acting_user=approver, comment="No")
    client.force_login(clerk)

    home = client.get(reverse("admin:index"))

    assert home.status_code == 200
    assert [i.pk for i in _queue(home, "awaiting_amount")["rows"]] == [waiting.pk]
    assert [i.pk for i in _queue(home, "returned")["rows"]] == [returned.pk]
    assert _queue(home, "awaiting_approval") is None  # a clerk approves nothing
    html = home.content.decode()
    assert 'id="queue-awaiting_amount" data-count="1"' in html
    assert "Wanda Waiting" in html and "Rita Returned" in html and "Theo Theirs" not in html


def test_the_approvers_queue_leaves_out_what_they_entered_themselves(client, space, clerk):
    both = with_both_roles(StaffUserFactory(username="both", spaces=[space]))
    by_clerk = _start(space, name="Cleo Clerk")
    enter(by_clerk, clerk)
    by_both = _start(space, name="Bo Both")
    enter(by_both, both)
    client.force_login(both)

    home = client.get(reverse("admin:index"))
    listed = client.get(
        reverse("admin:billing_chargeissue_changelist"), {"queue": "awaiting_approval"}
    )

    assert [i.pk for i in _queue(home, "awaiting_approval")["rows"]] == [by_clerk.pk]
    assert [i.pk for i in listed.context["cl"].result_list] == [by_clerk.pk]


def test_failed_deliveries_and_other_spaces_work_stay_apart(client, space, approver):
    from tests.factories import SpaceFactory

    other = SpaceFactory(name="Other", slug="other")
    _start(other, name="Foreign Customer")
    admin_user = StaffUserFactory(username="boss", role="admin", spaces=[space])
    OutboundEvent.objects.create(
        space=space, type="charge_issue.failed", payload={}, url="https://h.test/", tries=3
    )
    OutboundEvent.objects.create(
        space=other, type="charge_issue.failed", payload={}, url="https://h.test/", tries=3
    )
    OutboundEvent.objects.create(
        space=space,
        type="charge_issue.succeeded",
        payload={},
        url="https://h.test/",
        delivered_at=timezone.now(),
    )
    client.force_login(admin_user)

    home = client.get(reverse("admin:index"))

    assert _queue(home, "deliveries")["count"] == 1
    assert "Foreign Customer" not in home.content.decode()


def test_the_home_page_and_its_sidebar_counts_cost_the_same_queries_for_2_and_20_issues(
    client, space, clerk
):
    for _ in range(2):
        _start(space)
    client.force_login(clerk)
    client.get(reverse("admin:index"))  # warm caches out of the count

    with CaptureQueriesContext(connection) as few:
        small = client.get(reverse("admin:index"))
    for _ in range(18):
        _start(space)
    with CaptureQueriesContext(connection) as many:
        large = client.get(reverse("admin:index"))

    assert _queue(small, "awaiting_amount")["count"] == 2
    assert _queue(large, "awaiting_amount")["count"] == 20
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    # The sidebar shows the same count as the page (its badge reads the request's counts).
    badge = re.search(
        r"<span>Awaiting amount entry</span>\s*<span[^>]*>\s*(\d+)\s*</span>",
        large.content.decode(),
    )
    assert badge and badge.group(1) == "20"


# --- Lists: badges and columns ---------------------------------------------------------------


def test_the_charge_list_tells_cases_apart_and_colours_states(client, space, clerk):
    one = _start(space, name="Erika Mustermann", email="erika.one@example.test")
    _start(space, name="Erika Mustermann", email="erika.two@example.test")
    one.external_reference = "ORDER-77"
    one.save()
    client.force_login(clerk)

    html = client.get(reverse("admin:billing_chargeissue_changelist")).content.decode()

    assert "erika.one@example.test" in html and "erika.two@example.test" in html
    assert "ORDER-77" in html and "Staff" in html and "•••• 4242" in html
    # The state is a coloured label (unfold's): amount entry waits, in orange.
    assert "bg-orange-100" in html and "1. Awaiting charge amount entry" in html
    assert "flow level" in html


# --- Steps not offered; refusals are admin pages ---------------------------------------------


def test_the_enterer_is_not_offered_approval_and_the_page_says_why(client, space, issue):
    both = with_both_roles(StaffUserFactory(username="both", spaces=[space]))
    enter(issue, both)
    client.force_login(both)

    change = client.get(change_url(issue)).content.decode()
    page = client.get(step_url("approval", issue))

    assert 'id="step-approval"' not in change
    assert page.status_code == 403
    body = page.content.decode()
    assert "someone else must approve" in body
    assert f'href="{change_url(issue)}" id="error-back"' in body
    assert 'id="nav-sidebar"' in body  # inside the admin's layout, menu included
    assert ChargeIssue.objects.get(pk=issue.pk).state == State.AWAITING_APPROVAL


def test_a_forbidden_step_is_an_admin_page_with_a_way_back(client, clerk, issue):
    enter(issue, clerk)
    client.force_login(clerk)

    page = client.get(step_url("approval", issue))

    assert page.status_code == 403
    assert page.templates[0].name == "admin/error_page.html"
    assert 'id="error-back"' in page.content.decode()


# --- Return banner, approval comment, history labels ----------------------------------------


def test_the_return_comment_is_a_banner_on_the_clerks_form(client, clerk, approver, issue):
    enter(issue, clerk)
    services.charge_issue_return(issue=issue, acting_user=approver, comment="Order was 39.90")
    client.force_login(clerk)

    html = client.get(step_url("enter_amount", issue)).content.decode()

    banner = html.index('id="return-comment"')
    assert banner < html.index('id="enter_amount-form"')
    assert "Order was 39.90" in html[banner : html.index('id="enter_amount-form"')]
    assert "approver1" in html[banner : html.index('id="enter_amount-form"')]


def test_a_comment_typed_when_approving_is_kept_and_shown(client, clerk, approver, issue):
    enter(issue, clerk)
    client.force_login(approver)

    client.post(step_url("approval", issue), {"decision": "approve", "comment": "Checked order"})

    assert issue.events.get(action="approved").comment == "Checked order"
    history = client.get(reverse("admin:billing_chargeissue_history", args=[issue.pk]))
    assert "Checked order" in history.content.decode()


def test_the_history_shows_labels_not_codes(client, clerk, approver, issue):
    enter(issue, clerk)
    services.charge_issue_return(issue=issue, acting_user=approver, comment="No")
    client.force_login(clerk)

    history = client.get(reverse("admin:billing_chargeissue_history", args=[issue.pk]))
    change = client.get(change_url(issue))

    for html in (history.content.decode(), change.content.decode()):
        assert "1. Charge amount entered" in html and "Returned to the clerk" in html
        assert "amount_entered" not in html and "awaiting_approval<" not in html


# --- 1r. restart: confirmation and double click ----------------------------------------------


def test_restart_asks_for_confirmation_first(client, clerk, issue):
    services.charge_issue_cancel(issue=issue, acting_user=clerk)
    client.force_login(clerk)

    change = client.get(change_url(issue)).content.decode()
    confirm = client.get(reverse("admin:billing_chargeissue_restart_confirm", args=[issue.pk]))

    confirm_url = reverse("admin:billing_chargeissue_restart_confirm", args=[issue.pk])
    assert f'href="{confirm_url}" id="step-restart"' in change
    assert confirm.status_code == 200
    assert f'action="{step_url("restart", issue)}"' in confirm.content.decode()
    assert ChargeIssue.objects.count() == 1  # looking at the question started nothing


def test_a_double_click_on_restart_starts_one_new_charge(client, clerk, issue):
    services.charge_issue_cancel(issue=issue, acting_user=clerk)
    client.force_login(clerk)

    first = client.post(step_url("restart", issue))
    second = client.post(step_url("restart", issue))

    new = ChargeIssue.objects.exclude(pk=issue.pk)
    assert new.count() == 1
    assert first.url == second.url == step_url("enter_amount", new.get())


def test_a_restart_after_the_window_starts_another(client, clerk, issue, time_machine):
    services.charge_issue_cancel(issue=issue, acting_user=clerk)
    client.force_login(clerk)
    client.post(step_url("restart", issue))

    time_machine.move_to(timezone.now() + services.RESTART_REPEAT_WINDOW + timedelta(seconds=5))
    client.post(step_url("restart", issue))

    assert ChargeIssue.objects.exclude(pk=issue.pk).count() == 2


# --- Emails and the wording ------------------------------------------------------------------


def test_a_greeting_in_the_clerks_text_is_the_only_greeting(space, clerk, approver, issue):
    enter(issue, clerk, notification_body="Hello Erika,\nwe charge your order.")
    issue.refresh_from_db()
    mail.outbox.clear()

    notifications.notification_send(issue_id=issue.pk)

    (message,) = mail.outbox
    assert message.body.count("Hello") == 1
    assert message.body.startswith("Hello Erika,")


def test_without_a_greeting_the_email_greets_once_by_name(space, clerk, issue):
    enter(issue, clerk, notification_body="We charge your order.")
    mail.outbox.clear()

    notifications.notification_send(issue_id=issue.pk)

    assert mail.outbox[0].body.count("Hello") == 1
    assert mail.outbox[0].body.startswith("Hello Kim Kunde,")


def test_the_receipt_shows_the_order_reference_not_the_internal_id(clerk, approver, issue):
    enter(issue, clerk)
    ChargeIssue.objects.filter(pk=issue.pk).update(
        external_reference="ORDER-1234", state=State.SUCCEEDED
    )
    mail.outbox.clear()

    notifications.customer_outcome_send(issue_id=issue.pk)
    ChargeIssue.objects.filter(pk=issue.pk).update(external_reference="")
    notifications.customer_outcome_send(issue_id=issue.pk)

    with_reference, without = mail.outbox
    assert "Reference: ORDER-1234" in with_reference.body
    assert f"Reference: {issue.pk}\n" not in without.body
    assert f"Reference: C-{issue.pk:06d}" in without.body


def test_a_date_ending_a_sentence_has_one_full_stop():
    when = timezone.make_aware(timezone.datetime(2026, 12, 3, 14, 0))
    template = Template('{% load sentence %}on {{ when|date_in_sentence:"DATETIME_FORMAT" }}.')

    with translation.override("en"):
        english = template.render(Context({"when": when}))
    with translation.override("de"):
        german = template.render(Context({"when": when}))

    assert english.endswith("p.m.") and not english.endswith("..")
    assert german == "on 3. Dezember 2026 14:00."


def test_the_form_offers_the_spaces_wording_per_language_with_a_preview(client, clerk, issue):
    issue.space.notification_texts = {"de": {"subject": "Ihre Bestellung", "body": "wir buchen"}}
    issue.space.save()
    client.force_login(clerk)

    page = client.get(step_url("enter_amount", issue))
    german = client.get(step_url("enter_amount", issue), {"wording": "de"})
    preview = client.post(
        step_url("enter_amount", issue),
        {**ENTRY, "notification_body": "We charge order 1234.", "preview": "1"},
    )

    html = page.content.decode()
    assert 'id="use-wording-de"' in html and "Ihre Bestellung" in html and "English" in html
    # The customer reads English: the form starts from the English default.
    assert page.context["form"]["notification_subject"].value().endswith("charged")
    assert german.context["form"]["notification_subject"].value() == "Ihre Bestellung"
    assert preview.status_code == 200
    assert "Hello Kim Kunde," in preview.context["preview"]["text"]
    assert "We charge order 1234." in preview.context["preview"]["text"]
    assert "€49.90" in preview.context["preview"]["text"]
    assert ChargeIssue.objects.get(pk=issue.pk).state == State.AWAITING_AMOUNT  # nothing saved


def test_an_approver_cannot_use_the_clerks_queue_filter_to_see_other_spaces(
    client, space, approver
):
    from tests.factories import SpaceFactory

    _start(SpaceFactory(name="Other", slug="other"))
    client.force_login(approver)

    listed = client.get(
        reverse("admin:billing_chargeissue_changelist"), {"queue": "awaiting_amount"}
    )

    assert listed.context["cl"].result_count == 0
