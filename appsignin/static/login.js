// The OpenID Connect login page: one passkey sign-in for the pending
// authorization request, then back to the provider, which sends the
// browser on to the application with a code.
(function () {
  "use strict";
  var button = document.getElementById("passkey-signin");
  if (!button) return;
  var status = document.getElementById("status");
  function say(text) { status.textContent = text; status.hidden = false; }
  function post(path, body) {
    return fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) throw new Error(data.error || ("passbridge answered " + res.status + "."));
        return data;
      });
    });
  }
  button.addEventListener("click", function () {
    var request = button.getAttribute("data-request");
    button.disabled = true;
    say("Waiting for your passkey…");
    post("/oidc/login/begin", { request: request }).then(function (begun) {
      var publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begun.options.publicKey);
      return navigator.credentials.get({ publicKey: publicKey }).then(function (cred) {
        return post("/oidc/login/finish", { request: request, ceremony: begun.ceremony, credential: cred.toJSON() });
      });
    }).then(function (done) {
      say("Signed in. Taking you back…");
      window.location.assign(done.redirect);
    }).catch(function (e) {
      button.disabled = false;
      say(e && e.name === "NotAllowedError" ? "The passkey sign-in was cancelled or timed out. Try again." : e.message);
    });
  });
})();
