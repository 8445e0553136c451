import json

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from spaces.models import Space
from spaces.selectors import space_list_for_user

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_users_who_can_log_in_and_is_repeatable(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path

    call_command("seed_demo")
    first = json.loads((tmp_path / "demo-credentials.json").read_text())
    call_command("seed_demo")
    second = json.loads((tmp_path / "demo-credentials.json").read_text())

    assert first == second and set(first) == {"clerk", "approver", "admin"}
    assert Space.objects.filter(slug__in=["demo", "tokyo"]).count() == 2
    printed = capsys.readouterr().out
    for username, password in first.items():
        assert password in printed
        user = authenticate(username=username, password=password)
        assert user is not None and user.is_staff and not user.is_superuser
        assert list(user.groups.values_list("name", flat=True)) == [username]
        assert [s.slug for s in space_list_for_user(user=user)] == ["demo"]
