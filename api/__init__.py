"""The GraphQL API: schema, Starlette app, authentication, limits and the CLI."""
