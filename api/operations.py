"""A document with several operations must say which one to run.

GraphQL over HTTP requires `operationName` then; strawberry would run the
first operation instead, so a client could run something other than it meant.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension


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
        yield
