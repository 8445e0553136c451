import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from spaces.models import Space, SpaceMembership

DEFAULT_PASSWORD = "correct-horse-battery-staple"


class SpaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Space
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Space {n}")
    slug = factory.Sequence(lambda n: f"space-{n}")
    default_currency = "EUR"


class StaffUserFactory(factory.django.DjangoModelFactory):
    """A staff user with a role (group name) and space memberships."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"staff{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if extracted:
            self.groups.add(Group.objects.get(name=extracted))
        self.save()

    @factory.post_generation
    def spaces(self, create, extracted, **kwargs):
        for space in extracted or ():
            SpaceMembership.objects.create(space=space, user=self)


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "cards.Customer"

    space = factory.SubFactory(SpaceFactory)
    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.Sequence(lambda n: f"customer{n}@example.test")
    external_number = ""


class PaymentCardFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "cards.PaymentCard"

    customer = factory.SubFactory(CustomerFactory)
    space = factory.LazyAttribute(lambda card: card.customer.space)
    provider_payment_method_id = factory.Sequence(lambda n: f"pm_fake{n}")
    brand = "Visa"
    last4 = "4242"
    exp_month = 6
    exp_year = 2034
    is_default = True
