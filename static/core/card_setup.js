// The card step of every hosted page (card registration, the payment page behind a link): the
// card is entered only in the provider's element and confirmed with the provider directly; our
// server receives only the confirmed SetupIntent's id (and, for a payment, charges the amount
// it holds itself, once per link).
//
// The page marks its box with data-card-setup and gives: data-publishable-key, data-intent-url
// (our endpoint that makes the SetupIntent), optionally data-customer-name/-email (else the
// form's name and email fields), data-generic-message, and data-client-secret when our server
// sent the customer back to complete 3-D Secure for a payment.
//
// The customer only ever sees sentences: the element's own validation message, the provider's
// message for a card it refused, or one of ours. Never a raw script error.
(function () {
  "use strict";
  const box = document.querySelector("[data-card-setup]");
  const form = box && box.querySelector("form");
  if (!box || !form) return;
  const errors = document.getElementById("card-errors");
  const button = form.querySelector("[type=submit]");

  const MESSAGES = {
    empty: gettext("Enter your card number, its expiry date and security code."),
    incomplete: gettext("Your card details are incomplete. Check the card number, expiry date and security code."),
    unreadable: gettext("Your card details could not be checked. Check the card number, expiry date and security code, then try again."),
    unavailable: gettext("The card field could not be loaded. Please reload the page and try again."),
    generic: box.dataset.genericMessage || gettext("Your card could not be saved. Please try again."),
  };
  // Sentences for provider error codes, for answers whose own message is not meant for
  // customers (Stripe's card_error and validation_error messages are, and are shown as sent).
  const CODES = {
    card_declined: gettext("Your card was declined."),
    expired_card: gettext("Your card has expired. Please use another card."),
    incorrect_cvc: gettext("Your card's security code is incorrect."),
    invalid_cvc: gettext("Your card's security code is invalid."),
    incomplete_cvc: gettext("Your card's security code is incomplete."),
    incorrect_number: gettext("Your card number is incorrect."),
    invalid_number: gettext("Your card number is not a valid card number."),
    incomplete_number: gettext("Your card number is incomplete."),
    invalid_expiry_month: gettext("Your card's expiry month is invalid."),
    invalid_expiry_year: gettext("Your card's expiry year is invalid."),
    incomplete_expiry: gettext("Your card's expiry date is incomplete."),
    processing_error: gettext("An error occurred while processing your card. Please try again."),
    setup_intent_authentication_failure: gettext("Your card could not be verified by your bank. Please try again or use another card."),
  };

  function customerMessage(error) {
    // A thrown exception (a TypeError, a network failure) is never shown as it is.
    if (!error || error instanceof Error || typeof error !== "object") return MESSAGES.unreadable;
    const shownAsSent = error.type === "card_error" || error.type === "validation_error";
    if (shownAsSent && typeof error.message === "string" && error.message) return error.message;
    if (error.code && CODES[error.code]) return CODES[error.code];
    return MESSAGES.unreadable;
  }

  let stripe, card;
  try {
    stripe = Stripe(box.dataset.publishableKey);
    // The element speaks the page's language (its own validation messages, placeholders).
    card = stripe.elements({ locale: document.documentElement.lang || "auto" }).create("card");
    card.mount("#card-element");
  } catch (err) {
    errors.textContent = MESSAGES.unavailable;
    button.disabled = true;
    return;
  }

  // What the element last told us. Stripe.js sends {empty, complete, error} with every change
  // and nothing before the first one, so no change yet means an empty field. A stand-in whose
  // change event carries no state leaves completeness unknown: the provider then decides.
  let field = { known: true, empty: true, complete: false, error: null };
  card.on("change", function (event) {
    if (event && typeof event.complete === "boolean") {
      field = { known: true, empty: !!event.empty, complete: event.complete, error: event.error || null };
      errors.textContent = field.error ? customerMessage(field.error) : "";
    } else {
      field = { known: false, empty: false, complete: false, error: null };
      errors.textContent = "";
    }
  });

  function fieldProblem() {
    if (!field.known) return null;
    if (field.empty) return MESSAGES.empty;
    if (field.error) return customerMessage(field.error);
    if (!field.complete) return MESSAGES.incomplete;
    return null;
  }

  let busy = false;

  // Back from our server with a card that asks for 3-D Secure: complete it with the provider
  // (its authentication box), then let our server read the outcome. Nothing is charged twice:
  // the server holds one PaymentIntent for the link.
  if (box.dataset.clientSecret) {
    busy = true;
    button.disabled = true;
    stripe.confirmCardPayment(box.dataset.clientSecret).then(function (result) {
      if (result && result.error) {
        errors.textContent = customerMessage(result.error);
      }
      form.elements.authenticated.value = "1";
      HTMLFormElement.prototype.submit.call(form);
    }, function () {
      fail(MESSAGES.generic);
    });
  }

  function fail(message) {
    errors.textContent = message || MESSAGES.generic;
    button.disabled = false;
    busy = false;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (busy || !form.reportValidity()) return;
    // Checked before asking our server for a SetupIntent: nothing is made at the provider for
    // a card field that cannot be confirmed.
    const problem = fieldProblem();
    if (problem) return fail(problem);
    busy = true;
    button.disabled = true;
    errors.textContent = "";
    try {
      const response = await fetch(box.dataset.intentUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": form.elements.csrfmiddlewaretoken.value, "Accept": "application/json" },
      });
      const body = await response.json().catch(function () { return {}; });
      // Our server's `error` is written for customers.
      if (!response.ok || !body.client_secret) return fail(typeof body.error === "string" ? body.error : MESSAGES.generic);
      const name = form.elements.name ? form.elements.name.value : box.dataset.customerName;
      const email = form.elements.email ? form.elements.email.value : box.dataset.customerEmail;
      const result = await stripe.confirmCardSetup(body.client_secret, {
        payment_method: { card: card, billing_details: { name: name, email: email } },
      });
      if (!result || result.error || !result.setupIntent) return fail(customerMessage(result && result.error));
      form.elements.setup_intent.value = result.setupIntent.id;
      HTMLFormElement.prototype.submit.call(form);
    } catch (err) {
      fail(MESSAGES.generic);
    }
  });
})();
