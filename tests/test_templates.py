"""Every shipped segment template is a valid rule in both evaluators, created through the API as written."""

from __future__ import annotations

import pytest

from domain.segments.rules import parse_rule, render_rule
from domain.segments.templates import TEMPLATES
from tests.support.graphql import GraphQLClient

CREATE = "mutation($i: SegmentInput!) { createSegment(input: $i) { key kind rule size } }"


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.key for t in TEMPLATES])
def test_a_template_round_trips_through_its_tree(template: object) -> None:
    from domain.segments.templates import Template

    assert isinstance(template, Template)
    tree = parse_rule(template.rule)
    assert parse_rule(render_rule(tree)) == tree


async def test_every_template_is_created_as_written(admin: GraphQLClient) -> None:
    for template in TEMPLATES:
        created = await admin.data(
            CREATE,
            {"i": {"key": template.key, "name": template.name, "kind": template.kind, "rule": template.rule}},
        )
        segment = created["createSegment"]
        assert (segment["key"], segment["kind"]) == (template.key, template.kind)
        assert parse_rule(segment["rule"]) == parse_rule(template.rule)  # stored in its normal form
        assert segment["size"] == 0  # a new program has no members
