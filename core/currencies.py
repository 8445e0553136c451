"""The ISO 4217 currencies we charge in: the one list every app (spaces, billing) refers to."""

CURRENCIES = sorted(
    {"EUR", "USD", "GBP", "CHF", "JPY", "SEK", "NOK", "DKK", "PLN", "CZK", "CAD", "AUD",
     "NZD", "SGD", "HKD", "KRW", "BHD", "KWD", "JOD", "OMR"}
)  # fmt: skip

CURRENCY_CHOICES = [(code, code) for code in CURRENCIES]
