"""Expression errors that point at the offending part of the text, and the size limits."""

from __future__ import annotations

import ast

from healforge.errors import HealforgeError

MAX_LENGTH = 10_000  # characters of one expression
MAX_DEPTH = 100  # nesting depth of the syntax tree
MAX_NODES = 5_000


class ExpressionError(HealforgeError, ValueError):
    """An expression that is not in the language, or cannot be evaluated.

    The message names the expression, the position (line, column and a caret line) and what is
    allowed there. ``source``, ``line`` and ``column`` (1-based; ``None`` when unknown) are kept.
    """

    def __init__(
        self,
        message: str,
        source: str,
        node: ast.AST | None = None,
        *,
        hint: str | None = None,
        position: tuple[int, int, int, int] | None = None,
    ):
        self.source, self.reason, self.hint = source, message, hint
        if position is None and node is not None and getattr(node, "lineno", None) is not None:
            position = (
                node.lineno,
                node.col_offset,
                node.end_lineno or node.lineno,
                node.end_col_offset or 0,
            )
        self.line = self.column = None
        shown = source if len(source) <= 200 else source[:120] + " ... " + source[-40:]
        text = f"expression {shown!r}: {message}"
        if position is not None:
            line, col, end_line, end_col = position
            lines = source.splitlines() or [""]
            line = min(max(line, 1), len(lines))
            src_line = lines[line - 1]
            # ast offsets count UTF-8 bytes; turn them into characters
            col = len(src_line.encode()[:col].decode(errors="ignore"))
            end = (
                len(src_line.encode()[:end_col].decode(errors="ignore"))
                if end_line == line
                else len(src_line)
            )
            self.line, self.column = line, col + 1
            where = f"line {line}, column {col + 1}" if len(lines) > 1 else f"column {col + 1}"
            text += f" (at {where})"
            if len(src_line) <= 300:
                text += f"\n    {src_line}\n    {' ' * col}{'^' * max(1, end - col)}"
        if hint:
            text += f"\n  {hint}"
        super().__init__(text)

    def __reduce__(self):  # picklable across worker processes
        return _restore_error, (type(self), str(self), dict(self.__dict__))


def _restore_error(cls: type, text: str, state: dict) -> ExpressionError:
    err = cls.__new__(cls)
    Exception.__init__(err, text)
    err.__dict__.update(state)
    return err
