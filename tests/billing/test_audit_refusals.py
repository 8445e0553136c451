"""Issue 7 §6: every refused approval and every API key created or revoked leaves an audit row,
not only a log line. Issue 17 §3: a refusal is audited only in the actor's own space; staff of
another space do not find the object, and nothing is written into its history."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from billing import refunds, services
from billing.exceptions import NotAllowed, NotFound, SelfApprovalRefused
from billing.models import ApiKey, ApiKeyEvent, ChargeIssue, ChargeIssueEvent, Refund, RefundEvent
from spaces.roles import ADMIN, APPROVER, CLERK
from tests.factories import PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def space():
    return SpaceFactory(name="Shop", slug="shop")


@pytest.fixture
def entered(space):
    """An issue whose amount a clerk entered: it awaits approval."""
    clerk = StaffUserFactory(username="clerk", role=CLERK, spaces=[space])
    card = PaymentCardFactory(customer__space=space)
    issue = services.charge_issue_start(customer=card.customer, source=ChargeIssue.Source.STAFF)
    return services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount="49.90",
        currency="EUR",
        notification_subject="s",
        notification_body="b",
    )


def refusals(issue):
    return [
        (event.actor.username, event.detail, event.from_state, event.to_state)
        for event in issue.events.filter(action="approval_refused").select_related("actor")
    ]


@pytest.mark.parametrize(
    "who, reason, error",
    [
        ("clerk", "self_approval", SelfApprovalRefused),
        ("another-clerk", "wrong_role", NotAllowed),
    ],
)
def test_every_refused_approval_is_audited_on_the_issue(space, entered, who, reason, error):
    users = {
        "clerk": entered.entered_by,
        "another-clerk": StaffUserFactory(username="another-clerk", role=CLERK, spaces=[space]),
    }
    if who == "clerk":  # a clerk who is also an approver: only four-eyes stops them
        users[who].groups.add(Group.objects.get(name=APPROVER))
        users[who] = type(users[who]).objects.get(pk=users[who].pk)  # no cached permissions

    with pytest.raises(error):
        services.charge_issue_approve(issue=entered, acting_user=users[who])

    entered.refresh_from_db()
    assert entered.state == ChargeIssue.State.AWAITING_APPROVAL and entered.approved_by is None
    state = ChargeIssue.State.AWAITING_APPROVAL
    assert refusals(entered) == [(who, {"reason": reason}, "", state)]


def test_api_keys_created_and_revoked_are_audited_and_shown_in_the_admin(client, space):
    admin = StaffUserFactory(username="space-admin", role=ADMIN, spaces=[space])
    client.force_login(admin)

    client.post(reverse("admin:billing_apikey_add"), {"space": space.pk, "name": "ERP"})
    api_key = ApiKey.objects.get()
    client.post(
        reverse("admin:billing_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [api_key.pk]},
    )
    page = client.get(reverse("admin:billing_apikey_change", args=[api_key.pk]))

    events = list(ApiKeyEvent.objects.values_list("api_key", "action", "actor"))
    assert events == [(api_key.pk, "created", admin.pk), (api_key.pk, "revoked", admin.pk)]
    history = page.context["inline_admin_formsets"][0]
    assert [form.original.action for form in history] == ["created", "revoked"]
    assert not history.has_add_permission and not history.has_change_permission


# --- Issue 17 §3: a refusal is audited only in the actor's own space ---------------------------


@pytest.fixture
def foreign_charge():
    """Space B's charge, waiting for approval, and a refund of it waiting for approval."""
    space_b = SpaceFactory(name="Beta", slug="beta")
    clerk_b = StaffUserFactory(username="clerk-b", role=CLERK, spaces=[space_b])
    card = PaymentCardFactory(customer__space=space_b)
    issue = services.charge_issue_start(customer=card.customer, source=ChargeIssue.Source.STAFF)
    issue = services.charge_amount_enter(
        issue=issue,
        acting_user=clerk_b,
        amount="49.90",
        currency="EUR",
        notification_subject="s",
        notification_body="b",
    )
    # A refund needs a succeeded charge: another issue of space B, written as it ends.
    paid = services.charge_issue_start(customer=card.customer, source=ChargeIssue.Source.STAFF)
    ChargeIssue.objects.filter(pk=paid.pk).update(
        state=ChargeIssue.State.SUCCEEDED, amount_minor=4990, currency="EUR"
    )
    refund = Refund.objects.create(
        space=space_b,
        issue=paid,
        amount_minor=1000,
        currency="EUR",
        reason="Damaged item",
        state=Refund.State.AWAITING_APPROVAL,
        provider_payment_intent_id="pi_beta",
        requested_by=clerk_b,
    )
    return issue, refund


