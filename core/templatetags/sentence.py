"""Template filters for text in sentences (customer emails)."""

from django import template
from django.template.defaultfilters import date as date_filter

register = template.Library()


def date_in_sentence_text(formatted: str) -> str:
    """A formatted date or time without its own closing full stop, for a sentence that ends
    right after it: English formats end in "p.m." or "a.m.", and "… 2 p.m.." reads as a typo."""
    return formatted[:-1] if formatted.endswith(".") else formatted


@register.filter
def date_in_sentence(value, arg=None):
    """`{{ when|date_in_sentence:"DATETIME_FORMAT" }}.`: like `date`, with no doubled full stop."""
    return date_in_sentence_text(date_filter(value, arg))
