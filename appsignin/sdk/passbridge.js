// passbridge.js: "Sign in with passkey" for an application's own login
// page, served by passbridge at /sdk/passbridge.js (no CDN, no build step).
//
//   <script src="https://passkeys.corp.example/sdk/passbridge.js"></script>
//   const {token} = await Passbridge.signIn({server: "https://passkeys.corp.example", clientId: "erp"});
//   // send token to your backend, which verifies it against
//   // https://passkeys.corp.example/oidc/keys (aud = "erp", use each jti once)
//
// The page's origin must be in the client's origins (oidc.clients[].origins)
// and under portal.rp_id's domain, or listed in portal.related_origins.
(function (global) {
  "use strict";

  async function call(server, path, body) {
    const res = await fetch(server.replace(/\/+$/, "") + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
    });
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      const err = new Error((data && data.error) || ("passbridge answered " + res.status));
      err.status = res.status;
      err.code = data && data.code;
      throw err;
    }
    return data;
  }

  // signIn runs one passkey sign-in for clientId and resolves to
  // {token, token_type, expires_at}.
  async function signIn(opts) {
    if (!opts || !opts.server || !opts.clientId) {
      throw new Error("Passbridge.signIn needs {server, clientId}");
    }
    if (!global.PublicKeyCredential || !PublicKeyCredential.parseRequestOptionsFromJSON) {
      throw new Error("This browser cannot sign in with a passkey.");
    }
    const begun = await call(opts.server, "/api/v1/signin/begin", { client_id: opts.clientId });
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begun.options.publicKey);
    const credential = await navigator.credentials.get({ publicKey: publicKey, signal: opts.signal });
    return call(opts.server, "/api/v1/signin/finish", {
      client_id: opts.clientId,
      ceremony: begun.ceremony,
      credential: credential.toJSON(),
    });
  }

  global.Passbridge = { signIn: signIn };
})(typeof window !== "undefined" ? window : globalThis);
