"""A :class:`~pybpf.tool.Tool` whose BPF side is written in the language.

The tool lists its ``@program`` functions; ``build`` compiles them against the
target's BTF (the one ``pybpf run`` loaded).  ``pybpf run my_tool.py`` then works as
for tools written with ``Asm``.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from ..object import ObjectSpec
from ..tool import Tool
from .program import Compiled, build


class LangTool(Tool):
    #: the ``@program`` functions to load
    programs: Sequence[Any] = ()
    compiled: Optional[Compiled] = None

    def build(self, args: argparse.Namespace) -> ObjectSpec:
        btf = getattr(args, "target_btf", None)
        if btf is None:
            from ..runner import load_btf  # the same BTF pybpf run relocates against

            btf = load_btf(getattr(args, "btf", None))
        self.compiled = build(self.name, list(self.programs), btf)
        return self.compiled.spec

    def explain_rejection(self, program: str, log: str) -> Optional[str]:
        """``file:line`` of the Python source the verifier refused, if known."""
        return None if self.compiled is None else self.compiled.explain(program, log)
