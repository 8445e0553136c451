from celery import shared_task

from . import notifications, services


@shared_task(name="chargeflows.flow_levels_due_dispatch")
def flow_levels_due_dispatch() -> int:
    return services.flow_levels_due_dispatch()


@shared_task(name="chargeflows.flow_level_run")
def flow_level_run(level_id: int, lease: str | None = None) -> bool:
    # The message is taken (the beat may send another once the lease ends), then the run.
    services.flow_level_run_taken(level_id=level_id, lease=lease)
    return services.flow_level_run(level_id=level_id, lease=lease) is not None


@shared_task(name="chargeflows.charge_flow_case_open")
def charge_flow_case_open(issue_id: int) -> bool:
    return services.charge_flow_case_open(issue_id=issue_id) is not None


@shared_task(name="chargeflows.charge_flows_purge")
def charge_flows_purge() -> int:
    return services.charge_flows_purge()


@shared_task(name="chargeflows.flow_level_notice_email")
def flow_level_notice_email(level_id: int) -> None:
    notifications.level_notice_send(level_id=level_id)


@shared_task(name="chargeflows.payment_link_email")
def payment_link_email(link_id: int) -> None:
    notifications.payment_link_send(link_id=link_id)


@shared_task(name="chargeflows.payment_link_method_keep")
def payment_link_method_keep(link_id: int) -> None:
    services.payment_link_method_keep(link_id=link_id)
