"""The hosted payment page behind a level's payment link. Amount and merchant come from the
database; the token only names the link."""

from django.shortcuts import render

from cards.security import hosted_page

from . import services
from .exceptions import LinkRefused

STATUS = {"link_invalid": 404, "link_used": 410, "link_retired": 410, "link_expired": 410}


@hosted_page
def pay(request, token: str):
    try:
        link = services.payment_link_check(token=token)
    except LinkRefused as error:
        return render(
            request,
            "chargeflows/link_problem.html",
            {"message": error.message, "code": error.code},
            status=STATUS.get(error.code, 410),
        )
    case = link.level.case
    return render(
        request,
        "chargeflows/pay.html",
        {"space": case.space, "issue": case.issue, "link": link},
    )
