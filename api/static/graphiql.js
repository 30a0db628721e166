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

  // Whether GraphiQL runs a subscription: the operation it names (or the only one) in the text it
  // sends, parsed by the graphql-js that the GraphiQL bundle carries (its own documentAST lags the
  // editor by 100 ms). Text that does not parse goes over HTTP, where the server names the error.
  function isSubscription(params) {
    try {
      const document = GraphiQL.GraphQL.parse(params.query);
      const operation = GraphiQL.GraphQL.getOperationAST(document, params.operationName || undefined);
      return Boolean(operation) && operation.operation === "subscription";
    } catch (error) {
      return false;
    }
  }

  // One graphql-transport-ws connection per subscription, as an async iterator of results. The
  // socket is closed as soon as the subscription ends: completed, failed, or stopped by the user.
  // (GraphiQL's built-in graphql-ws client would retry a rejected connection_init for ~40 s
  // before showing why; this one shows the server's close reason at once.)
  function subscribe(params, headers) {
    const queue = [];
    let wake = null;
    let done = false;
    const push = (item) => {
      queue.push(item);
      if (wake) wake();
    };
    const end = () => {
      push({ end: true });
      if (socket.readyState <= WebSocket.OPEN) socket.close(1000);
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
        end();
      } else if (message.type === "complete") {
        end();
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
        end();
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
