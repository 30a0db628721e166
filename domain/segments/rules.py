"""The text rule language of ../shared/segment-conditions.md: `parse_rule` and `render_rule`. Pure.

`parse_rule` reads a rule into the condition tree of `conditions` and refuses
anything malformed with `InvalidInput("rule: column N: ...")` (1-based column of
the fault). `render_rule` writes any tree as its normalised rule.

Normal form. Grouping is not part of a condition's meaning, so the parser
yields *normalised* trees and `normalise` maps any tree to its normal form:
an `All` child of an `All` (an `AnyOf` of an `AnyOf`) is spliced into its
parent unless it is empty, and a single-child `All`/`AnyOf` is replaced by the
child. Empty groups stay: `true` is `All(())`, `false` is `AnyOf(())`, so
`true and x` keeps its `true`. Hence, for every tree `t`:
`parse_rule(render_rule(t)) == normalise(t)`, and for a normalised `n`
exactly `parse_rule(render_rule(n)) == n`.

Beyond the spec's grammar the parser accepts three spellings that the
renderer needs to write every tree:

* `exists(OPERAND) = false` is `{"op": "exists", "value": false}` (`exists(x)`
  alone is `value: true`; `not exists(x)` is `Not` of it, a different tree);
  OPERAND may be an aggregate: `exists(avg(purchase.amount))`.
* `attr("kind") = 1` names an attribute whose path is a word of the language
  (`kind`, `organization`, `true`, `not`, ...), which would otherwise be read
  as that word. The renderer uses it only for such paths.
* `in []` / `not in []`: an empty list.

Strings take the escapes `\\"`, `\\\\`, `\\n`, `\\r`, `\\t` and `\\uXXXX`;
the renderer escapes quotes, backslashes and control characters only. Numbers
with a `.` or an exponent are floats, others ints, so `1.0` stays a float.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from domain.enums import MemberKind
from domain.errors import InvalidInput
from domain.segments.conditions import (
    EVENT_PREFIX,
    EVENT_REFUSED,
    EVENT_TYPE,
    EXPR_OPS,
    FIELD_AGGS,
    KEY,
    MAX_DEPTH,
    MAX_NODES,
    NAME,
    NOT_IN_ARITHMETIC,
    NOT_ROLLED_UP,
    PATH,
    PROPERTY_AGGS,
    WINDOWLESS_AGGS,
    Agg,
    All,
    AnyOf,
    Arith,
    AttrCompare,
    ConditionParser,
    DateCompare,
    DateFn,
    EventCompare,
    Expr,
    ExprCompare,
    HasTag,
    InOrganization,
    InOrganizationTree,
    InSegment,
    KindIs,
    Ledger,
    LedgerCompare,
    LedgerKind,
    Metric,
    MetricCompare,
    Node,
    Not,
    Number,
    Op,
    OrgMetricCompare,
    Scalar,
    Value,
    VersionCompare,
    WhereTest,
    WhereValue,
    Window,
    normalise_compare,
    parse_window,
    reads_measure,
)
from domain.segments.tokens import END, Token, rule_error, tokenize

__all__ = ["RESERVED_WORDS", "normalise", "parse_rule", "render_rule"]

#: Single words that a rule reads as language, never as an attribute path (compared case-insensitively).
RESERVED_WORDS = frozenset(
    {"and", "or", "not", "in", "contains", "between", "where", "true", "false", "kind", "organization"}
)

OPERATORS: dict[Op, str] = {
    Op.EQ: "=",
    Op.NE: "!=",
    Op.GT: ">",
    Op.GTE: ">=",
    Op.LT: "<",
    Op.LTE: "<=",
    Op.IN: "in",
    Op.NOT_IN: "not in",
    Op.CONTAINS: "contains",
    Op.BETWEEN: "between",
}
_OP_OF_TEXT = {text: op for op, text in OPERATORS.items()}
_KNOWN_OPERATORS = ", ".join(OPERATORS.values())
_KNOWN_AGGS = ", ".join(agg.value for agg in Agg)
_MAX_ORGANIZATION = 128


@dataclass(frozen=True)
class OrgScoped:
    """The operand `org.AGG(...)`: an aggregate over the member's organization and those below it."""

    metric: Metric


