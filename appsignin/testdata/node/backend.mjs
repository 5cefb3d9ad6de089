// A tiny application backend in Node that accepts passbridge's signed
// assertions the way the docs tell application developers to: the JWT is
// verified against passbridge's JWKS with the jose library (ES256 only,
// issuer and audience checked), and each jti is accepted once.
//
//   JWKS_URL=... ISSUER=... AUDIENCE=erp node backend.mjs
//   -> prints {"port": N}; POST /login {"token": "...", "at": unix-seconds?}
import http from "node:http";
import { createRemoteJWKSet, jwtVerify } from "jose";

const jwks = createRemoteJWKSet(new URL(process.env.JWKS_URL));
const seen = new Set();

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", async () => {
    const reply = (status, obj) => {
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(obj));
    };
    try {
      const { token, at } = JSON.parse(body);
      const { payload, protectedHeader } = await jwtVerify(token, jwks, {
        issuer: process.env.ISSUER,
        audience: process.env.AUDIENCE,
        algorithms: ["ES256"],
        currentDate: at ? new Date(at * 1000) : undefined,
      });
      if (!payload.jti || seen.has(payload.jti)) {
        return reply(401, { error: "jti already used" });
      }
      seen.add(payload.jti);
      reply(200, { claims: payload, kid: protectedHeader.kid });
    } catch (e) {
      reply(401, { error: String(e.code || e.message) });
    }
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
