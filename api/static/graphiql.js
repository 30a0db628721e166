// GraphiQL on /graphql, from files this server serves (docs/api.md, "GraphiQL").
// Queries and mutations go over HTTP with the headers typed in the Headers tab;
// subscriptions over graphql-transport-ws, initialised with that tab's Authorization header.
(function () {
  "use strict";

  const endpoint = new URL("/graphql", window.location.href).href;
  const socketUrl = endpoint.replace(/^http/, "ws");
  const http = GraphiQL.createFetcher({ url: endpoint });
  const WELCOME = `# Log in as the admin (\`loyalty demo\` printed the e-mail, the password and
# how to get a TOTP code), then put the token in the Headers tab below:
#   {"Authorization": "Bearer <token>"}
# An API key goes there the same way. Examples: README.md, "Trying the API".
mutation {
  login(email: "admin@demo.local", password: "...", totpCode: "123456") { token expiresAt }
}
`;

  function authorization(headers) {
    for (const [name, value] of Object.entries(headers || {})) {
      if (name.toLowerCase() === "authorization") return String(value);
    }
    return undefined;
  }

  function isSubscription(params) {
    const text = String(params.query || "");
    const named = params.operationName
      ? new RegExp(`subscription\\s+${params.operationName}\\b`).test(text)
      : /^\s*subscription\b/m.test(text.replace(/#[^\n]*/g, ""));
    return named;
  }

  // One graphql-transport-ws connection per subscription, as an async iterator of results.
  function subscribe(params, headers) {
    const queue = [];
    let wake = null;
    let done = false;
    const push = (item) => {
      queue.push(item);
      if (wake) wake();
    };
    const socket = new WebSocket(socketUrl, "graphql-transport-ws");
    socket.onopen = () => {
      const token = authorization(headers);
      socket.send(JSON.stringify({ type: "connection_init", payload: token ? { authorization: token } : {} }));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "connection_ack") {
        socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: params }));
      } else if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "next") {
        push({ value: message.payload });
      } else if (message.type === "error") {
        push({ value: { errors: message.payload } });
        push({ end: true });
      } else if (message.type === "complete") {
        push({ end: true });
      }
    };
    socket.onclose = (event) => {
      if (event.code !== 1000) {
        push({ value: { errors: [{ message: `connection closed: ${event.code} ${event.reason}` }] } });
      }
      push({ end: true });
    };
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      async next() {
        while (!queue.length && !done) await new Promise((resolve) => (wake = resolve));
        const item = queue.shift();
        if (!item || item.end) {
          done = true;
          return { done: true, value: undefined };
        }
        return { done: false, value: item.value };
      },
      async return() {
        done = true;
        socket.close(1000);
        return { done: true, value: undefined };
      },
    };
  }

  function fetcher(params, options) {
    if (isSubscription(params)) return subscribe(params, options && options.headers);
    return http(params, options);
  }

  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: WELCOME,
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
    }),
  );
})();
