"""Every URL of the project, its parameters filled from real objects: for the tests that walk
them all (tests/test_card_number_everywhere.py, tests/test_no_500.py)."""

import re
import uuid

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from billing import api_services
from billing import services as billing_services
from billing.models import ChargeIssue
from cards import services as card_services
from recurring import services as recurring_services
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory


def routes(resolver=None, prefix=""):
    """The full route of every URL pattern, as written (route syntax or regex)."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from routes(pattern, route)
        else:
            yield route


# Named parameters, and the unnamed `([^/]+)` groups of simple_history's "one version of an
# object" page (`<object_id>/history/<history_id>/`).
_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)|(\(\[\^/\]\+\))")


def one_of_everything() -> dict:
    """One of everything a URL can name, in one space, and a superuser."""
    space = SpaceFactory(name="Shop", slug="shop")
    user = StaffUserFactory(username="root", is_superuser=True, spaces=[space])
    customer = CustomerFactory(space=space, name="Kim Kunde", external_number="C-1001")
    card = PaymentCardFactory(customer=customer)
    recurring_services.recurring_line_create(
        customer=customer, amount_minor=4990, charge_date=timezone.localdate(), card=card
    )
    recurring_services.recurring_settings_update(
        space=space,
        acting_user=None,
        auto_approve_up_to_minor=0,
        auto_approve_currency="EUR",
        card_reminder_days=None,
    )
    billing_services.charge_issue_start(customer=customer, source=ChargeIssue.Source.STAFF)
    invitation = card_services.card_invitation_send(customer=customer, acting_user=None)
    invite_ref, token = re.search(
        r"/invite/([^/]+)/([^/]+)/$", card_services.card_invitation_url(invitation)
    ).groups()
    api_key = api_services.api_key_create(space=space, name="ERP", acting_user=user)[1]
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="t", task="x", interval=every_minute)
    CrontabSchedule.objects.create()
    SolarSchedule.objects.create(event="sunrise", latitude=0, longitude=0)
    ClockedSchedule.objects.create(clocked_time="2030-01-01T00:00Z")
    return {
        "user": user,
        "api_key": api_key,
        "values": {
            "space_slug": space.slug,
            "invitation_ref": invite_ref,
            "token": token,
            "registration_ref": str(uuid.uuid4()),
            "id": str(user.pk),
            "refund_id": "1",  # none exists: the refund approval page answers 404
            "language": "ja",  # the hosted pages' script catalogue
            "space_id": str(space.pk),  # a space's dashboard
            "content_type_id": str(ContentType.objects.get_for_model(customer).pk),
            "app_label": "cards",
            "url": "nothing-here/",
        },
        "customer_pk": str(customer.pk),
    }


def _route_model(route: str):
    match = re.match(r"admin/(\w+)/(\w+)/", route)
    try:
        return apps.get_model(*match.groups()) if match else None
    except LookupError:
        return None


def _object_id(route: str, world) -> str:
    if route.startswith("admin/r/"):
        return world["customer_pk"]
    model = _route_model(route)
    first = model._default_manager.order_by("pk").first() if model else None
    return str(first.pk) if first else "1"


def _history_id(route: str, world) -> str:
    """A version of the object _object_id names, for simple_history's version page."""
    model = _route_model(route)
    pk = _object_id(route, world)
    record = model.history.filter(**{model._meta.pk.attname: pk}).first() if model else None
    return str(record.history_id) if record else "1"


def fill(route: str, world, *, first_value=None) -> str:
    """The route with its parameters filled; the first one with `first_value` if given."""
    used = []

    def value(match):
        name = match.group(1) or match.group(2)
        if name is None:  # unnamed: simple_history's object id, then its version
            name = "object_id" if "object_id" not in used else "history_id"
        if first_value is not None and not used:
            used.append(name)
            return first_value
        used.append(name)
        if name == "history_id":
            return _history_id(route, world)
        if name == "object_id":
            return _object_id(route, world)
        return world["values"][name]

    filled = _PARAMETER.sub(value, route)
    if first_value is not None and not used:
        filled = f"{filled.rstrip('/')}/{first_value}/"
    return "/" + filled
