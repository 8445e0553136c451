"""The flow every space gets (plain data, so the data migration and the service share it).

Customers hear at the first failure what comes next, never only at the last level."""

from datetime import timedelta

DEFAULT_FLOW_NAME = "Default collection"
DEFAULT_FLOW_PRIORITY = 1000  # after any flow staff add with the usual priorities

DEFAULT_LEVELS = [
    {
        "name": "Retry the card and tell the customer",
        "priority": 1,
        "period": timedelta(days=3),
        "run_token_charge": True,
        "run_saved_method": True,
        "run_payment_link": False,
        "notify_customer": True,
    },
    {
        "name": "Retry the card after 3 days",
        "priority": 2,
        "period": timedelta(days=1),
        "run_token_charge": True,
        "run_saved_method": True,
        "run_payment_link": False,
        "notify_customer": False,
    },
    {
        "name": "Payment link (valid 14 days)",
        "priority": 3,
        "period": timedelta(days=14),
        "run_token_charge": False,
        "run_saved_method": False,
        "run_payment_link": True,
        "notify_customer": False,
    },
]
