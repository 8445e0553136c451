from django.utils.translation import gettext_lazy as _

from core.errors import DomainError


class CardsError(DomainError):
    """A card or registration rule was broken (see core.errors.DomainError); the message is safe
    to show to the customer or staff."""

    code = "cards_error"
    message = _("Something went wrong with the card.")


class RegistrationRefused(CardsError):
    code = "registration_refused"
    message = _("Your card could not be saved. Please check the details or use another card.")


class ProviderUnavailable(CardsError):
    code = "provider_unavailable"
    message = _("We could not reach our payment provider. Nothing was saved; please try again.")


class InvitationInvalid(CardsError):
    code = "invitation_invalid"
    message = _("This link is not valid. Please use the link from your email exactly as sent.")


class InvitationExpired(CardsError):
    code = "invitation_expired"
    message = _("This link has expired. Please ask us to send you a new one.")


class InvitationUsed(CardsError):
    code = "invitation_used"
    message = _("This link has already been used to register a card. Each link works once.")


class SpaceMismatch(CardsError):
    """Rows of different spaces would be joined (a customer moved, another space's card)."""

    code = "space_mismatch"
    message = _(
        "A customer stays in the space it was created in; its cards and charges belong there."
    )
