"""The charging issue's admin pages and step views, driven through the test client."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing import services
from billing.exceptions import SelfApprovalRefused
from billing.models import ChargeIssue, ChargeIssueEvent
from payments.models import ChargeAttempt
from spaces.roles import APPROVER, CLERK
from tests.billing.conftest import payment_intents_for
from tests.factories import (
    CustomerFactory,
    PaymentCardFactory,
    SpaceFactory,
    StaffUserFactory,
)

pytestmark = pytest.mark.django_db
State = ChargeIssue.State

ENTRY = {
    "amount": "49.90",
    "currency": "EUR",
    "notification_subject": "Your March order",
    "notification_body": "We will charge your card for order 1234.",
    "charge_date": "",
}


def step_url(step, issue):
    return reverse(f"admin:billing_chargeissue_{step}", args=[issue.pk])


def change_url(issue):
    return reverse("admin:billing_chargeissue_change", args=[issue.pk])


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def snapshot(issue):
    """Every stored field of an issue plus its event count, to show nothing changed. A refused
    approval's own audit row does not count as a change (tests assert it separately)."""
    fresh = ChargeIssue.objects.get(pk=issue.pk)
    fields = {f.attname: getattr(fresh, f.attname) for f in ChargeIssue._meta.concrete_fields}
    return fields, fresh.events.exclude(action="approval_refused").count()


def refused_approvals(issue) -> list[tuple[str, str]]:
    """(user, reason) of every refused approval audited on the issue."""
    return [
        (event.actor.username, event.detail["reason"])
        for event in issue.events.filter(action="approval_refused").select_related("actor")
    ]


@pytest.fixture
def issue(space, register_card):
    registration = register_card(space)
    return ChargeIssue.objects.get(customer=registration.customer)


def enter(issue, user, **overrides):
    data = {**ENTRY, **overrides}
    return services.charge_amount_enter(
        issue=issue,
        acting_user=user,
        amount=data["amount"],
        currency=data["currency"],
        notification_subject=data["notification_subject"],
        notification_body=data["notification_body"],
    )


def with_both_roles(user):
    user.groups.add(Group.objects.get(name=APPROVER), Group.objects.get(name=CLERK))
    return user


# --- 1. Charge amount entry -------------------------------------------------------------------


def test_clerk_enters_the_amount_through_the_step_view(client, clerk, issue):
    client.force_login(clerk)

    page = client.get(step_url("enter_amount", issue))
    response = client.post(step_url("enter_amount", issue), ENTRY)

    assert page.status_code == 200
    body = page.content.decode()
    # Inherited data is shown, not asked for.
    assert "Kim Kunde" in body and "kim@example.test" in body and "4242" in body
    assert page.context["form"]["currency"].value() == "EUR"
    assert set(page.context["form"].fields) == {
        "amount",
        "currency",
        "notification_subject",
        "notification_body",
        "charge_date",
    }
    assert response.status_code == 302 and response.url == change_url(issue)
    issue.refresh_from_db()
    assert issue.state == State.AWAITING_APPROVAL
    assert (issue.amount_minor, issue.currency) == (4990, "EUR")
    assert issue.notification_subject == "Your March order"
    assert issue.entered_by == clerk and issue.charge_date is None
    event = issue.events.get(action="amount_entered")
    assert event.actor == clerk and event.to_state == State.AWAITING_APPROVAL


