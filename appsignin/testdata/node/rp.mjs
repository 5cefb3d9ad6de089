// A relying party in Node with openid-client (from npm): the authorization
// code flow with PKCE S256, state and nonce, against passbridge's discovery.
//
//   ISSUER=... CLIENT_ID=... REDIRECT_URI=http://localhost:PORT/callback PORT=... node rp.mjs
//   -> prints {"port": N}; GET / starts a sign-in, /callback ends it with a
//      page showing the verified ID token's claims as JSON.
import http from "node:http";
import * as client from "openid-client";

const issuer = new URL(process.env.ISSUER);
const config = await client.discovery(issuer, process.env.CLIENT_ID, undefined, client.None(), {
  execute: issuer.protocol === "http:" ? [client.allowInsecureRequests] : [],
});
const pending = new Map(); // state -> {verifier, nonce}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, process.env.REDIRECT_URI);
  try {
    if (url.pathname === "/") {
      const verifier = client.randomPKCECodeVerifier();
      const state = client.randomState();
      const nonce = client.randomNonce();
      pending.set(state, { verifier, nonce });
      const to = client.buildAuthorizationUrl(config, {
        redirect_uri: process.env.REDIRECT_URI,
        scope: "openid profile email",
        code_challenge: await client.calculatePKCECodeChallenge(verifier),
        code_challenge_method: "S256",
        state, nonce,
      });
      res.writeHead(302, { Location: to.href });
      return res.end();
    }
    if (url.pathname === "/callback") {
      const p = pending.get(url.searchParams.get("state"));
      if (!p) throw new Error("unknown state");
      pending.delete(url.searchParams.get("state"));
      const tokens = await client.authorizationCodeGrant(config, url, {
        pkceCodeVerifier: p.verifier, expectedState: url.searchParams.get("state"), expectedNonce: p.nonce,
      });
      const claims = tokens.claims();
      res.writeHead(200, { "Content-Type": "text/html" });
      return res.end(`<main><h1>Signed in (node)</h1><pre id="claims">${JSON.stringify(claims)}</pre></main>`);
    }
    res.writeHead(404); res.end();
  } catch (e) {
    res.writeHead(500, { "Content-Type": "text/html" });
    res.end(`<main><h1>Sign-in failed (node)</h1><pre id="error">${String(e && e.message)}</pre></main>`);
  }
});
server.listen(Number(process.env.PORT), "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
