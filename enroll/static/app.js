// passbridge portal: the WebAuthn ceremonies. The pages work without this
// script (password sign-in, renaming, deleting); passkeys need it, because
// only a script can call navigator.credentials. No inline script anywhere:
// the Content-Security-Policy allows this file only.
(function () {
  "use strict";

  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var status = document.getElementById("status");

  function show(msg, kind) {
    var server = document.getElementById("server-error");
    if (server) server.hidden = true;
    status.textContent = msg;
    status.className = "alert " + (kind || "notice");
    status.setAttribute("role", kind === "error" ? "alert" : "status");
    status.hidden = false;
    if (kind === "error") status.focus && status.setAttribute("tabindex", "-1");
  }

  // --- base64url, for browsers without the JSON helpers of WebAuthn L3 ---
  function b64urlToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function bufToB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(o) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(o);
    }
    var c = Object.assign({}, o);
    c.challenge = b64urlToBuf(o.challenge);
    c.user = Object.assign({}, o.user, { id: b64urlToBuf(o.user.id) });
    c.excludeCredentials = (o.excludeCredentials || []).map(function (d) {
      return Object.assign({}, d, { id: b64urlToBuf(d.id) });
    });
    return c;
  }
  function requestOptions(o) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(o);
    }
    var r = Object.assign({}, o);
    r.challenge = b64urlToBuf(o.challenge);
    r.allowCredentials = (o.allowCredentials || []).map(function (d) {
      return Object.assign({}, d, { id: b64urlToBuf(d.id) });
    });
    return r;
  }
  function credentialJSON(cred) {
    if (typeof cred.toJSON === "function") {
      try { return cred.toJSON(); } catch (e) { /* fall through */ }
    }
    var r = cred.response, out = {
      id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: bufToB64url(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = bufToB64url(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = bufToB64url(r.authenticatorData);
      out.response.signature = bufToB64url(r.signature);
      if (r.userHandle) out.response.userHandle = bufToB64url(r.userHandle);
    }
    return out;
  }

  // --- the portal's JSON API ---
  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: JSON.stringify(body || {})
    }).then(function (res) {
      if (res.status === 204) return {};
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) {
          var err = new Error(data.error || ("The portal answered " + res.status + "."));
          err.code = data.code; err.server = true;
          throw err;
        }
        return data;
      });
    });
  }

  // What went wrong, in words, for the errors browsers really raise.
  function explain(e, kind) {
    if (e.server) return e.message;
    switch (e.name) {
      case "NotAllowedError":
        return kind === "registration"
          ? "No passkey was created: the request was cancelled or timed out. Try again when you are ready."
          : "No passkey was used: the request was cancelled or timed out, or this device has no passkey for this portal.";
      case "InvalidStateError":
        return "This authenticator already holds a passkey for your account. Use another one, or sign in with the one you have.";
      case "NotSupportedError":
        return "No authenticator that can hold passkeys is available here. Use a device with a fingerprint reader, face recognition or a PIN, or plug in a security key.";
      case "SecurityError":
        return "This address is not allowed to use passkeys for this portal. Open the portal at its usual address.";
      case "ConstraintError":
        return "This authenticator cannot check that it is you (with a PIN, fingerprint or face), which passkeys here require.";
      case "TypeError":
        return "The portal cannot be reached. Check your connection and try again.";
    }
    return "Something went wrong: " + (e.message || e.name);
  }

  function cancelled(ceremony, kind, e) {
    if (!ceremony || e.server) return;
    post("/webauthn/cancel", { ceremony: ceremony, kind: kind, reason: String(e.name || "error").slice(0, 40) }).catch(function () {});
  }

  function busy(button, on) {
    if (!button) return;
    button.disabled = on;
    button.setAttribute("aria-busy", on ? "true" : "false");
  }

  // --- sign-in ---
  var conditional = null; // the AbortController of the autofill request

  function signIn(useAutofill) {
    var button = document.getElementById("passkey-signin");
    var ceremony = null;
    if (conditional) { conditional.abort(); conditional = null; }
    var abort = new AbortController();
    if (useAutofill) conditional = abort; else busy(button, true);
    var usedID = null;
    return post("/webauthn/login/begin", { conditional: !!useAutofill }).then(function (begin) {
      ceremony = begin.ceremony;
      var opts = { publicKey: requestOptions(begin.options.publicKey), signal: abort.signal };
      if (useAutofill) opts.mediation = "conditional";
      if (!useAutofill) show("Choose your passkey in the window your browser opens…");
      return navigator.credentials.get(opts);
    }).then(function (cred) {
      usedID = cred.id;
      show("Checking your passkey…");
      return post("/webauthn/login/finish", { ceremony: ceremony, credential: credentialJSON(cred) });
    }).then(function (done) {
      window.location.assign(done.redirect || "/");
    }).catch(function (e) {
      busy(button, false);
      if (e.name === "AbortError") { cancelled(ceremony, "login", e); return; }
      cancelled(ceremony, "login", e);
      // The autofill request ending in the browser (no passkey for this
      // portal on this device, its timeout, the user's Escape) is nothing
      // the user asked for: no message, which would also move the form
      // under the user's pointer. A passkey chosen and then refused by
      // the portal (e.server) is explained below.
      if (useAutofill && !e.server) return;
      // A passkey the portal no longer knows or accepts (deleted, revoked
      // by IT or a recovery): the password manager is told, so that it
      // stops offering it. Not for an account disabled or deleted in the
      // directory: re-enabled (or restored), it gets its passkeys back.
      if (usedID && (e.code === "unknown_passkey" || e.code === "revoked_passkey")) {
        signal("signalUnknownCredential", { rpId: rpID(), credentialId: usedID });
      }
      show(explain(e, "login"), "error");
      if (useAutofill && e.server) startAutofill();
    });
  }

  function startAutofill() {
    if (!window.PublicKeyCredential || !PublicKeyCredential.isConditionalMediationAvailable) return;
    if (!document.querySelector('input[autocomplete~="webauthn"]')) return;
    PublicKeyCredential.isConditionalMediationAvailable().then(function (ok) {
      if (ok) signIn(true);
    }).catch(function () {});
  }

  // --- the Signals API: keep the password manager in step ---
  // Feature-detected: a browser without it is left alone, without errors.
  function signal(name, args) {
    if (!window.PublicKeyCredential || typeof PublicKeyCredential[name] !== "function") return;
    try {
      PublicKeyCredential[name](args).catch(function () {});
    } catch (e) { /* an old shape of the API: nothing to do */ }
  }
  function rpID() {
    var el = document.getElementById("signals");
    return (el && el.getAttribute("data-rp-id")) || location.hostname;
  }
  // On the passkeys page: the passkeys the portal still accepts for this
  // user (the others, deleted or revoked, disappear from the password
  // manager), and the user's name as the directory has it now.
  function signalAccount() {
    var el = document.getElementById("signals");
    if (!el || !el.getAttribute("data-user-id")) return;
    var user = el.getAttribute("data-user-id");
    var ids = (el.getAttribute("data-credentials") || "").split(",").filter(function (x) { return x; });
    signal("signalAllAcceptedCredentials", { rpId: rpID(), userId: user, allAcceptedCredentialIds: ids });
    signal("signalCurrentUserDetails", { rpId: rpID(), userId: user, name: el.getAttribute("data-name"), displayName: el.getAttribute("data-display-name") });
  }

  // --- the automatic passkey upgrade ---
  // Right after a password sign-in, where the browser can create a passkey
  // without a dialog (conditional creation), the password manager is
  // asked to; elsewhere the offer on the page stays.
  // upgrading is the conditional creation in flight: {controller, done};
  // registering is set once the user pressed the button.
  var upgrading = null, registering = false;

  function upgrade(form) {
    if (!form.hasAttribute("data-upgrade") || typeof PublicKeyCredential.getClientCapabilities !== "function") return;
    PublicKeyCredential.getClientCapabilities().then(function (caps) {
      if (!caps || !caps.conditionalCreate || registering) return;
      var ceremony = null;
      var controller = new AbortController();
      var done = post("/webauthn/register/begin", { upgrade: true }).then(function (begin) {
        ceremony = begin.ceremony;
        return navigator.credentials.create({ mediation: "conditional", publicKey: creationOptions(begin.options.publicKey), signal: controller.signal });
      }).then(function (cred) {
        return post("/webauthn/register/finish", { ceremony: ceremony, credential: credentialJSON(cred) });
      }).then(function (finished) {
        upgrading = null;
        window.location.assign(finished.redirect || "/");
      }).catch(function (e) {
        upgrading = null;
        cancelled(ceremony, "upgrade", e); // quietly: the offer stays
      });
      upgrading = { controller: controller, done: done };
    }).catch(function () {});
  }

  // --- enrollment ---
  function register(form) {
    registering = true;
    if (upgrading) {
      // A browser runs one creation at a time: the conditional one ends
      // first, then the user's own.
      var u = upgrading;
      upgrading = null;
      u.controller.abort();
      u.done.then(function () { register(form); });
      return;
    }
    var button = document.getElementById("register");
    var name = (document.getElementById("passkey-name") || {}).value || "";
    var ceremony = null;
    busy(button, true);
    post("/webauthn/register/begin", {}).then(function (begin) {
      ceremony = begin.ceremony;
      show("Follow your browser's instructions to create the passkey…");
      return navigator.credentials.create({ publicKey: creationOptions(begin.options.publicKey) });
    }).then(function (cred) {
      show("Saving your passkey…");
      return post("/webauthn/register/finish", { ceremony: ceremony, name: name.trim(), credential: credentialJSON(cred) });
    }).then(function (done) {
      window.location.assign(done.redirect || "/");
    }).catch(function (e) {
      busy(button, false);
      cancelled(ceremony, "registration", e);
      show(explain(e, "registration"), "error");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      var note = document.getElementById("no-webauthn");
      if (note) note.hidden = false;
      document.querySelectorAll("[data-needs-webauthn]").forEach(function (b) { b.disabled = true; });
      document.documentElement.setAttribute("data-js", "ready"); // shown, disabled
      return;
    }
    var signin = document.getElementById("passkey-signin");
    if (signin) {
      signin.addEventListener("click", function () { signIn(false); });
      startAutofill();
    }
    var form = document.getElementById("register-form");
    if (form) {
      form.addEventListener("submit", function (ev) { ev.preventDefault(); register(form); });
      upgrade(form);
    }
    signalAccount();
    // The buttons that need this script are shown now (style.css).
    document.documentElement.setAttribute("data-js", "ready");
  });
})();