def test_a_charge_date_is_stored(client, clerk, issue):
    client.force_login(clerk)
    when = (timezone.now() + timedelta(days=200)).replace(second=0, microsecond=0)

    client.post(
        step_url("enter_amount", issue),
        {**ENTRY, "charge_date": when.strftime("%Y-%m-%dT%H:%M")},
    )

    issue.refresh_from_db()
    assert issue.state == State.AWAITING_APPROVAL
    assert issue.charge_date == when


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("12.345", "EUR", "EUR amounts have at most 2 decimal places."),
        ("-1", "EUR", "The amount must be more than zero."),
        ("0", "EUR", "The amount must be more than zero."),
        ("12.5", "JPY", "JPY has no decimal places: enter a whole amount."),
        ("10000.01", "EUR", "The amount is above this space's maximum of 10,000.00 EUR."),
        ("abc", "EUR", "Enter the amount as a number, e.g. 12.50."),
        # What the API refuses, the admin refuses: other scripts' digits, spaces around it.
        ("１２.５０", "EUR", "Enter the amount as a number, e.g. 12.50."),
        ("١٢.٥٠", "EUR", "Enter the amount as a number, e.g. 12.50."),
        (" 12.50", "EUR", "Enter the amount without spaces around it, e.g. 12.50."),
        ("12.50 ", "EUR", "Enter the amount without spaces around it, e.g. 12.50."),
        # Below the provider's minimum charge for the currency.
        (
            "0.49",
            "EUR",
            "The amount is below the smallest charge our payment provider accepts in EUR: "
            "0.50 EUR.",
        ),
        (
            "49",
            "JPY",
            "The amount is below the smallest charge our payment provider accepts in JPY: 50 JPY.",
        ),
    ],
)
def test_a_bad_amount_is_shown_on_the_field_and_changes_nothing(
    client, clerk, issue, amount, currency, message
):
    client.force_login(clerk)
    before = snapshot(issue)

    response = client.post(
        step_url("enter_amount", issue), {**ENTRY, "amount": amount, "currency": currency}
    )

    assert response.status_code == 200
    assert response.context["form"].errors["amount"] == [message]
    assert 'class="errorlist' in response.content.decode()
    assert snapshot(issue) == before


def test_entry_starts_from_the_returned_data(client, clerk, approver, issue):
    enter(issue, clerk, amount="12.50")
    services.charge_issue_return(issue=issue, acting_user=approver, comment="Wrong amount")
    client.force_login(clerk)

    page = client.get(step_url("enter_amount", issue))

    form = page.context["form"]
    assert str(form["amount"].value()) == "12.50"
    assert form["notification_subject"].value() == "Your March order"
    # The clerk sees why it came back.
    assert "Wrong amount" in page.content.decode()


def test_a_step_in_the_wrong_state_redirects_with_a_message(client, clerk, approver, issue):
    client.force_login(approver)

    response = client.get(step_url("approval", issue))

    assert response.status_code == 302 and response.url == change_url(issue)
    assert messages_of(response) == [
        f"“Approval” is not possible while charge #{issue.pk} is “1. Awaiting charge amount entry”."
    ]


# --- Approval ---------------------------------------------------------------------------------


def test_approver_approves_and_the_issue_is_charged_once(
    client, clerk, approver, issue, localstripe, django_capture_on_commit_callbacks
):
    enter(issue, clerk)
    client.force_login(approver)
    page = client.get(step_url("approval", issue))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(step_url("approval", issue), {"decision": "approve"})
    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(step_url("approval", issue), {"decision": "approve"})

    assert page.status_code == 200
    assert "49.90 EUR" in page.content.decode() and "clerk1" in page.content.decode()
    assert response.status_code == 302 and response.url == change_url(issue)
    issue.refresh_from_db()
    assert issue.state == State.SUCCEEDED and issue.approved_by == approver
    intents = payment_intents_for(localstripe, issue)
    assert [(pi["amount"], pi["currency"], pi["status"]) for pi in intents] == [
        (4990, "eur", "succeeded")
    ]
    assert (
        ChargeAttempt.objects.get(charge_issue=issue).provider_payment_intent_id == intents[0]["id"]
    )
    # The second submission met a finished issue: refused with a message, nothing charged again.
    assert again.status_code == 302 and "is not possible" in messages_of(again)[-1]
    assert len(payment_intents_for(localstripe, issue)) == 1
    assert sorted(m.to[0] for m in mail.outbox) == ["kim@example.test", "kim@example.test"]


def test_the_clerk_cannot_approve(client, clerk, issue):
    enter(issue, clerk)
    client.force_login(clerk)
    before = snapshot(issue)

    page = client.get(step_url("approval", issue))
    post = client.post(step_url("approval", issue), {"decision": "approve"})
    change = client.get(change_url(issue))

    assert page.status_code == 403 and post.status_code == 403
    assert snapshot(issue) == before
    assert b'id="step-approval"' not in change.content
    # The refused POST (not the page view) is audited on the issue.
    assert refused_approvals(issue) == [(clerk.username, "wrong_role")]


