// The console's only way to the engine: GraphQL over POST /graphql with the admin's session
// token, which lives in this tab's sessionStorage with its expiry (never in a URL).

const TOKEN_KEY = "loyalty.console.token";
const EXPIRES_KEY = "loyalty.console.expiresAt";
const LOGIN = `mutation($email: String!, $password: String!, $code: String!) {
  login(email: $email, password: $password, totpCode: $code) { token expiresAt } }`;

/** A refused operation: the first error's message, code and reason (extensions). */
export class ApiError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join("; "));
    const first = errors[0] || {};
    this.errors = errors;
    this.code = (first.extensions && first.extensions.code) || "ERROR";
    this.reason = first.extensions && first.extensions.reason;
    this.extensions = first.extensions || {};
  }
}

const expiryListeners = [];
let expiryTimer = null;

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  expiresAt: () => sessionStorage.getItem(EXPIRES_KEY),
  /** Call `listener(reason)` when the session ends by itself (expired or refused). */
  onExpired(listener) {
    expiryListeners.push(listener);
  },
  start(token, expiresAt) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(EXPIRES_KEY, expiresAt);
    this.watch();
  },
  /** Arm the timer that ends the session at its expiry; true while the session is current. */
  watch() {
    clearTimeout(expiryTimer);
    const expires = Date.parse(this.expiresAt() || "");
    if (!this.token() || !(expires > Date.now())) return false;
    // setTimeout holds at most ~24.8 days; sessions are far shorter
    expiryTimer = setTimeout(() => this.expire("Your session has expired: sign in again."), expires - Date.now());
    return true;
  },
  clear() {
    clearTimeout(expiryTimer);
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EXPIRES_KEY);
  },
  expire(reason) {
    if (!this.token()) return;
    this.clear();
    for (const listener of expiryListeners) listener(reason);
  },
};

/** Run one operation; resolves to `data`, rejects with an ApiError. A refused session ends it. */
export async function gql(query, variables = {}) {
  const headers = { "content-type": "application/json" };
  const token = session.token();
  if (token) headers.authorization = `Bearer ${token}`;
  let body;
  try {
    const response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
    body = await response.json();
  } catch (error) {
    throw new ApiError([{ message: `The server could not be reached (${error.message}).`, extensions: { code: "NETWORK" } }]);
  }
  if (body.errors && body.errors.length) {
    const error = new ApiError(body.errors);
    if (error.code === "UNAUTHENTICATED" && token) session.expire(`Signed out: ${error.message}`);
    throw error;
  }
  return body.data;
}

/** Password + TOTP: starts the session or rejects with the server's reason. */
export async function logIn(email, password, code) {
  const data = await gql(LOGIN, { email, password, code });
  session.start(data.login.token, data.login.expiresAt);
}

/** Revokes the session on the server (best effort) and forgets it here. */
export async function logOut() {
  if (session.token()) {
    try {
      await gql("mutation { logout }");
    } catch {
      // already expired or unreachable: forgetting it here is what matters
    }
  }
  session.clear();
}
