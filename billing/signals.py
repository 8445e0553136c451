from django.dispatch import Signal

# Sent on commit when an issue has moved to "collecting" (its charge failed, or staff sent an
# approved issue to collection), with issue_id. chargeflows opens the case; billing never
# imports it. A lost signal (a crash between commit and send) is caught by chargeflows' sweep
# of collecting issues without a case.
collection_started = Signal()
