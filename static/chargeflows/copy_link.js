// The case page's payment link: a button copies it to the clipboard. The URL stays visible
// and selectable in its field, so staff can copy it by hand where the clipboard is refused
// (no secure context, a browser that asks and is told no). The button exists only with this
// script (it starts hidden).
(function () {
  "use strict";
  const input = document.getElementById("payment-link-url");
  const button = document.getElementById("copy-payment-link");
  const status = document.getElementById("copy-payment-link-status");
  if (!input || !button || !status) return;

  input.addEventListener("focus", function () { input.select(); });
  button.hidden = false;

  function byHand() {
    input.focus();
    input.select();
    status.textContent = "Could not copy automatically: the link is selected, press Ctrl+C (Cmd+C on a Mac).";
  }

  button.addEventListener("click", function () {
    status.textContent = "";
    if (!navigator.clipboard || !navigator.clipboard.writeText) return byHand();
    navigator.clipboard.writeText(input.value).then(function () {
      status.textContent = "Copied to the clipboard.";
    }, byHand);
  });
})();