def test_whoever_entered_the_amount_is_refused_approval_and_it_is_audited(client, space, issue):
    both = with_both_roles(StaffUserFactory(username="both", spaces=[space]))
    enter(issue, both)
    client.force_login(both)

    response = client.post(step_url("approval", issue), {"decision": "approve"}, follow=True)

    assert response.redirect_chain == [(change_url(issue), 302)]
    assert SelfApprovalRefused.message in response.content.decode()
    issue.refresh_from_db()
    assert issue.state == State.AWAITING_APPROVAL and issue.approved_by is None
    refusal = issue.events.get(action="approval_refused")
    assert refusal.actor == both
    assert not ChargeAttempt.objects.exists()


def test_return_with_a_comment_goes_back_to_the_clerk(client, clerk, approver, issue):
    enter(issue, clerk)
    client.force_login(approver)

    missing = client.post(step_url("approval", issue), {"decision": "return", "comment": " "})
    state_after_missing = ChargeIssue.objects.get(pk=issue.pk).state
    response = client.post(
        step_url("approval", issue), {"decision": "return", "comment": "Order 1234 was 39.90"}
    )
    change = client.get(change_url(issue))

    assert missing.status_code == 200
    assert "Say what needs changing" in missing.content.decode()
    assert state_after_missing == State.AWAITING_APPROVAL
    assert response.status_code == 302
    issue.refresh_from_db()
    assert issue.state == State.RETURNED
    returned = issue.events.get(action="returned")
    assert (returned.actor, returned.comment) == (approver, "Order 1234 was 39.90")
    assert "Order 1234 was 39.90" in change.content.decode()


# --- Restart and cancel -----------------------------------------------------------------------


def test_restart_copies_the_data_into_a_new_issue_and_leaves_the_old_one(client, clerk, issue):
    enter(issue, clerk, amount="12.50")
    services.charge_issue_cancel(issue=issue, acting_user=clerk, comment="Customer asked")
    client.force_login(clerk)
    before = snapshot(issue)

    refused_get = client.get(step_url("restart", issue))
    response = client.post(step_url("restart", issue))

    new = ChargeIssue.objects.exclude(pk=issue.pk).get()
    assert refused_get.status_code == 405
    assert response.status_code == 302 and response.url == step_url("enter_amount", new)
    assert (new.state, new.source, new.restarted_from) == (
        State.AWAITING_AMOUNT,
        ChargeIssue.Source.RESTART,
        issue,
    )
    assert (new.amount_minor, new.currency, new.notification_subject, new.customer_name) == (
        1250,
        "EUR",
        "Your March order",
        "Kim Kunde",
    )
    assert new.events.get().actor == clerk
    assert snapshot(issue) == before
    page = client.get(response.url)
    assert str(page.context["form"]["amount"].value()) == "12.50"


def test_restart_is_only_offered_on_finished_issues(client, clerk, issue):
    client.force_login(clerk)

    change = client.get(change_url(issue))
    response = client.post(step_url("restart", issue))

    assert b'id="step-restart"' not in change.content
    assert response.status_code == 302 and response.url == change_url(issue)
    assert ChargeIssue.objects.count() == 1


def test_cancel_with_a_reason(client, clerk, issue):
    client.force_login(clerk)

    page = client.get(step_url("cancel", issue))
    response = client.post(step_url("cancel", issue), {"comment": "Duplicate"})
    change = client.get(change_url(issue))

    assert page.status_code == 200
    assert response.status_code == 302
    issue.refresh_from_db()
    assert issue.state == State.CANCELLED
    assert issue.events.get(action="cancelled").comment == "Duplicate"
    assert b'id="step-restart"' in change.content and b'id="step-cancel"' not in change.content


# --- Scope, buttons, history ------------------------------------------------------------------


def test_another_spaces_issue_is_404_on_every_step_url(client, space, register_card):
    other = SpaceFactory(name="Other", slug="other")
    foreign = ChargeIssue.objects.get(customer=register_card(other).customer)
    user = with_both_roles(StaffUserFactory(username="both", spaces=[space]))
    client.force_login(user)
    before = snapshot(foreign)

    statuses = {
        (step, method): getattr(client, method)(step_url(step, foreign)).status_code
        for step in ("enter_amount", "approval", "restart", "cancel")
        for method in ("get", "post")
    }
    statuses.pop(("restart", "get"))  # POST-only: 405 before anything is looked up

    assert set(statuses.values()) == {404}
    assert (
        client.get(reverse("admin:billing_chargeissue_changelist")).context["cl"].result_count == 0
    )
    assert snapshot(foreign) == before
    # Not found is all it is: nothing about the user is written into the other space's
    # history (issue 17 §3; tests/billing/test_audit_refusals.py).
    assert refused_approvals(foreign) == []


