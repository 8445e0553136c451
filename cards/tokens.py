from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.utils.crypto import constant_time_compare
from django.utils.http import base36_to_int


class CardInvitationTokenGenerator(PasswordResetTokenGenerator):
    """Signs a card-registration invitation.

    The hash covers the state that must kill the link: the invitation, its customer and its
    expires_at (so an extended or shortened invitation needs a new link). Single use is
    enforced by `used_at`, which is checked, not hashed, so that a used link can be told apart
    from a forged one and the customer gets the right message.
    """

    key_salt = "cards.tokens.CardInvitationTokenGenerator"

    def _make_hash_value(self, invitation, timestamp):
        return (
            f"{invitation.pk}:{invitation.public_id}:{invitation.customer_id}:"
            f"{invitation.expires_at.isoformat()}:{timestamp}"
        )

    def check_token(self, invitation, token):
        # The parent also applies the global PASSWORD_RESET_TIMEOUT. Each invitation carries
        # its own expires_at (signed above), checked by the service so that "expired" can be
        # told apart from "tampered".
        if not (invitation and token):
            return False
        try:
            ts_b36, _ = token.split("-")
            timestamp = base36_to_int(ts_b36)
        except ValueError:
            return False
        return any(
            constant_time_compare(
                self._make_token_with_timestamp(invitation, timestamp, secret), token
            )
            for secret in [self.secret, *self.secret_fallbacks]
        )


invitation_token_generator = CardInvitationTokenGenerator()
