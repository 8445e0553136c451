"""Issue 7 §6: every refused approval and every API key created or revoked leaves an audit row,
not only a log line."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from billing import services
from billing.exceptions import NotAllowed, SelfApprovalRefused
from billing.models import ApiKey, ApiKeyEvent, ChargeIssue
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
        ("other-space-approver", "other_space", NotAllowed),
    ],
)
def test_every_refused_approval_is_audited_on_the_issue(space, entered, who, reason, error):
    users = {
        "clerk": entered.entered_by,
        "another-clerk": StaffUserFactory(username="another-clerk", role=CLERK, spaces=[space]),
        "other-space-approver": StaffUserFactory(
            username="other-space-approver", role=APPROVER, spaces=[SpaceFactory()]
        ),
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
