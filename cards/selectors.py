from django.db.models import Count, QuerySet

from .models import CardRegistration, Customer, PaymentCard


def customer_list(*, spaces) -> QuerySet[Customer]:
    return (
        Customer.objects.filter(space__in=spaces)
        .select_related("space")
        .annotate(card_count=Count("cards"))
    )


def payment_card_list(*, customer: Customer) -> QuerySet[PaymentCard]:
    return PaymentCard.objects.filter(customer=customer)


def card_registration_get(*, public_id) -> CardRegistration | None:
    return (
        CardRegistration.objects.select_related("card", "customer", "space")
        .filter(public_id=public_id, card__isnull=False)
        .first()
    )
