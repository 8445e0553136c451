"""The admin's login form (config/urls.py sets it on the admin site)."""

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.validators import MaxLengthValidator


class StaffLoginForm(AdminAuthenticationForm):
    """Django's admin login form with the username's length checked.

    Django's AuthenticationForm only sets the field's max_length (the user model's, 150) after
    the field is built, so no validator checks it, and authenticate() runs with any username. A
    failed login then makes django-axes write the username into its 255-character column: 256
    characters or more was a database error, a 500. Checked here, a username no user can have
    is a form error and never reaches authenticate() or axes.
    """

    def __init__(self, request=None, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        field = self.fields["username"]
        field.validators.append(MaxLengthValidator(field.max_length))
