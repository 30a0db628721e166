"""A query cost limit: every field costs 1, times the page sizes (`first`) of the lists above it."""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
)

#: Assumed page size when `first` comes from a variable (unknown at validation time).
VARIABLE_PAGE_GUESS = 100
LIST_ARGUMENTS = ("first", "radius")


def cost_limit_rule(max_cost: int) -> type[ValidationRule]:
    class QueryCostLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            fragments = {
                d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
            }
            for definition in document.definitions:
                if isinstance(definition, OperationDefinitionNode):
                    cost = _cost(definition.selection_set, 1, fragments, set())
                    if cost > max_cost:
                        name = definition.name.value if definition.name else "anonymous"
                        context.report_error(
                            GraphQLError(
                                f"query cost {cost} of operation '{name}' exceeds the limit of {max_cost}; "
                                "ask for smaller pages (first) or fewer nested lists",
                                definition,
                                extensions={"code": "QUERY_TOO_COMPLEX"},
                            )
                        )

    return QueryCostLimit


def _cost(
    selection_set: SelectionSetNode | None,
    multiplier: int,
    fragments: dict[str, FragmentDefinitionNode],
    visiting: set[str],
) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            total += multiplier
            total += _cost(selection.selection_set, multiplier * _page_size(selection), fragments, visiting)
        elif isinstance(selection, InlineFragmentNode):
            total += _cost(selection.selection_set, multiplier, fragments, visiting)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in visiting:
                total += _cost(fragment.selection_set, multiplier, fragments, visiting | {name})
    return total


def _page_size(field: FieldNode) -> int:
    for argument in field.arguments or ():
        if argument.name.value in LIST_ARGUMENTS:
            value: Any = argument.value
            if isinstance(value, IntValueNode):
                return max(int(value.value), 1)
            if isinstance(value, VariableNode):
                return VARIABLE_PAGE_GUESS
    return 1
