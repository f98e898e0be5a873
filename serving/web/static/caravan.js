// Caravan pages work without JavaScript; this only moves keyboard focus after a
// refused form, so that what went wrong is announced and can be fixed: to the first
// field with an error, else to the form-wide message (role=alert, tabindex=-1,
// data-focus-error: a refusal that belongs to no field, a failed sign-in, a refused
// action's page).
document.addEventListener("DOMContentLoaded", function () {
  var bad = document.querySelector('[aria-invalid="true"]') ||
    document.querySelector("[data-focus-error]");
  if (bad && typeof bad.focus === "function") { bad.focus(); }
});