@dataclass(frozen=True)
class _DateOperand:
    """Version 2: `days_since(PATH)` or `days_to_anniversary(PATH)`."""

    path: str
    fn: DateFn


@dataclass(frozen=True)
class _VersionOperand:
    """Version 2: `version(PATH)`."""

    path: str


_DATE_FNS = {fn.value: fn for fn in DateFn}


#: An attribute path, an aggregate, a ledger operand, an organization roll-up or a v2 function.
@dataclass(frozen=True)
class _EventOperand:
    """`event.PATH` (promotion conditions only): the event being earned on."""

    path: str


Operand = str | _EventOperand | Metric | Ledger | OrgScoped | _DateOperand | _VersionOperand
#: The prefix of an organization roll-up: `org.sum(sale.amount, 90d)`.
ORG_PREFIX = "org."
#: The ledger operands of version 2, by their rule word.
LEDGER_WORDS = {f"points_{kind.value}": kind for kind in LedgerKind}
_ARITH_TEXT = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_ARITH_OF_TEXT = {text: name for name, text in _ARITH_TEXT.items()}
_PRECEDENCE = {"add": 1, "sub": 1, "mul": 2, "div": 2}
_COLUMN = re.compile(r"rule: column ([0-9]+):")
_COMPARES_EXPRESSIONS = "does not compare expressions; use =, !=, >, >=, < or <="


def _error_column(error: InvalidInput) -> int:
    found = _COLUMN.match(str(error))
    return int(found.group(1)) if found else 0


# ---------- normal form ----------


def normalise(node: Node) -> Node:
    """The normal form of a tree (see the module docstring); same meaning, canonical grouping."""
    match node:
        case All(children) | AnyOf(children):
            return _group(type(node), [normalise(c) for c in children])
        case Not(child):
            return Not(normalise(child))
    return node


def _group(kind: type[All] | type[AnyOf], items: list[Node]) -> Node:
    """`kind` of `items`, with non-empty groups of the same kind spliced in and one item unwrapped."""
    children: list[Node] = []
    for item in items:
        if isinstance(item, kind) and item.children:
            children.extend(item.children)
        else:
            children.append(item)
    return children[0] if len(children) == 1 else kind(tuple(children))


# ---------- text -> tree ----------


def parse_rule(text: str, *, events: bool = False) -> Node:
    """The normalised tree of a rule; InvalidInput naming the column of the first fault.
    `events`: the rule may read the event (`event.amount`): promotion conditions only."""
    return _RuleParser(text, events=events).rule()


class _ValueChecks(ConditionParser):
    """conditions.py's value rules, failing with a rule column instead of a JSON path."""

    def __init__(self, column: int) -> None:
        super().__init__()
        self.column = column

    def fail(self, path: str, message: str) -> InvalidInput:
        return rule_error(self.column, message)


