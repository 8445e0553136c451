from datetime import date, datetime, timedelta

from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Prefetch,
    Q,
    QuerySet,
)

from billing.models import ChargeIssue
from billing.selectors import charge_issue_term
from cards.models import PaymentCard, SepaDebitMethod
from core.search import all_terms
from payments.models import ChargeAttempt

from .models import (
    CaseFacts,
    ChargeFlow,
    ChargeFlowCase,
    ChargeFlowCondition,
    ChargeFlowLevel,
    ChargeFlowLevelConfiguration,
    ChargeFlowLevelPaymentLink,
)
from .tokens import link_token_read

ORIGINS = {
    "api": ChargeFlowCondition.Origin.API,
    "recurring": ChargeFlowCondition.Origin.RECURRING,
}


def case_facts(issue) -> CaseFacts:
    """What a flow's conditions are tested on, read from the issue being collected."""
    return CaseFacts(
        amount_minor=issue.amount_minor or 0,
        currency=issue.currency,
        card_brand=issue.card.brand if issue.card_id else "",
        origin=ORIGINS.get(issue.source, ChargeFlowCondition.Origin.MANUAL),
        last_decline_code=issue.failure_code,
        customer_tags=issue.customer.tag_set,
    )


def charge_flow_select(*, space_id: int, facts: CaseFacts) -> ChargeFlow | None:
    """The first active flow of the space, by priority, whose conditions all hold."""
    flows = (
        ChargeFlow.objects.filter(space_id=space_id, state=ChargeFlow.State.ACTIVE)
        .order_by("priority", "pk")
        .prefetch_related(Prefetch("conditions", queryset=ChargeFlowCondition.objects.all()))
    )
    for flow in flows:
        if all(condition.holds(facts) for condition in flow.conditions.all()):
            return flow
    return None


def level_configuration_next(
    *, flow_id: int, after: ChargeFlowLevelConfiguration | None
) -> ChargeFlowLevelConfiguration | None:
    """The level after `after` in the flow's current order (read when a case advances, so a
    reordered flow applies to running cases too)."""
    levels = ChargeFlowLevelConfiguration.objects.filter(
        flow_id=flow_id, state=ChargeFlowLevelConfiguration.State.ACTIVE
    )
    if after is not None:
        levels = levels.filter(
            Q(priority__gt=after.priority) | Q(priority=after.priority, pk__gt=after.pk)
        )
    return levels.order_by("priority", "pk").first()


def card_usable(card: PaymentCard | None, today: date) -> bool:
    return (
        card is not None
        and card.status == PaymentCard.Status.ACTIVE
        and (card.exp_year, card.exp_month) >= (today.year, today.month)
    )


def card_last_decline_hard(*, case: ChargeFlowCase, card: PaymentCard | SepaDebitMethod) -> bool:
    """Whether the last charge of this card (or account) for this issue was declined hard."""
    last = (
        ChargeAttempt.objects.filter(
            Q(charge_issue_id=case.issue_id) | Q(flow_level__case=case),
            provider_payment_method_id=card.provider_payment_method_id,
        )
        .order_by("-created_at", "-pk")
        .first()
    )
    return bool(last and last.status == ChargeAttempt.Status.FAILED and last.hard_decline)


def second_method(*, case: ChargeFlowCase, today: date) -> PaymentCard | SepaDebitMethod | None:
    """Another saved method of the customer that needs no customer action: another card
    (active, unexpired, not the issue's card, not hard-declined for this issue), else a SEPA
    Direct Debit account (active, not hard-declined for this issue)."""
    issue = case.issue
    cards = (
        PaymentCard.objects.filter(customer_id=issue.customer_id, status=PaymentCard.Status.ACTIVE)
        .exclude(pk=issue.card_id)
        .order_by("-is_default", "-created_at", "-pk")
    )
    for card in cards:
        if card_usable(card, today) and not card_last_decline_hard(case=case, card=card):
            return card
    accounts = SepaDebitMethod.objects.filter(
        customer_id=issue.customer_id, status=SepaDebitMethod.Status.ACTIVE
    ).order_by("-created_at", "-pk")
    for account in accounts:
        if not card_last_decline_hard(case=case, card=account):
            return account
    return None


