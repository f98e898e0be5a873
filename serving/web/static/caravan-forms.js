// Keeps what an officer types into the decision forms (outcome, waiver, correction)
// in this browser tab (sessionStorage: nothing is sent anywhere), so that a session
// that ends before the form is sent, or a refused form, does not lose it. The form's
// page fills it in again (after signing in) and says so; it is never sent by itself:
// a decision names the person who sends it, so he checks it and sends it again.
// Kept per signed-in user and per form (its action names the referral); removed once
// the page says the form was saved, on signing out, and after a day. The texts come
// from the catalogue (serving/web/i18n.py) through this script tag's data attributes.
// The pages work without JavaScript (then nothing is kept).
(function () {
  "use strict";
  var FORMS = ["outcome-form", "waiver-form", "correction-form"];
  var SAVED = {
    outcome: ["outcome-form", "waiver-form"],
    waived: ["outcome-form", "waiver-form"],
    corrected: ["correction-form"]
  };
  var PREFIX = "caravan.form|";
  var MAX_AGE_MS = 24 * 3600 * 1000;
  var me = document.currentScript;
  var texts = {
    restored: (me && me.getAttribute("data-restored")) || "",
    kept: (me && me.getAttribute("data-kept")) || ""
  };
  var store = null;
  try {
    store = window.sessionStorage;
    store.getItem(PREFIX);
  } catch (e) {
    store = null;
  }
  if (!store) { return; }

  function signedIn() {
    var who = document.getElementById("who");
    return who ? who.textContent.trim() : "";
  }

  function keyOf(user, form) {
    return PREFIX + user + "|" + form.id + "|" + form.getAttribute("action");
  }

  function parse(key) {
    var parts = key.split("|");  // caravan.form, user, form id, action
    if (parts.length < 4) { return null; }
    return { user: parts[1], form: parts[2], action: parts.slice(3).join("|") };
  }

  function read(key) {
    try {
      var draft = JSON.parse(store.getItem(key) || "null");
      return draft && typeof draft === "object" && draft.values ? draft : null;
    } catch (e) {
      return null;
    }
  }

  function drafts() {  // [{key, user, form, action, draft}] of every kept form, fresh ones
    var out = [];
    var keys = [];
    for (var i = 0; i < store.length; i++) { keys.push(store.key(i)); }
    keys.forEach(function (key) {
      if (!key || key.indexOf(PREFIX) !== 0) { return; }
      var what = parse(key);
      var draft = read(key);
      if (!what || !draft || !(Date.now() - draft.at < MAX_AGE_MS)) {
        store.removeItem(key);
        return;
      }
      what.key = key;
      what.draft = draft;
      out.push(what);
    });
    return out;
  }

  function typed(el) {
    return el.name && el.name !== "csrf_token" && el.type !== "hidden" &&
      el.type !== "submit" && el.type !== "button" && el.type !== "password";
  }

  function valuesOf(form) {
    var values = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!typed(el)) { return; }
      if (el.type === "radio" || el.type === "checkbox") {
        if (!(el.name in values)) { values[el.name] = ""; }
        if (el.checked) { values[el.name] = el.value; }
      } else {
        values[el.name] = el.value;
      }
    });
    return values;
  }

  function fill(form, values) {
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!typed(el) || !Object.prototype.hasOwnProperty.call(values, el.name)) { return; }
      if (el.type === "radio" || el.type === "checkbox") {
        el.checked = el.value === values[el.name];
      } else {
        el.value = values[el.name];
      }
    });
  }

  function differs(kept, shown) {
    return Object.keys(kept).some(function (name) {
      return Object.prototype.hasOwnProperty.call(shown, name) && kept[name] !== shown[name];
    });
  }

  function note(text, id) {
    var p = document.createElement("p");
    p.className = "flash";
    p.id = id;
    p.setAttribute("role", "status");
    p.textContent = text;
    return p;
  }

  function keep(user, form, sent) {
    var key = keyOf(user, form);
    var before = read(key);
    store.setItem(key, JSON.stringify({
      values: valuesOf(form),
      at: Date.now(),
      page: location.pathname,
      sent: sent ? Date.now() : (before && before.sent) || 0
    }));
  }

  function referralsOnPage() {  // the referral ids the page's forms act on
    var ids = {};
    Array.prototype.forEach.call(document.querySelectorAll("form[action]"), function (f) {
      var m = /\/referrals\/([0-9]+)\//.exec(f.getAttribute("action"));
      if (m) { ids[m[1]] = true; }
    });
    return ids;
  }

  function referralOf(action) {
    var m = /\/referrals\/([0-9]+)\//.exec(action);
    return m ? m[1] : null;
  }

  var user = signedIn();
  var kept = drafts();

  // The page says a form was saved: its kept copy is done with.
  var done = new URLSearchParams(location.search).get("done");
  if (user && done && SAVED[done]) {
    var ids = referralsOnPage();
    kept = kept.filter(function (d) {
      var saved = d.user === user && SAVED[done].indexOf(d.form) >= 0 &&
        (ids[referralOf(d.action)] || d.draft.page === location.pathname);
      if (saved) { store.removeItem(d.key); }
      return !saved;
    });
  }

  // Signing out on purpose: this user's kept forms go too (a shared workstation).
  Array.prototype.forEach.call(document.querySelectorAll('form[action$="/logout"]'), function (f) {
    f.addEventListener("submit", function () {
      drafts().forEach(function (d) { if (d.user === user) { store.removeItem(d.key); } });
    });
  });

  if (user) {
    var first = null;
    FORMS.forEach(function (id) {
      var form = document.getElementById(id);
      if (!form || !form.getAttribute("action")) { return; }
      var draft = read(keyOf(user, form));
      if (draft && (Date.now() - draft.at < MAX_AGE_MS) && differs(draft.values, valuesOf(form))) {
        fill(form, draft.values);
        var heading = form.querySelector("h3");
        var message = note(texts.restored, id + "-restored");
        if (heading) { heading.insertAdjacentElement("afterend", message); } else { form.prepend(message); }
        var details = form.closest("details");
        if (details) { details.open = true; }
        first = first || form;
      }
      form.addEventListener("input", function () { keep(user, form, false); });
      form.addEventListener("change", function () { keep(user, form, false); });
      form.addEventListener("submit", function () { keep(user, form, true); });
    });
    if (first) { first.scrollIntoView({ block: "start" }); }
  }

  // The sign-in page, or the page of a form just refused: say that what was sent
  // is kept (and will be filled in again on the form's page).
  var atLogin = document.querySelector('form[action$="/login"]');
  var refused = document.getElementById("error-message");
  if ((atLogin || refused) && texts.kept) {
    var pending = kept.some(function (d) {
      return d.draft.sent && (atLogin ? !user || d.user === user :
        d.user === user && Date.now() - d.draft.sent < 120 * 1000);
    });
    var main = document.getElementById("main");
    if (pending && main) {
      var where = main.querySelector("p.flash, #error-message");
      var keptNote = note(texts.kept, "form-kept");
      if (where) { where.insertAdjacentElement("afterend", keptNote); } else { main.prepend(keptNote); }
    }
  }
})();
