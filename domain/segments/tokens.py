"""The tokens of the rule language: words, numbers, strings, punctuation. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.errors import InvalidInput


def rule_error(column: int, message: str) -> InvalidInput:
    return InvalidInput(f"rule: column {column}: {message}")


END = "end"
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![A-Za-z0-9_.]))
      | (?P<raw>-?[0-9][A-Za-z0-9_.]*)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<punct>!=|>=|<=|[=<>()\[\],+\-*/])""",
    re.VERBOSE,
)
_STRING_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "/": "/"}


@dataclass(frozen=True)
class Token:
    """One lexeme: `kind` is word, number, string, raw (a malformed number or a window), punct or end."""

    kind: str
    text: str  # as written
    column: int  # 1-based
    value: str | int | float | None = None  # decoded numbers and strings

    def is_word(self, word: str) -> bool:
        return self.kind == "word" and self.text.lower() == word

    def is_punct(self, punct: str) -> bool:
        return self.kind == "punct" and self.text == punct

    def describe(self) -> str:
        return "end of rule" if self.kind == END else f"'{self.text}'"


def tokenize(text: str) -> list[Token]:
    """The tokens of a rule, ending with an `end` token; InvalidInput at the first unreadable character."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos] == '"':
            token, pos = _string_token(text, pos)
            tokens.append(token)
            continue
        match = _TOKEN.match(text, pos)
        if match is None:
            raise rule_error(pos + 1, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind == "number":
            tokens.append(Token(kind, match[0], pos + 1, _number(match[0], pos + 1)))
        elif kind != "space":
            tokens.append(Token(kind, match[0], pos + 1))
        pos = match.end()
    tokens.append(Token(END, "", len(text) + 1))
    return tokens


def _number(text: str, column: int) -> int | float:
    if any(c in text for c in ".eE"):
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise rule_error(column, f"number '{text}' is out of range")
        return value
    try:
        return int(text)
    except ValueError:
        raise rule_error(column, f"number '{text}' is out of range") from None


def _string_token(text: str, start: int) -> tuple[Token, int]:
    """The string token starting at the quote at `start`, and the position after its closing quote."""
    chars: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return Token("string", text[start : pos + 1], start + 1, "".join(chars)), pos + 1
        if char != "\\":
            chars.append(char)
            pos += 1
            continue
        escape = text[pos + 1 : pos + 2]
        if escape == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[pos + 2 : pos + 6]):
            chars.append(chr(int(text[pos + 2 : pos + 6], 16)))
            pos += 6
        elif escape in _STRING_ESCAPES:
            chars.append(_STRING_ESCAPES[escape])
            pos += 2
        else:
            raise rule_error(
                pos + 1, f"unknown escape '\\{escape}' in a string; use \\\", \\\\, \\n, \\t or \\uXXXX"
            )
    raise rule_error(start + 1, "unterminated string: expected a closing '\"'")
