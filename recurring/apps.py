from django.apps import AppConfig

# What each role may do with recurring lines (spaces.roles syncs the groups after migrate).
_LINES_READ = {"recurring.view_recurringline", "recurring.view_recurringevent"}
_LINES_WRITE = {"recurring.add_recurringline", "recurring.change_recurringline"}
RECURRING_ROLE_PERMISSIONS = {
    "clerk": {*_LINES_READ, *_LINES_WRITE},
    "approver": _LINES_READ,
    "admin": {
        *_LINES_READ,
        *_LINES_WRITE,
        "recurring.view_recurringsettings",
        "recurring.add_recurringsettings",
        "recurring.change_recurringsettings",
    },
}


class RecurringConfig(AppConfig):
    name = "recurring"
    verbose_name = "Recurring (auto-ship) lines"

    def ready(self):
        from spaces.roles import ROLE_PERMISSIONS

        from . import receivers  # noqa: F401 - lines follow cards (cards.signals)

        for role, codes in RECURRING_ROLE_PERMISSIONS.items():
            ROLE_PERMISSIONS[role] |= codes
