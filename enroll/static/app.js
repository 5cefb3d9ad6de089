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
    return post("/webauthn/login/begin", { conditional: !!useAutofill }).then(function (begin) {
      ceremony = begin.ceremony;
      var opts = { publicKey: requestOptions(begin.options.publicKey), signal: abort.signal };
      if (useAutofill) opts.mediation = "conditional";
      if (!useAutofill) show("Choose your passkey in the window your browser opens…");
      return navigator.credentials.get(opts);
    }).then(function (cred) {
      show("Checking your passkey…");
      return post("/webauthn/login/finish", { ceremony: ceremony, credential: credentialJSON(cred) });
    }).then(function (done) {
      window.location.assign(done.redirect || "/");
    }).catch(function (e) {
      busy(button, false);
      if (e.name === "AbortError") { cancelled(ceremony, "login", e); return; }
      cancelled(ceremony, "login", e);
      if (e.code === "unknown_passkey" && PublicKeyCredential.signalUnknownCredential && e.credentialId) {
        PublicKeyCredential.signalUnknownCredential({ rpId: location.hostname, credentialId: e.credentialId }).catch(function () {});
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

  // --- enrollment ---
  function register(form) {
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
    }
  });
})();