class _RuleParser:
    """Recursive descent over the tokens of one rule; `nesting` bounds the recursion."""

    def __init__(self, text: str, *, events: bool = False) -> None:
        self.events = events
        self.tokens = tokenize(text)
        self.pos = 0
        self.nesting = 0
        self.leaves = 0
        self.columns: dict[int, tuple[Node, int]] = {}  # id -> (node kept alive, column)

    # --- token helpers

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def fail(self, token: Token, message: str) -> InvalidInput:
        return rule_error(token.column, message)

    def expected(self, what: str, token: Token | None = None) -> InvalidInput:
        token = token or self.peek()
        return self.fail(token, f"expected {what}, found {token.describe()}")

    def expect(self, punct: str, where: str) -> Token:
        if not self.peek().is_punct(punct):
            raise self.expected(f"'{punct}' {where}")
        return self.advance()

    def node(self, node: Node, column: int) -> Node:
        self.columns[id(node)] = (node, column)
        return node

    # --- grammar

    def rule(self) -> Node:
        node = self.or_()
        if self.peek().kind != END:
            raise self.expected("'and', 'or' or the end of the rule")
        self.check_limits(node)
        return node

    def or_(self) -> Node:
        return self.chain("or", AnyOf, self.and_)

    def and_(self) -> Node:
        return self.chain("and", All, self.unary)

    def chain(self, word: str, kind: type[All] | type[AnyOf], item: Callable[[], Node]) -> Node:
        column = self.peek().column
        items: list[Node] = [item()]
        while self.peek().is_word(word):
            self.advance()
            items.append(item())
        return self.node(_group(kind, items), column)

    def unary(self) -> Node:
        token = self.peek()
        if token.is_punct("("):
            saved = (self.pos, self.nesting, self.leaves)
            try:  # `(count(a) + count(b)) / 2 > 1` is a comparison; `(a = 1 or b = 2)` a group
                self.leaves += 1
                return self.node(self.expr_comparison(), token.column)
            except InvalidInput as error:
                self.pos, self.nesting, self.leaves = saved
                try:
                    return self.group_or_not(token)
                except InvalidInput as group_error:
                    if _error_column(error) > _error_column(group_error):
                        raise error from None
                    raise
        return self.group_or_not(token)

    def group_or_not(self, token: Token) -> Node:
        if token.is_word("not") or token.is_punct("("):
            self.nesting += 1
            if self.nesting > MAX_DEPTH:
                raise self.fail(token, f"a condition nests at most {MAX_DEPTH} levels")
            self.advance()
            if token.is_word("not"):
                node = self.node(Not(self.unary()), token.column)
            else:
                node = self.or_()
                self.expect(")", f"to close the '(' at column {token.column}")
            self.nesting -= 1
            return node
        self.leaves += 1
        if self.leaves > MAX_NODES:
            raise self.fail(token, f"a condition has at most {MAX_NODES} nodes")
        return self.node(self.atom(), token.column)

    def atom(self) -> Node:
        token = self.peek()
        if token.kind == "number":
            return self.expr_comparison()
        if token.kind != "word":
            raise self.expected("a condition")
        word = token.text.lower()
        if self.peek(1).is_punct("("):
            return self.call(token, word)
        if word == "true" or word == "false":
            self.advance()
            return All(()) if word == "true" else AnyOf(())
        if word == "kind":
            return self.kind()
        if word == "organization":
            return self.organization()
        if word in RESERVED_WORDS:
            raise self.expected("a condition")
        return self.comparison(self.path_operand())

    def call(self, token: Token, word: str) -> Node:
        if word in ("in_segment", "has_tag"):
            self.advance()
            self.expect("(", f"after '{token.text}'")
            key = self.key_string("segment key" if word == "in_segment" else "tag key")
            self.expect(")", "after the key")
            return InSegment(key) if word == "in_segment" else HasTag(key)
        if word == "exists":
            return self.exists()
        if word == "in_organization":
            return self.in_organization()
        return self.comparison(self.operand(), token.column)

    def operand(self) -> Operand:
        """An attribute path, `attr("PATH")`, an aggregate or a ledger operand."""
        token = self.peek()
        if token.kind == "word" and self.peek(1).is_punct("("):
            if token.text.lower() in LEDGER_WORDS:
                return self.ledger()
            if token.text.lower().startswith(ORG_PREFIX):
                return self.org_metric()
            if token.text.lower() == "attr":
                self.advance()
                self.expect("(", "after 'attr'")
                path = self.path_string()
                self.expect(")", "after the attribute path")
                return path
            if token.text.lower() in _DATE_FNS or token.text.lower() == "version":
                return self.function_operand()
            return self.metric()
        if token.kind == "word" and token.text.lower() not in RESERVED_WORDS:
            return self.path_operand()
        raise self.expected("an attribute path or an aggregate such as count(visit, 30d)")

    def path_operand(self) -> str | _EventOperand:
        """An attribute path, or `event.PATH` (the event itself) where the rule may read it."""
        token = self.peek()
        if not token.text.lower().startswith(EVENT_PREFIX):
            return self.path()
        if not self.events:
            raise self.fail(token, f"{token.text}: {EVENT_REFUSED}")
        path = self.path()[len(EVENT_PREFIX) :]
        if not path:
            raise self.fail(token, f"'{token.text}' names no event value such as event.amount")
        return _EventOperand(path)

    def function_operand(self) -> _DateOperand | _VersionOperand:
        """Version 2: `days_since(PATH)`, `days_to_anniversary(PATH)` or `version(PATH)`."""
        token = self.advance()
        name = token.text.lower()
        self.expect("(", f"after '{token.text}'")
        inner = self.peek()
        if inner.kind != "word":
            raise self.expected("an attribute path such as birthDate or device.appVersion")
        path = self.path()
        self.expect(")", "after the attribute path")
        if name == "version":
            return _VersionOperand(path)
        return _DateOperand(path, _DATE_FNS[name])

    def path(self) -> str:
        token = self.advance()
        if not PATH.match(token.text):
            raise self.fail(token, f"'{token.text}' is not an attribute path such as city or device.os")
        return token.text

    def path_string(self) -> str:
        token = self.peek()
        path = self.string("an attribute path in double quotes")
        if not PATH.match(path):
            raise self.fail(
                token, f'{json.dumps(path)} is not an attribute path such as "city" or "device.os"'
            )
        return path

    def exists(self) -> Node:
        self.advance()
        self.expect("(", "after 'exists'")
        token = self.peek()
        operand = self.operand()
        if isinstance(operand, Metric) and operand.agg == Agg.TOP:
            raise self.fail(token, "top compares only with =, !=, in or not in")
        self.expect(")", "after the operand of exists")
        value = True
        if self.peek().is_punct("="):
            self.advance()
            token = self.peek()
            if not (token.is_word("true") or token.is_word("false")):
                raise self.expected("true or false after 'exists(...) ='")
            value = self.advance().text.lower() == "true"
        return self.compare(operand, Op.EXISTS, value)

    def comparison(self, operand: Operand, column: int | None = None) -> Node:
        if isinstance(operand, (Metric, Ledger)):
            return self.measure_comparison(operand, column)
        op = self.operator()
        token = self.peek()
        if token.kind == "word" and not (token.is_word("true") or token.is_word("false")):
            raise self.fail(
                token,
                f"the right side of '{OPERATORS[op]}' must be a literal "
                f"(a number, a string, true, false or a [list]), found {token.describe()}",
            )
        value = self.literal()
        checks = _ValueChecks(token.column)
        if isinstance(operand, _DateOperand):
            return self.compare(operand, op, checks.date_value(op, value, ""))
        if isinstance(operand, _VersionOperand):
            return self.compare(operand, op, checks.version_value(op, value, ""))
        if isinstance(operand, OrgScoped):  # a roll-up compares with a literal only (not in arithmetic)
            return self.compare(operand, op, checks.metric_value(op, value, ""))
        return self.compare(operand, op, checks.attr_value(op, value, ""))

    @staticmethod
    def compare(operand: Operand, op: Op, value: Value) -> Node:
        if isinstance(operand, OrgScoped):
            return OrgMetricCompare(operand.metric, op, value)
        if isinstance(operand, _DateOperand):
            return DateCompare(operand.path, operand.fn, op, value)
        if isinstance(operand, _VersionOperand):
            return VersionCompare(operand.path, op, value)
        if isinstance(operand, Metric):
            return MetricCompare(operand, op, value)
        if isinstance(operand, Ledger):
            return LedgerCompare(operand, op, value)
        if isinstance(operand, _EventOperand):
            return EventCompare(operand.path, op, value)
        return AttrCompare(operand, op, value)

    # --- arithmetic (version 2)

    def measure_comparison(self, first: Metric | Ledger, column: int | None) -> Node:
        """An aggregate or ledger operand, maybe in arithmetic, compared with a literal or an expression."""
        left = self.expr_tail(first, column)
        op_token = self.peek()
        op = self.operator()
        token = self.peek()
        literal = token.kind in ("string", "raw") or token.is_punct("[")
        literal = literal or token.is_word("true") or token.is_word("false")
        literal = literal or (token.kind == "number" and not self.arithmetic_at(1))
        if left is first and literal:
            value = self.literal()
            checks = _ValueChecks(token.column)
            if isinstance(first, Metric) and first.agg == Agg.TOP:
                return self.compare(first, op, checks.top_value(op, value, ""))
            return self.compare(first, op, checks.metric_value(op, value, ""))
        if left is first:
            self.check_arithmetic(first, column)
        if op not in EXPR_OPS:
            raise self.fail(op_token, f"'{OPERATORS[op]}' {_COMPARES_EXPRESSIONS}")
        return normalise_compare(left, op, self.expr())

    def expr_comparison(self) -> Node:
        left = self.expr()
        op_token = self.peek()
        op = self.operator()
        if op not in EXPR_OPS:
            raise self.fail(op_token, f"'{OPERATORS[op]}' {_COMPARES_EXPRESSIONS}")
        right_token = self.peek()
        right = self.expr()
        if not (reads_measure(left) or reads_measure(right)):
            raise self.fail(
                right_token, "one side of a comparison must hold an aggregate or a ledger operand"
            )
        return normalise_compare(left, op, right)

    def arithmetic_at(self, ahead: int) -> bool:
        token = self.peek(ahead)
        if token.kind == "punct" and token.text in _ARITH_OF_TEXT:
            return True
        return token.kind == "number" and token.text.startswith("-")  # `a -5`: a minus 5

    def check_arithmetic(self, metric: Metric | Ledger, column: int | None) -> None:
        if isinstance(metric, Metric) and metric.agg in NOT_IN_ARITHMETIC:
            hint = " (top compares with =, !=, in or not in and a literal)" if metric.agg == Agg.TOP else ""
            raise rule_error(
                column or self.peek().column,
                f"{metric.agg.value}(...) cannot stand in arithmetic or be compared with an expression{hint}",
            )

    def expr(self) -> Expr:
        return self.additive(self.multiplicative(self.factor()))

    def expr_tail(self, first: Metric | Ledger, column: int | None) -> Expr:
        if not self.arithmetic_at(0):
            return first
        self.check_arithmetic(first, column)
        return self.additive(self.multiplicative(first))

    def additive(self, left: Expr) -> Expr:
        while True:
            token = self.peek()
            if token.is_punct("+") or token.is_punct("-"):
                self.advance()
                name = _ARITH_OF_TEXT[token.text]
                left = Arith(name, left, self.multiplicative(self.factor()))
            elif token.kind == "number" and token.text.startswith("-"):
                self.advance()
                assert isinstance(token.value, (int, float))
                left = Arith("sub", left, self.multiplicative(Number(-token.value)))
            else:
                return left

    def multiplicative(self, left: Expr) -> Expr:
        while self.peek().is_punct("*") or self.peek().is_punct("/"):
            name = _ARITH_OF_TEXT[self.advance().text]
            left = Arith(name, left, self.factor())
        return left

    def factor(self) -> Expr:
        token = self.peek()
        if token.kind == "number":
            self.advance()
            assert isinstance(token.value, (int, float))
            return Number(token.value)
        if token.is_punct("("):
            self.nesting += 1
            if self.nesting > MAX_DEPTH:
                raise self.fail(token, f"a condition nests at most {MAX_DEPTH} levels")
            self.advance()
            inner = self.expr()
            self.expect(")", f"to close the '(' at column {token.column}")
            self.nesting -= 1
            return inner
        if token.kind == "word" and self.peek(1).is_punct("("):
            if token.text.lower() in LEDGER_WORDS:
                return self.ledger()
            if token.text.lower() not in ("attr", "exists", "in_segment", "has_tag"):
                metric = self.metric()
                self.check_arithmetic(metric, token.column)
                return metric
        if token.kind == "raw":
            raise self.fail(token, f"malformed number '{token.text}'")
        raise self.expected("an aggregate, a ledger operand such as points_earned(30d), a number or '('")

    def ledger(self) -> Ledger:
        token = self.advance()
        kind = LEDGER_WORDS[token.text.lower()]
        self.expect("(", f"after '{token.text}'")
        window = None
        if not self.peek().is_punct(")"):
            window = self.window()
        self.expect(")", "after the window")
        return Ledger(kind, window)

    def operator(self) -> Op:
        token = self.peek()
        text = token.text.lower() if token.kind in ("word", "punct") else ""
        if text == "not" and self.peek(1).is_word("in"):
            self.advance()
            text = "not in"
        if text in _OP_OF_TEXT:
            self.advance()
            return _OP_OF_TEXT[text]
        if token.kind == "word":
            raise self.fail(token, f"unknown operator '{token.text}'; expected one of: {_KNOWN_OPERATORS}")
        raise self.expected(f"an operator (one of: {_KNOWN_OPERATORS})")

    # --- literals

    def literal(self) -> Value:
        if self.peek().is_punct("["):
            self.advance()
            items: list[Scalar] = []
            while not self.peek().is_punct("]"):
                if items:
                    self.expect(",", "between list values")
                items.append(self.scalar())
            self.advance()
            return items
        return self.scalar()

    def scalar(self) -> Scalar:
        token = self.peek()
        if token.kind in ("number", "string"):
            self.advance()
            assert isinstance(token.value, (str, int, float))
            return token.value
        if token.is_word("true") or token.is_word("false"):
            self.advance()
            return token.text.lower() == "true"
        if token.kind == "raw":
            raise self.fail(token, f"malformed number '{token.text}'")
        raise self.expected("a number, a string, true or false")

    def string(self, what: str) -> str:
        token = self.peek()
        if token.kind != "string":
            raise self.expected(what)
        self.advance()
        assert isinstance(token.value, str)
        return token.value

    def key_string(self, what: str) -> str:
        token = self.peek()
        key = self.string(f"a {what} in double quotes")
        if not KEY.match(key):
            raise self.fail(token, f"expected a {what} matching [A-Za-z0-9_-]{{1,64}}")
        return key

    # --- predicates

    def kind(self) -> Node:
        self.advance()
        self.expect("=", "after 'kind'")
        token = self.advance()
        raw = token.value if token.kind == "string" else token.text if token.kind == "word" else None
        if not isinstance(raw, str) or raw.upper() not in MemberKind.__members__:
            raise self.fail(token, f"unknown kind {token.describe()}; expected CUSTOMER, DEALER or EMPLOYEE")
        return KindIs(MemberKind(raw.upper()))

    def organization(self) -> Node:
        self.advance()
        self.expect("=", "after 'organization'")
        token = self.peek()
        external_id = self.string("an organization externalId in double quotes")
        if not 0 < len(external_id) <= _MAX_ORGANIZATION:
            raise self.fail(token, f"an organization externalId has 1 to {_MAX_ORGANIZATION} characters")
        return InOrganization(external_id)

    def in_organization(self) -> Node:
        """`in_organization("ID")`: the member's organization is ID or one below it."""
        self.advance()
        self.expect("(", "after 'in_organization'")
        token = self.peek()
        external_id = self.string("an organization externalId in double quotes")
        if not 0 < len(external_id) <= _MAX_ORGANIZATION:
            raise self.fail(token, f"an organization externalId has 1 to {_MAX_ORGANIZATION} characters")
        self.expect(")", "after the organization externalId")
        return InOrganizationTree(external_id)

    # --- aggregates

    def org_metric(self) -> OrgScoped:
        """`org.AGG(...)`: the aggregate after the prefix, read as any aggregate (its column shifted)."""
        token = self.peek()
        self.tokens[self.pos] = Token("word", token.text[len(ORG_PREFIX) :], token.column + len(ORG_PREFIX))
        metric = self.metric()
        if metric.agg in NOT_ROLLED_UP:
            raise rule_error(token.column, f"org.{metric.agg.value}(...) is not an organization roll-up")
        return OrgScoped(metric)

    def metric(self) -> Metric:
        token = self.advance()
        try:
            agg = Agg(token.text.lower())
        except ValueError:
            raise self.fail(
                token, f"unknown aggregate '{token.text}'; expected one of: {_KNOWN_AGGS}"
            ) from None
        self.expect("(", f"after '{token.text}'")
        event, field = self.event_and_field(agg)
        window = None
        where_ = "after the event type"
        if self.peek().is_punct(","):
            self.advance()
            window = self.window()
            where_ = "after the window"
        pairs: tuple[tuple[str, WhereValue], ...] = ()
        if self.peek().is_word("where"):
            self.advance()
            pairs = self.where()
            where_ = "after the where clause"
        self.expect(")", where_)
        return Metric(event, agg, field, None if agg in WINDOWLESS_AGGS else window, pairs)

    def event_and_field(self, agg: Agg) -> tuple[str, str | None]:
        token = self.peek()
        if token.kind != "word":
            raise self.expected("an event type such as visit or purchase.amount")
        self.advance()
        event, _, field = token.text.partition(".")
        if not EVENT_TYPE.match(event):
            raise self.fail(token, f"'{event}' is not an event type matching [a-z][a-z0-9_]{{0,63}}")
        if agg in PROPERTY_AGGS and (not field or field == "amount"):
            raise self.fail(token, f"{agg.value} needs a property: {event}.PROPERTY (not amount)")
        if agg in FIELD_AGGS and not field:
            raise self.fail(token, f"{agg.value} needs a field: {event}.amount or {event}.PROPERTY")
        if agg not in FIELD_AGGS and agg not in PROPERTY_AGGS and field:
            raise self.fail(token, f"{agg.value} takes no field")
        if field and not NAME.match(field):
            raise self.fail(token, f"'{field}' is not a field name")
        return event, field or None

    def window(self) -> Window | None:
        token = self.advance()
        if token.kind not in ("word", "raw", "number"):
            raise self.expected("a window such as 30d, 12h or all", token)
        window: Window | None = parse_window(token.text, lambda message: rule_error(token.column, message))
        return window

    def where(self) -> tuple[tuple[str, WhereValue], ...]:
        pairs: dict[str, WhereValue] = {}
        while True:
            token = self.peek()
            if token.kind != "word" or not NAME.match(token.text):
                raise self.expected("a property name")
            if token.text in pairs:
                raise self.fail(token, f"property '{token.text}' appears twice in the where clause")
            self.advance()
            pairs[token.text] = self.where_test()
            if not self.peek().is_punct(","):
                return tuple(pairs.items())
            self.advance()

    def where_test(self) -> WhereValue:
        """`= literal`, `!= literal`, `in [..]` or `not in [..]` after a where property."""
        token = self.peek()
        if token.is_punct("="):
            self.advance()
            return _ValueChecks(self.peek().column).scalar(self.scalar(), "")
        if token.is_punct("!="):
            self.advance()
            return WhereTest(Op.NE, (_ValueChecks(self.peek().column).scalar(self.scalar(), ""),))
        op = Op.IN
        if token.is_word("not") and self.peek(1).is_word("in"):
            self.advance()
            op = Op.NOT_IN
        elif not token.is_word("in"):
            raise self.expected("'=', '!=', 'in' or 'not in' after the property name")
        self.advance()
        if not self.peek().is_punct("["):
            raise self.expected(f"a [list] after '{OPERATORS[op]}'")
        column = self.peek().column
        values = _ValueChecks(column).scalars(self.literal(), "")
        return WhereTest(op, tuple(values))

    # --- limits

    def check_limits(self, root: Node) -> None:
        """The node and depth limits of conditions.py, at the column of the first node past them."""
        count = 0
        pending: list[tuple[Node, int]] = [(root, 0)]
        while pending:
            node, depth = pending.pop()
            count += 1
            column = self.columns.get(id(node), (node, 1))[1]
            if count > MAX_NODES:
                raise rule_error(column, f"a condition has at most {MAX_NODES} nodes")
            if depth > MAX_DEPTH:
                raise rule_error(column, f"a condition nests at most {MAX_DEPTH} levels")
            match node:
                case All(children) | AnyOf(children):
                    pending.extend((c, depth + 1) for c in reversed(children))
                case Not(child):
                    pending.append((child, depth + 1))
                case ExprCompare(left, _, right):
                    for expr in (left, right):
                        count, deepest = _expr_size(expr, depth + 1, count)
                        if count > MAX_NODES:
                            raise rule_error(column, f"a condition has at most {MAX_NODES} nodes")
                        if deepest > MAX_DEPTH:
                            raise rule_error(column, f"a condition nests at most {MAX_DEPTH} levels")


