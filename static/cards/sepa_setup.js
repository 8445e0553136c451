// The SEPA Direct Debit step of a hosted page: the IBAN goes from this field straight to the
// provider (Stripe.js confirmSepaDebitSetup, which also records the mandate); our server
// receives only the confirmed SetupIntent's id and keeps bank code, country and last 4.
// The field has no name and sits outside every form, so no submit can carry it to us.
//
// The page marks its box with data-sepa-setup and gives data-publishable-key, data-intent-url
// (our endpoint that makes the SetupIntent), data-customer-name/-email, a button marked
// data-sepa-submit, and one of:
// - data-save-url (the invitation page): the SetupIntent's id is posted there and the saved
//   account shown;
// - data-submit-form (the payment page): the id of a form whose `setup_intent` field gets the
//   SetupIntent's id before it is submitted (our server then debits the account, once).
(function () {
  "use strict";
  const box = document.querySelector("[data-sepa-setup]");
  if (!box) return;
  const input = box.querySelector("#iban");
  const button = box.querySelector("[data-sepa-submit]");
  const result = box.querySelector("#sepa-result");
  const form = box.dataset.submitForm ? document.getElementById(box.dataset.submitForm) : null;
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]");
  const GENERIC = form
    ? gettext("Your bank account could not be used. Please check the IBAN and try again.")
    : gettext("Your bank account could not be saved. Please check the IBAN and try again.");
  let stripe;
  try {
    stripe = Stripe(box.dataset.publishableKey);
  } catch (err) {
    button.disabled = true;
    result.textContent = GENERIC;
    return;
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "X-CSRFToken": csrf ? csrf.value : "",
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
      },
      body: body || "",
    });
    const data = await response.json().catch(function () { return {}; });
    return { ok: response.ok, data: data };
  }

  let busy = false;
  button.addEventListener("click", async function () {
    const iban = input.value.replace(/\s/g, "").toUpperCase();
    if (busy) return;
    if (!/^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}$/.test(iban)) {
      result.textContent = gettext("Enter your IBAN, e.g. DE89 3704 0044 0532 0130 00.");
      return;
    }
    busy = true;
    button.disabled = true;
    result.textContent = "";
    try {
      const intent = await post(box.dataset.intentUrl);
      if (!intent.ok || !intent.data.client_secret) throw intent.data.error || GENERIC;
      const confirmed = await stripe.confirmSepaDebitSetup(intent.data.client_secret, {
        payment_method: {
          sepa_debit: { iban: iban },
          billing_details: { name: box.dataset.customerName, email: box.dataset.customerEmail },
        },
      });
      if (!confirmed || confirmed.error || !confirmed.setupIntent) throw GENERIC;
      if (form) {
        // Stays busy: the page is replaced by our server's answer.
        form.elements.setup_intent.value = confirmed.setupIntent.id;
        HTMLFormElement.prototype.submit.call(form);
        return;
      }
      const saved = await post(
        box.dataset.saveUrl, "setup_intent_id=" + encodeURIComponent(confirmed.setupIntent.id)
      );
      if (!saved.ok) throw saved.data.error || GENERIC;
      input.value = "";
      result.textContent = interpolate(gettext("Bank account %(country)s ending in %(last4)s saved."), saved.data, true);
    } catch (message) {
      result.textContent = typeof message === "string" ? message : GENERIC;
    }
    busy = false;
    button.disabled = false;
  });
})();
