// The OpenID Connect login page: one passkey sign-in for the pending
// authorization request, then back to the provider, which sends the
// browser on to the application with a code. After a password sign-in
// (a client's password_fallback), the invitation page creates a first
// passkey the same way, then goes on.
(function () {
  "use strict";
  var status = document.getElementById("status");
  function say(text) { status.textContent = text; status.hidden = false; }
  function post(path, body, csrf) {
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    return fetch(path, {
      method: "POST", credentials: "same-origin", headers: headers, body: JSON.stringify(body)
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) throw new Error(data.error || ("passbridge answered " + res.status + "."));
        return data;
      });
    });
  }
  function failed(button, e, what) {
    button.disabled = false;
    say(e && e.name === "NotAllowedError" ? "The passkey " + what + " was cancelled or timed out. Try again." : e.message);
  }

  var signin = document.getElementById("passkey-signin");
  if (signin) {
    signin.addEventListener("click", function () {
      var request = signin.getAttribute("data-request");
      signin.disabled = true;
      say("Waiting for your passkey…");
      post("/oidc/login/begin", { request: request }).then(function (begun) {
        var publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begun.options.publicKey);
        return navigator.credentials.get({ publicKey: publicKey }).then(function (cred) {
          return post("/oidc/login/finish", { request: request, ceremony: begun.ceremony, credential: cred.toJSON() });
        });
      }).then(function (done) {
        say("Signed in. Taking you back…");
        window.location.assign(done.redirect);
      }).catch(function (e) { failed(signin, e, "sign-in"); });
    });
  }

  var create = document.getElementById("passkey-create");
  if (create) {
    create.addEventListener("click", function () {
      var request = create.getAttribute("data-request"), csrf = create.getAttribute("data-csrf");
      create.disabled = true;
      say("Follow your browser's steps to create the passkey…");
      post("/oidc/login/passkey/begin", { request: request }, csrf).then(function (begun) {
        var publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(begun.options.publicKey);
        return navigator.credentials.create({ publicKey: publicKey }).then(function (cred) {
          return post("/oidc/login/passkey/finish", { request: request, ceremony: begun.ceremony, credential: cred.toJSON() }, csrf);
        });
      }).then(function (done) {
        say("Your passkey is ready. Taking you back…");
        window.location.assign(done.redirect);
      }).catch(function (e) { failed(create, e, "creation"); });
    });
  }
  // The buttons that need this script are shown now (style.css).
  document.documentElement.setAttribute("data-js", "ready");
})();