def _expr_size(expr: Expr, depth: int, count: int) -> tuple[int, int]:
    """(nodes counted so far, `expr`'s included; its deepest level) as conditions.py counts them."""
    count += 1
    if isinstance(expr, Arith):
        count, left = _expr_size(expr.left, depth + 1, count)
        count, right = _expr_size(expr.right, depth + 1, count)
        return count, max(left, right)
    return count, depth


# ---------- tree -> text ----------


def render_rule(node: Node) -> str:
    """The normalised rule of a tree; `parse_rule` reads it back to `normalise(node)`."""
    return _render(normalise(node))


def _render(node: Node) -> str:
    match node:
        case All(()):
            return "true"
        case AnyOf(()):
            return "false"
        case All(children):
            return " and ".join(_nested(c) for c in children)
        case AnyOf(children):
            return " or ".join(_nested(c) for c in children)
        case Not(child):
            return f"not {_nested(child)}"
        case AttrCompare(path, op, value):
            return _comparison(_path(path), op, value)
        case MetricCompare(metric, op, value):
            return _comparison(_metric(metric), op, value)
        case InSegment(key):
            return f"in_segment({_string(key)})"
        case HasTag(key):
            return f"has_tag({_string(key)})"
        case KindIs(kind):
            return f"kind = {kind.value}"
        case InOrganization(external_id):
            return f"organization = {_string(external_id)}"
        case LedgerCompare(ledger, op, value):
            return _comparison(_ledger(ledger), op, value)
        case ExprCompare(left, op, right):
            return f"{_expr(left)} {OPERATORS[op]} {_expr(right)}"
        case InOrganizationTree(external_id):
            return f"in_organization({_string(external_id)})"
        case OrgMetricCompare(metric, op, value):
            return _comparison(ORG_PREFIX + _metric(metric), op, value)
        case DateCompare(path, fn, op, value):
            return _comparison(f"{fn.value}({path})", op, value)
        case VersionCompare(path, op, value):
            return _comparison(f"version({path})", op, value)
        case EventCompare(path, op, value):
            return _comparison(EVENT_PREFIX + path, op, value)
    raise AssertionError(node)