def _space_b_history(issue, refund):
    return (
        list(ChargeIssueEvent.objects.filter(issue__space=issue.space).values_list("action")),
        list(RefundEvent.objects.filter(refund__space=refund.space).values_list("action")),
    )


def test_staff_of_another_space_get_a_404_and_nothing_is_written_into_its_history(
    client, space, foreign_charge
):
    issue, refund = foreign_charge
    approver_a = StaffUserFactory(username="approver-a", role=APPROVER, spaces=[space])
    client.force_login(approver_a)
    history_before = _space_b_history(issue, refund)
    approval = reverse("admin:billing_chargeissue_approval", args=[issue.pk])
    refund_approval = reverse(
        "admin:billing_chargeissue_refund_approval", args=[refund.issue_id, refund.pk]
    )

    statuses = [
        client.post(approval, {"decision": "approve", "comment": ""}).status_code,
        client.post(refund_approval, {"decision": "approve", "comment": ""}).status_code,
        client.post(refund_approval, {"decision": "reject", "comment": "no"}).status_code,
    ]

    assert statuses == [404, 404, 404]
    assert _space_b_history(issue, refund) == history_before
    assert not ChargeIssueEvent.objects.filter(actor=approver_a).exists()
    assert not RefundEvent.objects.filter(actor=approver_a).exists()
    issue.refresh_from_db()
    refund.refresh_from_db()
    assert issue.state == ChargeIssue.State.AWAITING_APPROVAL
    assert refund.state == Refund.State.AWAITING_APPROVAL


def test_the_services_do_not_find_another_spaces_charge_or_refund_and_write_nothing(
    space, foreign_charge
):
    issue, refund = foreign_charge
    approver_a = StaffUserFactory(username="approver-a", role=APPROVER, spaces=[space])
    history_before = _space_b_history(issue, refund)

    with pytest.raises(NotFound):
        services.charge_issue_approve(issue=issue, acting_user=approver_a)
    with pytest.raises(NotFound):
        refunds.refund_approve(refund=refund, acting_user=approver_a)
    with pytest.raises(NotFound):
        refunds.refund_reject(refund=refund, acting_user=approver_a, comment="no")

    assert _space_b_history(issue, refund) == history_before
    assert not ChargeIssueEvent.objects.filter(actor=approver_a).exists()
    assert not RefundEvent.objects.filter(actor=approver_a).exists()


def test_a_refusal_in_the_users_own_space_is_still_audited_there(client, foreign_charge):
    issue, refund = foreign_charge
    another_clerk = StaffUserFactory(username="clerk-b2", role=CLERK, spaces=[issue.space])
    client.force_login(another_clerk)
    approval = reverse("admin:billing_chargeissue_approval", args=[issue.pk])
    refund_approval = reverse(
        "admin:billing_chargeissue_refund_approval", args=[refund.issue_id, refund.pk]
    )

    statuses = [
        client.post(approval, {"decision": "approve", "comment": ""}).status_code,
        client.post(refund_approval, {"decision": "approve", "comment": ""}).status_code,
    ]

    assert statuses == [403, 403]
    assert refusals(issue) == [
        ("clerk-b2", {"reason": "wrong_role"}, "", ChargeIssue.State.AWAITING_APPROVAL)
    ]
    assert list(
        refund.events.filter(action="approval_refused").values_list("actor__username", "detail")
    ) == [("clerk-b2", {"reason": "wrong_role"})]