def test_buttons_follow_the_state_and_the_role(client, clerk, approver, issue):
    def buttons(user):
        client.force_login(user)
        html = client.get(change_url(issue)).content.decode()
        return {s for s in ("enter_amount", "approval", "restart", "cancel") if f"step-{s}" in html}

    awaiting_amount = (buttons(clerk), buttons(approver))
    enter(issue, clerk)
    awaiting_approval = (buttons(clerk), buttons(approver))

    assert awaiting_amount == ({"enter_amount", "cancel"}, {"cancel"})
    assert awaiting_approval == ({"cancel"}, {"approval", "cancel"})


def test_issues_cannot_be_added_or_edited_in_the_admin(client, clerk, issue):
    client.force_login(clerk)

    add = client.get(reverse("admin:billing_chargeissue_add"))
    change = client.post(change_url(issue), {"customer_name": "Someone Else"})

    assert add.status_code == 403
    assert change.status_code == 403
    assert ChargeIssue.objects.get(pk=issue.pk).customer_name == "Kim Kunde"


def test_history_inline_lists_every_event_with_its_user(client, clerk, approver, issue):
    enter(issue, clerk, amount="12.50")
    services.charge_issue_return(issue=issue, acting_user=approver, comment="Too much")
    enter(issue, clerk)
    client.force_login(clerk)

    change = client.get(change_url(issue))
    history = client.get(reverse("admin:billing_chargeissue_history", args=[issue.pk]))

    (inline,) = change.context["inline_admin_formsets"]
    rows = [(form.original.action, form.original.actor) for form in inline]
    expected = [
        ("started", None),
        ("amount_entered", clerk),
        ("returned", approver),
        ("amount_entered", clerk),
    ]
    assert rows == expected
    assert rows == [(e.action, e.actor) for e in ChargeIssueEvent.objects.filter(issue=issue)]
    html = change.content.decode()
    assert "Too much" in html and "approver1" in html and "clerk1" in html
    assert [(e.action, e.actor) for e in history.context["charge_events"]] == expected
    assert "approver1" in history.content.decode()


def _issues(space, count, clerk, approver):
    for _ in range(count):
        card = PaymentCardFactory(customer=CustomerFactory(space=space))
        issue = services.charge_issue_start(customer=card.customer, source="staff")
        enter(issue, clerk)
        # Approved without running on_commit: approved_by is set, nothing is charged.
        services.charge_issue_approve(issue=issue, acting_user=approver)


def test_changelist_costs_the_same_queries_for_5_and_30_issues(client, space, clerk, approver):
    client.force_login(clerk)
    url = reverse("admin:billing_chargeissue_changelist")
    _issues(space, 5, clerk, approver)
    client.get(url)  # warm the caches (content types, session) out of the count

    with CaptureQueriesContext(connection) as five:
        few = client.get(url)
    _issues(space, 25, clerk, approver)
    with CaptureQueriesContext(connection) as thirty:
        many = client.get(url)

    assert few.context["cl"].result_count == 5 and many.context["cl"].result_count == 30
    assert len(thirty) == len(five), [q["sql"] for q in thirty.captured_queries]
    assert "approver1" in many.content.decode() and "49.90 EUR" in many.content.decode()


def test_changelist_searches_by_customer_number_and_last4(client, space, clerk):
    customer = CustomerFactory(space=space, name="Nora Number", external_number="0283759")
    card = PaymentCardFactory(customer=customer, last4="1881")
    services.charge_issue_start(customer=customer, card=card, source="staff")
    services.charge_issue_start(
        customer=PaymentCardFactory(customer__space=space).customer, source="staff"
    )
    client.force_login(clerk)
    url = reverse("admin:billing_chargeissue_changelist")

    by_number = client.get(url, {"q": "0283759"}).context["cl"].result_list
    by_last4 = client.get(url, {"q": "1881"}).context["cl"].result_list

    assert [i.customer_name for i in by_number] == ["Nora Number"]
    assert [i.customer_name for i in by_last4] == ["Nora Number"]


