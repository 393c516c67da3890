/*
 * Referral storefront snippet (v1). Put it on the landing site:
 *   <script src="https://links.example.com/widget/v1/storefront.js" data-program="prg_…" defer></script>
 * It keeps the referral evidence of the landing URL (ref, click_id, utm_*) in a first-party
 * cookie for the program's attribution window, and hands it to the checkout: every
 * <form data-referral-evidence> gets hidden fields, and ReferralEvidence.get() returns it.
 * No third-party cookie, no fingerprinting: only what the URL carried.
 */
(function () {
  "use strict";
  var COOKIE = "referral_evidence";
  var DEFAULT_DAYS = 30;
  var script = document.currentScript;
  var program = script && script.getAttribute("data-program");
  var api = script ? new URL(script.src, location.href).origin : "";

  function fromUrl(search) {
    var params = new URLSearchParams(search);
    var found = {};
    params.forEach(function (value, key) {
      if ((key === "ref" || key === "click_id" || key.indexOf("utm_") === 0) && value) {
        found[key] = value.slice(0, 200);
      }
    });
    return found.ref || found.click_id ? found : null;
  }

  function read() {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === COOKIE) {
        try {
          return JSON.parse(decodeURIComponent(parts[i].slice(eq + 1)));
        } catch (e) {
          return null;
        }
      }
    }
    return null;
  }

  function write(evidence, days) {
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = COOKIE + "=" + encodeURIComponent(JSON.stringify(evidence)) +
      "; Max-Age=" + Math.round(days * 86400) + "; Path=/; SameSite=Lax" + secure;
  }

  function fill(root) {
    var evidence = read();
    var forms = (root || document).querySelectorAll("form[data-referral-evidence]");
    forms.forEach(function (form) {
      form.querySelectorAll("input[data-referral-evidence-field]").forEach(function (el) {
        el.remove();
      });
      if (!evidence) return;
      Object.keys(evidence).forEach(function (key) {
        if (key === "landed_at") return;
        var input = document.createElement("input");
        input.type = "hidden";
        input.name = key;
        input.value = evidence[key];
        input.setAttribute("data-referral-evidence-field", "");
        form.appendChild(input);
      });
    });
  }

  // A new landing through a referral link replaces earlier evidence (the last click wins).
  var landed = fromUrl(location.search);
  if (landed) {
    landed.landed_at = new Date().toISOString();
    write(landed, DEFAULT_DAYS);
  }
  var ready = Promise.resolve();
  if (landed && program) {
    // The program's attribution window decides how long the evidence is kept.
    ready = fetch(api + "/widget/v1/programs/" + encodeURIComponent(program) + "/storefront.json")
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (config) {
        if (config && config.cookie_days) write(landed, config.cookie_days);
      })
      .catch(function () { /* keep the default window */ });
  }

  window.ReferralEvidence = {
    /** The evidence to send with the purchase report: {ref, click_id, utm_*} or null. */
    get: function () {
      var e = read();
      if (!e) return null;
      var out = {};
      Object.keys(e).forEach(function (k) { if (k !== "landed_at") out[k] = e[k]; });
      return out;
    },
    /** Adds hidden fields to every <form data-referral-evidence> under root (or the page). */
    fill: fill,
    /** Forgets the evidence (e.g. after the purchase was reported). */
    clear: function () { write({}, 0); },
    /** Resolves once the program's window has been applied. */
    ready: ready,
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { fill(); });
  } else {
    fill();
  }
  // Forms rendered later still carry the evidence when submitted.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form && form.matches && form.matches("form[data-referral-evidence]")) fill(form.parentNode);
  }, true);
})();
