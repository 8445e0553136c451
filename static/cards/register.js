// Card registration: the card is entered only in the provider's element and confirmed with the
// provider directly; our server receives only the confirmed SetupIntent's id.
(function () {
  "use strict";
  const box = document.getElementById("registration");
  const form = document.getElementById("registration-form");
  if (!box || !form) return;
  const stripe = Stripe(box.dataset.publishableKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const errors = document.getElementById("card-errors");
  const button = document.getElementById("save-card");
  let busy = false;

  function fail(message) {
    errors.textContent = message || "Your card could not be saved. Please try again.";
    button.disabled = false;
    busy = false;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (busy || !form.reportValidity()) return;
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
      if (!response.ok || !body.client_secret) return fail(body.error);
      const name = form.elements.name ? form.elements.name.value : box.dataset.customerName;
      const email = form.elements.email ? form.elements.email.value : box.dataset.customerEmail;
      const result = await stripe.confirmCardSetup(body.client_secret, {
        payment_method: { card: card, billing_details: { name: name, email: email } },
      });
      if (result.error) return fail(result.error.message);
      form.elements.setup_intent.value = result.setupIntent.id;
      HTMLFormElement.prototype.submit.call(form);
    } catch (err) {
      fail(err && err.message);
    }
  });
})();