def test_attempts_are_listed_for_the_own_space_only(
    client, space, clerk, approver, issue, register_card, django_capture_on_commit_callbacks
):
    other = SpaceFactory(name="Other", slug="other")
    foreign = ChargeIssue.objects.get(customer=register_card(other).customer)
    outsider = StaffUserFactory(username="outsider", role=CLERK, spaces=[other])
    insider = StaffUserFactory(username="insider", role=APPROVER, spaces=[other])
    for target, entering, approving in ((issue, clerk, approver), (foreign, outsider, insider)):
        enter(target, entering)
        with django_capture_on_commit_callbacks(execute=True):
            services.charge_issue_approve(issue=target, acting_user=approving)
    client.force_login(clerk)

    listing = client.get(reverse("admin:payments_chargeattempt_changelist"))
    add = client.get(reverse("admin:payments_chargeattempt_add"))

    assert [a.charge_issue for a in listing.context["cl"].result_list] == [issue]
    assert "49.90 EUR" in listing.content.decode()
    assert add.status_code == 403


def test_a_charge_date_more_than_a_year_ahead_is_refused_on_its_field(client, clerk, issue):
    client.force_login(clerk)
    before = snapshot(issue)
    far = timezone.now() + timedelta(days=400)

    response = client.post(
        step_url("enter_amount", issue),
        {**ENTRY, "charge_date": far.strftime("%Y-%m-%dT%H:%M")},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["charge_date"] == [
        "The charge date is more than a year ahead. Enter a date within the next year."
    ]
    assert snapshot(issue) == before


# --- Object ids that cannot be one ------------------------------------------------------------

MALFORMED_ID_URLS = [
    ("get", "/admin/billing/chargeissue/abc/history/"),
    ("get", "/admin/billing/chargeissue/abc/change/"),
    ("get", "/admin/billing/chargeissue/abc/delete/"),
    ("get", "/admin/billing/chargeissue/abc/"),
    ("get", "/admin/billing/chargeissue/abc/enter-amount/"),
    ("get", "/admin/billing/chargeissue/abc/enter_amount/"),
    ("get", "/admin/billing/chargeissue/abc/approval/"),
    ("post", "/admin/billing/chargeissue/abc/approval/"),
    ("get", "/admin/billing/chargeissue/abc/cancel/"),
    ("post", "/admin/billing/chargeissue/abc/restart/"),
    ("get", "/admin/billing/chargeissue/%ff/history/"),
    ("get", "/admin/billing/chargeissue/1.5/change/"),
    ("get", "/admin/billing/chargeissue/1/nonsense/"),
    ("get", "/admin/billing/chargeattempt/abc/change/"),
    ("get", "/admin/billing/apikey/abc/change/"),
    ("get", "/admin/cards/customer/abc/change/"),
    ("post", "/admin/cards/customer/abc/change/"),
    ("get", "/admin/cards/customer/abc/history/"),
    ("get", "/admin/cards/customer/abc/delete/"),
    ("get", "/admin/cards/paymentcard/abc/change/"),
    ("get", "/admin/spaces/space/abc/change/"),
    ("get", "/admin/spaces/spacemembership/abc/history/"),
]


@pytest.fixture(params=["superuser", "clerk"])
def admin_user(request, django_user_model, space):
    if request.param == "superuser":
        return django_user_model.objects.create_superuser("root", "root@example.test", "x")
    return StaffUserFactory(username="clerk9", role=CLERK, spaces=[space])


@pytest.mark.parametrize(("method", "url"), MALFORMED_ID_URLS)
def test_an_object_id_that_cannot_be_one_is_a_404_on_every_admin_url(
    client, admin_user, issue, method, url
):
    client.force_login(admin_user)
    client.raise_request_exception = False

    response = getattr(client, method)(url)

    assert response.status_code == 404, (url, response.status_code, response.get("Location"))
    # The admin's own "not found" page, with a way back into the admin.
    assert response.templates[0].name == "admin/error_page.html"
    assert 'id="error-back"' in response.content.decode()
