"""Which operation a request may run.

- A document with several operations must say which one to run: GraphQL over HTTP
  requires `operationName` then; strawberry would run the first operation instead,
  so a client could run something other than it meant.
- A subscription runs over the WebSocket only: over HTTP it would run without a
  stream to deliver its events on.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError, OperationDefinitionNode, OperationType
from graphql.utilities import get_operation_ast
from starlette.requests import Request
from strawberry.extensions import SchemaExtension

OVER_HTTP = (
    "subscriptions run over a WebSocket on /graphql (the graphql-transport-ws protocol), not over HTTP"
)


class RequireOperationName(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        operations = (
            []
            if document is None
            else [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        )
        # strawberry keeps the operationName the client sent here (`operation_name` falls back to the first)
        if len(operations) > 1 and context._provided_operation_name is None:
            names = ", ".join(op.name.value if op.name else "(anonymous)" for op in operations)
            context.pre_execution_errors = [
                GraphQLError(
                    f"operationName: the document has {len(operations)} operations ({names}); "
                    "name the one to run",
                    extensions={"code": "BAD_USER_INPUT"},
                )
            ]
        elif document is not None and isinstance(getattr(context.context, "request", None), Request):
            operation = get_operation_ast(document, context._provided_operation_name)
            if operation is not None and operation.operation == OperationType.SUBSCRIPTION:
                context.pre_execution_errors = [
                    GraphQLError(OVER_HTTP, extensions={"code": "BAD_USER_INPUT"})
                ]
        yield
