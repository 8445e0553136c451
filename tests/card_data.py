"""Scans for card data where it must never be: every text column of every table."""

from django.db import connection

from cards.luhn import contains_card_number

TEXT_TYPES = ("char", "text", "json", "uuid")


def card_numbers_in_database() -> list[tuple[str, str]]:
    """(table, column) pairs holding a Luhn-valid 13-19 digit run anywhere in the database."""
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
            cursor.execute(
                f'SELECT "{column}"::text FROM "{table}" WHERE "{column}"::text ~ %s',
                [r"[0-9][0-9 -]{11,}[0-9]"],
            )
            if any(contains_card_number(value) for (value,) in cursor.fetchall()):
                found.append((table, column))
    return found
