"""Compile errors that point at the user's Python source, as a C compiler's do."""

from __future__ import annotations

import ast
from typing import Optional

from ..errors import PyBPFError


class CompileError(PyBPFError):
    """A construct the language does not accept, with ``file:line:col`` of the culprit."""

    def __init__(self, message: str, where: Optional[str] = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.bare = message
        self.where = where


class Source:
    """One function's source text and where it sits in its file, for error positions."""

    def __init__(self, filename: str, first_line: int, text: str) -> None:
        self.filename, self.first_line, self.text = filename, first_line, text

    def where(self, node: Optional[ast.AST]) -> str:
        line = getattr(node, "lineno", 1) + self.first_line - 1
        col = getattr(node, "col_offset", 0) + 1
        return f"{self.filename}:{line}:{col}"

    def line_of(self, node: Optional[ast.AST]) -> int:
        return getattr(node, "lineno", 1) + self.first_line - 1

    def error(self, node: Optional[ast.AST], message: str) -> CompileError:
        return CompileError(message, self.where(node))