def case_timeline(*, case: ChargeFlowCase) -> QuerySet[ChargeFlowLevel]:
    return (
        ChargeFlowLevel.objects.filter(case=case)
        .select_related("configuration", "payment_link")
        .prefetch_related("attempts")
        .order_by("position")
    )


def level_payment_method(
    *, level: ChargeFlowLevel, step: str, today: date
) -> PaymentCard | SepaDebitMethod | None:
    """What a level's charging step would charge, or None when the step is skipped: the saved
    card is skipped when there is none, it expired, or its last decline was hard."""
    case = level.case
    if step == ChargeFlowLevel.Step.TOKEN:
        card = case.issue.card
        if card_usable(card, today) and not card_last_decline_hard(case=case, card=card):
            return card
        return None
    if step == ChargeFlowLevel.Step.METHOD:
        return second_method(case=case, today=today)
    return None


def payment_link_attempt(*, link: ChargeFlowLevelPaymentLink) -> ChargeAttempt | None:
    """The one charge of a link's payment page, if the customer has paid (or tried)."""
    return ChargeAttempt.objects.filter(payment_link=link).select_related("payment_link").first()


def payment_link_paid(*, token: str) -> ChargeFlowLevelPaymentLink | None:
    """The paid link a genuinely signed token names (its state hash no longer matches once the
    link is used, so only the signature is checked), for its receipt."""
    read = link_token_read(token)
    if read is None:
        return None
    return (
        ChargeFlowLevelPaymentLink.objects.select_related(
            "level__case__issue", "level__case__space"
        )
        .filter(pk=read[0], used_at__isnull=False)
        .first()
    )


# How many issues one word of a collection search may name before it is asked as a subquery.
CASE_SEARCH_ISSUE_LIMIT = 1000


def case_search(*, queryset: QuerySet[ChargeFlowCase], text: str) -> QuerySet[ChargeFlowCase]:
    """Collections matching every word of `text`: the recipient's email (any case), or the
    charging issue found as in billing's issue search (number, reference, customer...)."""

    def term_match(term: str) -> Q:
        issues = ChargeIssue.objects.filter(charge_issue_term(term)).values_list("pk", flat=True)
        # Looked up first: inside the OR a subquery makes PostgreSQL test it against every
        # case while it walks the list's order (176 ms at a million issues for one reference).
        # A word that matches very many issues (a common first name) keeps the subquery: then
        # matching cases are dense in that walk, and the first page comes quickly.
        found = list(issues[: CASE_SEARCH_ISSUE_LIMIT + 1])
        if len(found) <= CASE_SEARCH_ISSUE_LIMIT:
            return Q(recipient_email__iexact=term) | Q(issue_id__in=found)
        return Q(recipient_email__iexact=term) | Q(issue__in=issues)

    condition = all_terms(text, term_match)
    return queryset if condition is None else queryset.filter(condition)


# A collection that ended without the money stays on the work queue this long (someone calls
# the customer or asks for another card), then leaves it.
FAILED_CASE_ATTENTION_DAYS = 14


