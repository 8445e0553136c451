from celery import shared_task

from . import services


@shared_task(name="recurring.recurring_lines_generate_due")
def recurring_lines_generate_due() -> int:
    return services.recurring_lines_generate_due()


@shared_task(name="recurring.recurring_lines_fill_scan")
def recurring_lines_fill_scan() -> int:
    return services.recurring_lines_fill_scan()


@shared_task(name="recurring.recurring_card_reminders_send")
def recurring_card_reminders_send() -> int:
    return services.recurring_card_reminders_send()


@shared_task(name="recurring.recurring_card_reminder_email")
def recurring_card_reminder_email(line_id: int, invitation_id: int) -> None:
    services.recurring_card_reminder_email_send(line_id=line_id, invitation_id=invitation_id)
