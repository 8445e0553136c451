from celery import shared_task

from . import notifications, refunds, services


@shared_task(name="billing.charge_issue_charge")
def charge_issue_charge(issue_id: int) -> bool:
    return services.charge_issue_charge(issue_id=issue_id) is not None


@shared_task(name="billing.charge_issues_due_dispatch")
def charge_issues_due_dispatch() -> int:
    return services.charge_issues_due_dispatch()


@shared_task(name="billing.charge_issue_notification_email")
def charge_issue_notification_email(issue_id: int) -> None:
    notifications.notification_send(issue_id=issue_id)


# The outcome's emails are separate tasks from each other and from the space's webhook
# (payments' outbox): a retry of one never sends another twice.
@shared_task(name="billing.charge_issue_customer_outcome_email")
def charge_issue_customer_outcome_email(issue_id: int) -> None:
    notifications.customer_outcome_send(issue_id=issue_id)


@shared_task(name="billing.charge_issue_staff_failure_email")
def charge_issue_staff_failure_email(issue_id: int) -> None:
    notifications.staff_failure_send(issue_id=issue_id)


@shared_task(name="billing.refund_execute")
def refund_execute(refund_id: int) -> bool:
    return refunds.refund_execute(refund_id=refund_id) is not None


@shared_task(name="billing.refunds_due_dispatch")
def refunds_due_dispatch() -> int:
    return refunds.refunds_due_dispatch()


@shared_task(name="billing.refund_customer_email")
def refund_customer_email(refund_id: int) -> None:
    notifications.refund_send(refund_id=refund_id)
