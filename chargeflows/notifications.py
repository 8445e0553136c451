"""What the customer is told during a collection. Called from tasks (one email each).

The wording comes from the level configuration's email_texts for the customer's language,
else from the built-in texts below (keyed by language, so a new language is one more entry)."""

from datetime import datetime

from django.core.mail import EmailMultiAlternatives
from django.template import Context, Template
from django.utils import formats, timezone, translation

from billing.notifications import reference as issue_reference
from core.money import format_money_local
from core.templatetags.sentence import date_in_sentence_text

from .models import ChargeFlowLevel, ChargeFlowLevelPaymentLink

BUILT_IN = {
    "level_notice": {
        "en": {
            "subject": "Your payment to {{ space }} did not go through",
            "body": "Hello {{ name }},\n\nwe could not charge {{ amount }} to your card "
            "(reference {{ reference }}). What happens next:\n"
            "{% for level in coming %}- from {{ level.starts_at }}: {{ level.what }}\n"
            "{% endfor %}\nNothing is charged twice. Questions? Reply to this email.\n",
        },
        "de": {
            "subject": "Ihre Zahlung an {{ space }} ist nicht durchgegangen",
            "body": "Guten Tag {{ name }},\n\nwir konnten {{ amount }} nicht von Ihrer Karte "
            "abbuchen (Referenz {{ reference }}). So geht es weiter:\n"
            "{% for level in coming %}- ab {{ level.starts_at }}: {{ level.what }}\n"
            "{% endfor %}\nNichts wird doppelt abgebucht. "
            "Fragen? Antworten Sie auf diese E-Mail.\n",
        },
        "ja": {
            "subject": "{{ space }}へのお支払いが完了しませんでした",
            "body": "{{ name }} 様\n\nカードへの{{ amount }}のご請求ができませんでした"
            "（参照番号 {{ reference }}）。今後の予定：\n"
            "{% for level in coming %}- {{ level.starts_at }}から：{{ level.what }}\n"
            "{% endfor %}\n二重に請求されることはありません。"
            "ご不明な点は、このメールにご返信ください。\n",
        },
    },
    "payment_link": {
        "en": {
            "subject": "Please complete your payment to {{ space }}",
            "body": "Hello {{ name }},\n\nplease pay {{ amount }} (reference {{ reference }}) "
            "here: {{ url }}\n\nThe link works once and until {{ expires }}.\n",
        },
        "de": {
            "subject": "Bitte schließen Sie Ihre Zahlung an {{ space }} ab",
            "body": "Guten Tag {{ name }},\n\nbitte zahlen Sie {{ amount }} (Referenz "
            "{{ reference }}) hier: {{ url }}\n\nDer Link gilt einmal und bis {{ expires }}.\n",
        },
        "ja": {
            "subject": "{{ space }}へのお支払いのお手続きをお願いします",
            "body": "{{ name }} 様\n\n{{ amount }}（参照番号 {{ reference }}）のお支払いを"
            "こちらからお願いいたします：{{ url }}\n\nこのリンクは一度だけ、"
            "{{ expires }}まで有効です。\n",
        },
    },
}

WHAT = {
    "link": {
        "en": "we email you a payment link",
        "de": "wir senden Ihnen einen Zahlungslink",
        "ja": "お支払い用リンクをメールでお送りします",
    },
    "charge": {
        "en": "we try your saved card again",
        "de": "wir versuchen Ihre Karte erneut",
        "ja": "ご登録のカードに再度ご請求します",
    },
}


def _texts(kind: str, configuration, language: str) -> dict:
    own = (configuration.email_texts or {}).get(language) or {}
    built_in = BUILT_IN[kind].get(language) or BUILT_IN[kind]["en"]
    return {"subject": own.get("subject") or built_in["subject"],
            "body": own.get("body") or built_in["body"]}  # fmt: skip


def _send(kind: str, *, level, context: dict) -> None:
    case = level.case
    issue = case.issue
    language = issue.customer.preferred_language or "en"
    with translation.override(language):
        texts = _texts(kind, level.configuration, language)
        # Dates in the customer's language's format (inside the override).
        # Without a closing full stop of their own ("2 p.m."): the texts' sentences add one.
        context = {
            key: date_in_sentence_text(formats.date_format(value, "SHORT_DATETIME_FORMAT"))
            if isinstance(value, datetime)
            else value
            for key, value in context.items()
        }
        context = {
            "space": case.space.name,
            "name": issue.customer_name,
            "amount": format_money_local(issue.amount_minor, issue.currency),
            "reference": issue_reference(issue),
            **context,
        }
        subject = Template(texts["subject"]).render(Context(context, autoescape=False))
        body = Template(texts["body"]).render(Context(context, autoescape=False))
    message = EmailMultiAlternatives(" ".join(subject.split()), body, to=[case.recipient_email])
    message.send()


def level_notice_send(*, level_id: int) -> None:
    """At the first failure: the charge failed, and what comes next (from the dry run)."""
    from .services import case_preview

    level = ChargeFlowLevel.objects.select_related(
        "case__issue__customer", "case__space", "configuration"
    ).get(pk=level_id)
    if level.case.state != level.case.State.RUNNING:
        return  # it ended already; its receipt or failure notice says so
    language = level.case.issue.customer.preferred_language or "en"
    with translation.override(language):
        coming = [
            {
                "starts_at": formats.date_format(
                    timezone.localtime(item["starts_at"]), "SHORT_DATE_FORMAT"
                ),
                "what": (WHAT["link"] if item["link"] else WHAT["charge"]).get(language)
                or WHAT["link" if item["link"] else "charge"]["en"],
            }
            for item in case_preview(case=level.case)
        ]
    _send("level_notice", level=level, context={"coming": coming})


def payment_link_send(*, link_id: int) -> None:
    from .services import payment_link_url

    link = ChargeFlowLevelPaymentLink.objects.select_related(
        "level__case__issue__customer", "level__case__space", "level__configuration"
    ).get(pk=link_id)
    if link.used_at or link.retired_at:
        return
    _send(
        "payment_link",
        level=link.level,
        context={
            "url": payment_link_url(link),
            "expires": timezone.localtime(link.expires_at),
        },
    )
