// Caravan pages work without JavaScript; this only moves keyboard focus to the
// first field with an error after a refused form, so it is announced and fixable.
document.addEventListener("DOMContentLoaded", function () {
  var bad = document.querySelector('[aria-invalid="true"]');
  if (bad && typeof bad.focus === "function") { bad.focus(); }
});
