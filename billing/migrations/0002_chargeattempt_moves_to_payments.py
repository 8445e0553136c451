"""ChargeAttempt moves to the payments app: the table is renamed, its rows stay.

payments.0001 re-declares the model in payments' state without touching the database, so a
database that holds attempts (the local SQLite of `make run`) keeps every row.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AlterModelTable(name="chargeattempt", table="payments_chargeattempt")
            ],
            state_operations=[migrations.DeleteModel(name="ChargeAttempt")],
        )
    ]
