"""Scans for card data where it must never be: every text column of every table."""

from django.db import connection

from core.logging import mask_log_text

TEXT_TYPES = ("char", "text", "json", "uuid")


def card_numbers_in_database() -> list[tuple[str, str]]:
    """(table, column) pairs holding a card number (core.cardguard), in any form the log
    filter reads (plain, percent-encoded, escaped), anywhere in the database."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = current_schema()
              AND (data_type LIKE '%%char%%' OR data_type IN ('text', 'json', 'jsonb'))
            """
        )
        columns = cursor.fetchall()
        assert columns, "no text columns found: the scan would prove nothing"
        for table, column in columns:
            # Every value long enough to hold 13 digits: a pattern here would have to know
            # every Unicode digit and separator the detector knows.
            cursor.execute(
                f'SELECT "{column}"::text FROM "{table}" WHERE char_length("{column}"::text) >= 13'
            )
            # mask_log_text also reads percent-encoded and \\u-escaped text (JSON kept as text).
            if any(mask_log_text(value) != value for (value,) in cursor.fetchall()):
                found.append((table, column))
    return found
