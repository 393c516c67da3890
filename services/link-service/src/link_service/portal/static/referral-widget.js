/*
 * Referral widget (v1): the advocate's refer-a-friend panel as a web component.
 *   <script src="https://links.example.com/widget/v1/referral-widget.js" defer></script>
 *   <referral-widget api="https://links.example.com" token="…"></referral-widget>
 * The token is an advocate token the merchant's backend minted (POST /v1/advocates/{id}/tokens);
 * the widget reads GET /v1/me with it and nothing else. Plain JS, no framework, no build step.
 */
(function () {
  "use strict";
  if (window.customElements.get("referral-widget")) return;

  var MESSAGES = {
    en: {
      title: "Invite friends", yourLink: "Your referral link", copy: "Copy link",
      copied: "Link copied", copyFailed: "Select the link and copy it", share: "Share",
      shareOn: "Share on {channel}", qr: "QR code of your referral link", stats: "Your referrals",
      clicks: "Clicks", joined: "Friends joined", bought: "Friends who bought",
      rewards: "Your rewards", pending: "Pending", available: "Available", redeemed: "Redeemed",
      none: "No rewards yet", friends: "Friends", noFriends: "No friends yet",
      clicked: "Clicked", signed_up: "Signed up", purchased: "Purchased", rewarded: "Rewarded",
      refunded: "Refunded", loading: "Loading…", error: "Your referral details could not be loaded.",
      email: "Email", sms: "SMS", whatsapp: "WhatsApp", facebook: "Facebook", x: "X",
      linkedin: "LinkedIn", unit: "Unit",
    },
    de: {
      title: "Freunde einladen", yourLink: "Dein Empfehlungslink", copy: "Link kopieren",
      copied: "Link kopiert", copyFailed: "Markiere den Link und kopiere ihn", share: "Teilen",
      shareOn: "Auf {channel} teilen", qr: "QR-Code deines Empfehlungslinks",
      stats: "Deine Empfehlungen", clicks: "Klicks", joined: "Angemeldete Freunde",
      bought: "Freunde mit Kauf", rewards: "Deine Prämien", pending: "Ausstehend",
      available: "Verfügbar", redeemed: "Eingelöst", none: "Noch keine Prämien",
      friends: "Freunde", noFriends: "Noch keine Freunde", clicked: "Geklickt",
      signed_up: "Angemeldet", purchased: "Gekauft", rewarded: "Belohnt", refunded: "Erstattet",
      loading: "Wird geladen…", error: "Deine Empfehlungsdaten konnten nicht geladen werden.",
      email: "E-Mail", sms: "SMS", whatsapp: "WhatsApp", facebook: "Facebook", x: "X",
      linkedin: "LinkedIn", unit: "Einheit",
    },
    fr: {
      title: "Invitez vos amis", yourLink: "Votre lien de parrainage", copy: "Copier le lien",
      copied: "Lien copié", copyFailed: "Sélectionnez le lien et copiez-le", share: "Partager",
      shareOn: "Partager sur {channel}", qr: "QR code de votre lien de parrainage",
      stats: "Vos parrainages", clicks: "Clics", joined: "Amis inscrits",
      bought: "Amis ayant acheté", rewards: "Vos récompenses", pending: "En attente",
      available: "Disponible", redeemed: "Utilisé", none: "Pas encore de récompense",
      friends: "Amis", noFriends: "Pas encore d’amis", clicked: "A cliqué",
      signed_up: "Inscrit", purchased: "A acheté", rewarded: "Récompensé", refunded: "Remboursé",
      loading: "Chargement…", error: "Vos informations de parrainage n’ont pas pu être chargées.",
      email: "E-mail", sms: "SMS", whatsapp: "WhatsApp", facebook: "Facebook", x: "X",
      linkedin: "LinkedIn", unit: "Unité",
    },
    es: {
      title: "Invita a tus amigos", yourLink: "Tu enlace de referido", copy: "Copiar enlace",
      copied: "Enlace copiado", copyFailed: "Selecciona el enlace y cópialo", share: "Compartir",
      shareOn: "Compartir en {channel}", qr: "Código QR de tu enlace de referido",
      stats: "Tus referidos", clicks: "Clics", joined: "Amigos registrados",
      bought: "Amigos que compraron", rewards: "Tus recompensas", pending: "Pendiente",
      available: "Disponible", redeemed: "Canjeado", none: "Aún no hay recompensas",
      friends: "Amigos", noFriends: "Aún no hay amigos", clicked: "Hizo clic",
      signed_up: "Registrado", purchased: "Compró", rewarded: "Recompensado",
      refunded: "Reembolsado", loading: "Cargando…",
      error: "No se pudieron cargar tus datos de referido.",
      email: "Correo", sms: "SMS", whatsapp: "WhatsApp", facebook: "Facebook", x: "X",
      linkedin: "LinkedIn", unit: "Unidad",
    },
  };

  // Colours keep WCAG AA contrast (4.5:1 or more) on white; focus is always visible.
  var STYLE = [
    ":host{display:block;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;",
    "color:#1b1b1f;background:#fff;border:1px solid #c4c6cf;border-radius:12px;padding:20px;",
    "max-width:520px}",
    "h2{font-size:1.25rem;margin:0 0 12px}h3{font-size:1rem;margin:18px 0 8px}",
    ".row{display:flex;gap:8px;align-items:center}",
    "input{flex:1;min-width:0;font:inherit;padding:8px 10px;border:1px solid #74777f;",
    "border-radius:8px;color:#1b1b1f;background:#fff}",
    "button,a.share{font:inherit;cursor:pointer;border-radius:8px;padding:8px 12px;",
    "text-decoration:none;display:inline-block}",
    "button{background:#0b57d0;color:#fff;border:1px solid #0b57d0}",
    "a.share{background:#fff;color:#0b57d0;border:1px solid #0b57d0}",
    "button:focus-visible,a:focus-visible,input:focus-visible{outline:3px solid #1b1b1f;",
    "outline-offset:2px}",
    ".shares{display:flex;flex-wrap:wrap;gap:8px}",
    ".qr{display:block;width:132px;height:132px;margin-top:12px}",
    "dl{display:grid;grid-template-columns:repeat(3,1fr);gap:8px;margin:0}",
    "dl div{background:#f1f3f9;border-radius:8px;padding:8px}dt{font-size:.85rem;color:#44474e}",
    "dd{margin:0;font-size:1.3rem;font-weight:600}",
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 6px;",
    "border-bottom:1px solid #e0e2ec}th{font-weight:600;color:#44474e}",
    "ul{list-style:none;padding:0;margin:0}li{padding:4px 0;border-bottom:1px solid #e0e2ec;",
    "display:flex;justify-content:space-between}",
    ".status{font-size:.85rem;color:#44474e}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}",
    ".error{color:#b3261e}",
  ].join("");

  function messagesFor(locale) {
    var lang = String(locale || "en").toLowerCase().split(/[-_]/)[0];
    return MESSAGES[lang] || MESSAGES.en;
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function amount(value, unit, locale) {
    // Amounts come in minor units of a currency (cents), or whole units of points and others.
    try {
      var fmt = new Intl.NumberFormat(locale, { style: "currency", currency: unit });
      var digits = fmt.resolvedOptions().maximumFractionDigits;
      return fmt.format(value / Math.pow(10, digits));
    } catch (e) {
      return new Intl.NumberFormat(locale).format(value) + " " + unit;
    }
  }

  class ReferralWidget extends HTMLElement {
    static get observedAttributes() { return ["token", "api"]; }

    constructor() {
      super();
      this.attachShadow({ mode: "open" });
      this._qrUrl = null;
    }

    connectedCallback() { this.refresh(); }

    attributeChangedCallback(name, old, value) {
      if (this.isConnected && old !== null && old !== value) this.refresh();
    }

    get apiBase() {
      var script = document.querySelector("script[src*='/widget/v1/referral-widget.js']");
      var fallback = script ? new URL(script.src, location.href).origin : location.origin;
      return (this.getAttribute("api") || fallback).replace(/\/$/, "");
    }

    _get(url) {
      return fetch(url, {
        headers: { Authorization: "Bearer " + this.getAttribute("token") },
        credentials: "omit",
      });
    }

    /** Reloads the advocate's data (e.g. after a purchase, or with a fresh token). */
    refresh() {
      var self = this;
      if (!this.shadowRoot.firstChild) this._paint(null, MESSAGES.en);
      return this._get(this.apiBase + "/v1/me")
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (me) {
          self.me = me;
          self._paint(me, messagesFor(me.locale));
          self.dispatchEvent(new CustomEvent("referral-widget:loaded", { detail: me }));
          return me;
        })
        .catch(function (err) {
          self._paint(undefined, messagesFor(document.documentElement.lang));
          self.dispatchEvent(new CustomEvent("referral-widget:error", { detail: String(err) }));
        });
    }

    _paint(me, t) {
      var root = this.shadowRoot;
      root.replaceChildren(el("style", { text: STYLE }));
      var section = el("section", { "aria-labelledby": "rw-title" });
      root.appendChild(section);
      if (me === null) {
        section.appendChild(el("p", { role: "status", text: t.loading }));
        return;
      }
      if (me === undefined) {
        section.appendChild(el("p", { role: "alert", class: "error", text: t.error }));
        return;
      }
      this.setAttribute("lang", me.locale);
      section.setAttribute("lang", me.locale);
      section.appendChild(el("h2", { id: "rw-title", text: me.program_name || t.title }));

      var input = el("input", {
        id: "rw-link", type: "text", readonly: "", value: me.link, "aria-describedby": "rw-copied",
      });
      input.value = me.link;
      var copy = el("button", { type: "button", id: "rw-copy", text: t.copy });
      var live = el("p", { id: "rw-copied", role: "status", "aria-live": "polite", class: "status" });
      copy.addEventListener("click", function () {
        var done = function () { live.textContent = t.copied; };
        var fail = function () { input.select(); live.textContent = t.copyFailed; };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(me.link).then(done, fail);
        } else {
          fail();
        }
      });
      section.appendChild(el("label", { for: "rw-link", text: t.yourLink }));
      section.appendChild(el("div", { class: "row" }, [input, copy]));
      section.appendChild(live);

      var shares = el("div", { class: "shares", role: "group", "aria-label": t.share });
      var self = this;
      me.share.forEach(function (s) {
        if (!s.intent_url) return;
        var name = t[s.channel] || s.channel;
        var a = el("a", {
          class: "share", href: s.intent_url, rel: "noopener noreferrer",
          "data-channel": s.channel, "aria-label": t.shareOn.replace("{channel}", name),
          text: name,
        });
        // Web composers open beside the page; mailto: and sms: go to the device's app.
        if (/^https:/.test(s.intent_url)) a.setAttribute("target", "_blank");
        a.addEventListener("click", function () {
          self.dispatchEvent(new CustomEvent("referral-widget:share", { detail: s }));
        });
        shares.appendChild(a);
      });
      section.appendChild(el("h3", { text: t.share }));
      section.appendChild(shares);

      var img = el("img", { class: "qr", alt: t.qr, width: "132", height: "132" });
      section.appendChild(img);
      this._get(me.qr_url + "?format=svg&scale=4")
        .then(function (r) { return r.ok ? r.blob() : null; })
        .then(function (blob) {
          if (!blob) return;
          if (self._qrUrl) URL.revokeObjectURL(self._qrUrl);
          self._qrUrl = URL.createObjectURL(blob);
          img.src = self._qrUrl;
        })
        .catch(function () { img.remove(); });

      section.appendChild(el("h3", { text: t.stats }));
      var stat = function (key, label, value) {
        return el("div", {}, [
          el("dt", { text: label }),
          el("dd", { "data-stat": key, text: String(value) }),
        ]);
      };
      section.appendChild(el("dl", {}, [
        stat("clicks", t.clicks, me.stats.clicks),
        stat("friends_joined", t.joined, me.stats.friends_joined),
        stat("friends_purchased", t.bought, me.stats.friends_purchased),
      ]));

      section.appendChild(el("h3", { text: t.rewards }));
      if (!me.rewards.length) {
        section.appendChild(el("p", { text: t.none }));
      } else {
        var head = el("tr", {}, [t.unit, t.pending, t.available, t.redeemed].map(function (h) {
          return el("th", { scope: "col", text: h });
        }));
        var rows = me.rewards.map(function (r) {
          return el("tr", { "data-unit": r.unit }, [
            el("th", { scope: "row", text: r.unit }),
            el("td", { "data-amount": "pending", text: amount(r.pending, r.unit, me.locale) }),
            el("td", { "data-amount": "available", text: amount(r.available, r.unit, me.locale) }),
            el("td", { "data-amount": "redeemed", text: amount(r.redeemed, r.unit, me.locale) }),
          ]);
        });
        section.appendChild(el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)]));
      }

      section.appendChild(el("h3", { text: t.friends }));
      if (!me.referrals.length) {
        section.appendChild(el("p", { text: t.noFriends }));
      } else {
        section.appendChild(el("ul", {}, me.referrals.map(function (r) {
          return el("li", { "data-status": r.status }, [
            el("span", { text: r.friend }),
            el("span", { class: "status", text: t[r.status] || r.status }),
          ]);
        })));
      }
    }
  }

  window.customElements.define("referral-widget", ReferralWidget);
})();