def _ledger(ledger: Ledger) -> str:
    return f"points_{ledger.kind.value}({ledger.window or 'all'})"


def _expr(expr: Expr, parent: int = 0, right: bool = False) -> str:
    """An expression, parenthesised where its parent binds tighter (or as tight, on the right)."""
    match expr:
        case Number(value):
            return _literal(value)
        case Ledger():
            return _ledger(expr)
        case Arith(op, left, right_expr):
            mine = _PRECEDENCE[op]
            text = f"{_expr(left, mine)} {_ARITH_TEXT[op]} {_expr(right_expr, mine, True)}"
            return f"({text})" if mine < parent or (right and mine == parent) else text
    return _metric(expr)


def _nested(node: Node) -> str:
    """A child of and/or/not: non-empty groups in parentheses, the rest as is."""
    if isinstance(node, (All, AnyOf)) and node.children:
        return f"({_render(node)})"
    return _render(node)


def _comparison(operand: str, op: Op, value: Value) -> str:
    if op == Op.EXISTS:
        return f"exists({operand})" if value is True else f"exists({operand}) = false"
    return f"{operand} {OPERATORS[op]} {_literal(value)}"


def _path(path: str) -> str:
    """An attribute path as written; `attr("...")` where it would read as a word or as `event.`."""
    quoted = path.lower() in RESERVED_WORDS or path.lower().startswith(EVENT_PREFIX)
    return f"attr({_string(path)})" if quoted else path


def _metric(metric: Metric) -> str:
    text = metric.event if metric.field is None else f"{metric.event}.{metric.field}"
    if metric.window is not None:
        text += f", {metric.window}"
    if metric.where:
        text += " where " + ", ".join(_where_test(name, value) for name, value in metric.where)
    return f"{metric.agg.value}({text})"


def _where_test(name: str, value: WhereValue) -> str:
    if not isinstance(value, WhereTest):
        return f"{name} = {_literal(value)}"
    if value.op == Op.NE:
        return f"{name} != {_literal(value.values[0])}"
    return f"{name} {OPERATORS[value.op]} {_literal(list(value.values))}"


def _literal(value: Value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    return repr(value)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def _string(text: str) -> str:
    """A double-quoted string: quotes, backslashes and control characters escaped, the rest literal."""
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m[0]) or f"\\u{ord(m[0]):04x}", text) + '"'
