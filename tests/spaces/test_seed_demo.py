import json

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.test import RequestFactory

from billing.models import ChargeIssue
from cards.models import Customer
from spaces.models import Space
from spaces.selectors import space_list_for_user

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_users_who_can_log_in_and_is_repeatable(
    settings, tmp_path, capsys, django_capture_on_commit_callbacks
):
    settings.VAR_DIR = tmp_path

    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo")
    first = json.loads((tmp_path / "demo-credentials.json").read_text())
    call_command("seed_demo")
    second = json.loads((tmp_path / "demo-credentials.json").read_text())

    assert first == second and set(first) == {"clerk", "approver", "admin"}
    assert Space.objects.filter(slug__in=["demo", "tokyo"]).count() == 2
    printed = capsys.readouterr().out
    for username, password in first.items():
        assert password in printed
        # django-axes checks every authentication against the client: it needs the request.
        user = authenticate(
            RequestFactory().post("/admin/login/"), username=username, password=password
        )
        assert user is not None and user.is_staff and not user.is_superuser
        assert list(user.groups.values_list("name", flat=True)) == [username]
        assert [s.slug for s in space_list_for_user(user=user)] == ["demo"]

    # One demo customer with a card on file, whose registration started a charging issue.
    customer = Customer.objects.get(space__slug="demo")
    assert customer.external_number == "0283759"
    assert customer.cards.get().lookup_key.startswith("0283759-Visa-4242-")
    assert ChargeIssue.objects.get().state == ChargeIssue.State.AWAITING_AMOUNT
