from django.db.models.signals import post_save
from django.dispatch import receiver

from billing.signals import collection_started
from payments.attempts import register_owner
from spaces.models import Space

from . import services
from .charging import PAYMENT_LINK_CHARGE, TOKEN_CHARGE

# Both level steps share the purpose and the outcome handling; one registration serves both.
register_owner(TOKEN_CHARGE)
register_owner(PAYMENT_LINK_CHARGE)


@receiver(post_save, sender=Space, dispatch_uid="chargeflows.default_flow_on_space_created")
def default_flow_on_space_created(sender, instance, created, raw=False, **kwargs):
    # Inside the space's own transaction: a space never exists without its default flow.
    if created and not raw:
        services.charge_flow_default_create(space=instance)


@receiver(collection_started, dispatch_uid="chargeflows.open_case_on_collection_started")
def open_case_on_collection_started(sender, issue_id, **kwargs):
    # Sent on commit; a task so that a slow selection never holds up billing's worker, and
    # the beat's sweep opens the case if this message is lost.
    from core.tasks import dispatch

    from .tasks import charge_flow_case_open

    dispatch(charge_flow_case_open, issue_id)