def cases_needing_attention_q(now) -> Q:
    """Running collections whose customer holds an open payment link (sent by the level that
    now waits, not used, retired or expired), and collections that ended without payment in
    the last FAILED_CASE_ATTENTION_DAYS (the admin's work queue).

    A level that only waits for its period to end before the next try needs nobody, so it is
    not on the queue. Both halves are looked up from small partial indexes (open links,
    failed cases by end) and joined by id: a test per case (an EXISTS in the OR) read every
    running collection, 210 ms at a million issues (bench/admin_scale.py).
    """
    waiting_on_link = (
        ChargeFlowLevelPaymentLink.objects.filter(
            used_at__isnull=True,
            retired_at__isnull=True,
            expires_at__gt=now,
            level__state=ChargeFlowLevel.State.PENDING,
            level__step=ChargeFlowLevel.Step.WAITING,
            level__case__state=ChargeFlowCase.State.RUNNING,
        )
        .order_by()
        .values("level__case_id")
    )
    failed_lately = (
        ChargeFlowCase.objects.filter(
            state=ChargeFlowCase.State.FAILED,
            finished_at__gte=now - timedelta(days=FAILED_CASE_ATTENTION_DAYS),
        )
        .order_by()
        .values("pk")
    )
    return Q(pk__in=waiting_on_link.union(failed_lately, all=True))


# The dashboard's figures of collection. Each is a fixed number of queries whatever the
# number of cases (tests/chargeflows/test_dashboard.py counts them at 10 and 10,000 rows).


def collection_counts_by_level(*, space_id: int) -> list[dict]:
    """Running collections of the space by the level they are at (the level still pending),
    in flow and level order. Rows: configuration_id, flow, level, position, count."""
    return list(
        ChargeFlowLevel.objects.filter(
            case__space_id=space_id,
            case__state=ChargeFlowCase.State.RUNNING,
            state=ChargeFlowLevel.State.PENDING,
        )
        .values("configuration_id")
        .annotate(
            flow=F("configuration__flow__name"),
            level=F("configuration__name"),
            position=Min("position"),
            count=Count("pk"),
        )
        .order_by("flow", "configuration_id")
    )


def recovery_rate_per_level(*, space_id: int, since: datetime) -> list[dict]:
    """Of the space's levels that ended since `since`, how many collected the amount, per
    level configuration. Rows: configuration_id, flow, level, recovered, finished."""
    Level = ChargeFlowLevel.State
    return list(
        ChargeFlowLevel.objects.filter(
            case__space_id=space_id,
            finished_at__gte=since,
            state__in=(Level.SUCCESSFUL, Level.FAILED),
        )
        .values("configuration_id")
        .annotate(
            flow=F("configuration__flow__name"),
            level=F("configuration__name"),
            position=Min("position"),
            recovered=Count("pk", filter=Q(state=Level.SUCCESSFUL)),
            finished=Count("pk"),
        )
        .order_by("flow", "position", "configuration_id")
    )


def recovery_rate_per_decline_code(*, space_id: int, since: datetime) -> list[dict]:
    """Of the space's collections that ended since `since` (succeeded or failed; cancelled
    ones are neither), how many were recovered, per decline code of the charge that sent the
    issue to collection ("" when it went there without a charge). Rows: code, recovered,
    finished."""
    CaseState = ChargeFlowCase.State
    return list(
        ChargeFlowCase.objects.filter(
            space_id=space_id,
            finished_at__gte=since,
            state__in=(CaseState.SUCCEEDED, CaseState.FAILED),
        )
        .values(code=F("issue__failure_code"))
        .annotate(
            recovered=Count("pk", filter=Q(state=CaseState.SUCCEEDED)),
            finished=Count("pk"),
        )
        .order_by("-finished", "code")
    )


def recovery_time_median(*, space_id: int, since: datetime) -> timedelta | None:
    """The median time from the start of a collection to its recovery, over the space's
    collections recovered since `since`; None when there is none.

    Two queries (the count, then the one or two middle values in order) on every database:
    PostgreSQL's percentile_cont would be one, but `make run` serves SQLite too."""
    recovered = ChargeFlowCase.objects.filter(
        space_id=space_id, finished_at__gte=since, state=ChargeFlowCase.State.SUCCEEDED
    )
    total = recovered.count()
    lower = max((total - 1) // 2, 0)
    middle = list(
        recovered.annotate(
            took=ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField())
        )
        .order_by("took", "pk")
        .values_list("took", flat=True)[lower : total // 2 + 1]
    )
    if not middle:
        return None
    return sum(middle, timedelta()) / len(middle)
