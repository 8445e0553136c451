// The SEPA Direct Debit step of the invitation page: the IBAN goes from this field straight to
// the provider (Stripe.js confirmSepaDebitSetup, which also records the mandate); our server
// receives only the confirmed SetupIntent's id and keeps bank code, country and last 4.
// The field has no name and sits outside every form, so no submit can carry it to us.
(function () {
  "use strict";
  const box = document.querySelector("[data-sepa-setup]");
  if (!box) return;
  const input = box.querySelector("#iban");
  const button = box.querySelector("#save-iban");
  const result = box.querySelector("#sepa-result");
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]");
  const GENERIC = gettext("Your bank account could not be saved. Please check the IBAN and try again.");
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
      const saved = await post(
        box.dataset.saveUrl, "setup_intent_id=" + encodeURIComponent(confirmed.setupIntent.id)
      );
      if (!saved.ok) throw saved.data.error || GENERIC;
      input.value = "";
      result.textContent = interpolate(gettext("Bank account %(country)s ending in %(last4)s saved."), saved.data, true);
    } catch (message) {
      result.textContent = typeof message === "string" ? message : GENERIC;
    } finally {
      busy = false;
      button.disabled = false;
    }
  });
})();
