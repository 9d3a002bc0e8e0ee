"""Random typed programs for the language, and their meaning under C semantics.

A program is a small tree (tuples) rendered to Python source for the compiler and
evaluated here by an interpreter written from C11's rules (integer promotion, usual
arithmetic conversions, modulo-2^N conversion) plus BPF's definitions where C leaves
the behaviour undefined: x / 0 == 0, x % 0 == x, shift counts modulo the width,
INT_MIN / -1 wraps.  Nothing here imports the compiler.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

TYPES = {"u8": (8, False), "u16": (16, False), "u32": (32, False), "u64": (64, False),
         "s8": (8, True), "s16": (16, True), "s32": (32, True), "s64": (64, True)}  # fmt: skip
BINOPS = ["+", "-", "*", "//", "%", "&", "|", "^", "<<", ">>"]
CMPOPS = ["<", "<=", ">", ">=", "==", "!="]
AUGOPS = ["+", "-", "*", "&", "|", "^", "<<", ">>", "//", "%"]


def wrap(t: str, v: int) -> int:
    bits, signed = TYPES[t]
    v &= (1 << bits) - 1
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def promote(t: str) -> str:
    return "s32" if TYPES[t][0] < 32 else t


def common(a: str, b: str) -> str:
    a, b = promote(a), promote(b)
    if a == b:
        return a
    (ab, asg), (bb, bsg) = TYPES[a], TYPES[b]
    if asg == bsg:
        return a if ab >= bb else b
    u, s = (a, b) if not asg else (b, a)
    return u if TYPES[u][0] >= TYPES[s][0] else s


def literal_type(v: int) -> str:
    if -(1 << 31) <= v < 1 << 31:
        return "s32"
    if -(1 << 63) <= v < 1 << 63:
        return "s64"
    return "u64"


def arith(op: str, a: int, ta: str, b: int, tb: str) -> tuple[int, str]:
    if op in ("<<", ">>"):
        t = promote(ta)
        a = wrap(t, a)
        n = b & (TYPES[t][0] - 1)
        return wrap(t, a << n if op == "<<" else a >> n), t
    t = common(ta, tb)
    a, b = wrap(t, a), wrap(t, b)
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    elif op in ("//", "%"):
        if b == 0:
            r = 0 if op == "//" else a
        else:
            q = abs(a) // abs(b)
            if (a < 0) != (b < 0):
                q = -q
            r = q if op == "//" else a - q * b
    elif op == "&":
        r = a & b
    elif op == "|":
        r = a | b
    else:
        r = a ^ b
    return wrap(t, r), t


# -- evaluation --------------------------------------------------------------------


class _Return(Exception):
    def __init__(self, value: int) -> None:
        self.value = value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def evaluate(expr: Any, env: dict[str, tuple[int, str]]) -> tuple[int, str]:
    kind = expr[0]
    if kind == "const":
        return expr[1], literal_type(expr[1])
    if kind == "var":
        return env[expr[1]]
    if kind == "bin":
        a, ta = evaluate(expr[2], env)
        b, tb = evaluate(expr[3], env)
        return arith(expr[1], a, ta, b, tb)
    if kind == "neg":
        if expr[1][0] == "const" and expr[1][1] <= 1 << 63:  # -5 is one literal
            return evaluate(("const", -expr[1][1]), env)
        a, t = evaluate(expr[1], env)
        t = promote(t)
        return wrap(t, -a), t
    if kind == "inv":
        a, t = evaluate(expr[1], env)
        t = promote(t)
        return wrap(t, ~a), t
    if kind == "cast":
        a, _ = evaluate(expr[2], env)
        return wrap(expr[1], a), expr[1]
    if kind == "cmp":
        a, ta = evaluate(expr[2], env)
        b, tb = evaluate(expr[3], env)
        t = common(ta, tb)
        a, b = wrap(t, a), wrap(t, b)
        r = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b,
             "!=": a != b}[expr[1]]  # fmt: skip
        return int(r), "s32"
    if kind == "and":
        return int(truth(expr[1], env) and truth(expr[2], env)), "s32"
    if kind == "or":
        return int(truth(expr[1], env) or truth(expr[2], env)), "s32"
    if kind == "not":
        return int(not truth(expr[1], env)), "s32"
    if kind == "call":  # mix(x: u64, y: s32) -> u64: return x * 3 + u64(y) ^ (x >> 7)
        x = wrap("u64", evaluate(expr[1], env)[0])
        y = wrap("s32", evaluate(expr[2], env)[0])
        return wrap("u64", (x * 3 + wrap("u64", y)) ^ (x >> 7)), "u64"
    if kind == "ifexp":
        a, ta = evaluate(expr[2], env)
        b, tb = evaluate(expr[3], env)
        t = common(ta, tb)
        return wrap(t, a if truth(expr[1], env) else b), t
    raise AssertionError(kind)


def truth(expr: Any, env: dict[str, tuple[int, str]]) -> bool:
    return evaluate(expr, env)[0] != 0


def execute(body: list[Any], env: dict[str, tuple[int, str]]) -> None:
    for stmt in body:
        kind = stmt[0]
        if kind == "decl":
            _, name, t, e = stmt
            v, te = evaluate(e, env)
            t = t or te
            env[name] = (wrap(t, v), t)
        elif kind == "set":
            _, name, e = stmt
            t = env[name][1]
            env[name] = (wrap(t, evaluate(e, env)[0]), t)
        elif kind == "aug":
            _, name, op, e = stmt
            old, t = env[name]
            b, tb = evaluate(e, env)
            env[name] = (wrap(t, arith(op, old, t, b, tb)[0]), t)
        elif kind == "if":
            execute(stmt[2] if truth(stmt[1], env) else stmt[3], env)
        elif kind == "for":
            _, name, n, inner = stmt
            for i in range(n):
                env[name] = (i, "s32")
                try:
                    execute(inner, env)
                except _Continue:
                    continue
                except _Break:
                    break
        elif kind == "while":
            _, counter, bound, cond, inner = stmt
            env[counter] = (0, "s32")
            while env[counter][0] < bound and truth(cond, env):
                env[counter] = (env[counter][0] + 1, "s32")
                try:
                    execute(inner, env)
                except _Continue:
                    continue
                except _Break:
                    break
        elif kind == "break":
            raise _Break()
        elif kind == "continue":
            raise _Continue()
        elif kind == "return":
            raise _Return(wrap("u64", evaluate(stmt[1], env)[0]))
        else:
            raise AssertionError(kind)


def run(program: Any, args: list[int]) -> int:
    params, body, final = program
    env = {name: (wrap(t, v), t) for (name, t), v in zip(params, args)}
    try:
        execute(body, env)
        return wrap("u64", evaluate(final, env)[0])
    except _Return as r:
        return r.value


# -- rendering -------------------------------------------------------------------


def render_expr(e: Any) -> str:
    kind = e[0]
    if kind == "const":
        return f"({e[1]})"
    if kind == "var":
        return e[1]
    if kind == "bin":
        return f"({render_expr(e[2])} {e[1]} {render_expr(e[3])})"
    if kind == "neg":
        return f"(-{render_expr(e[1])})"
    if kind == "inv":
        return f"(~{render_expr(e[1])})"
    if kind == "cast":
        return f"{e[1]}({render_expr(e[2])})"
    if kind == "cmp":
        return f"({render_expr(e[2])} {e[1]} {render_expr(e[3])})"
    if kind in ("and", "or"):
        return f"({render_expr(e[1])} {kind} {render_expr(e[2])})"
    if kind == "not":
        return f"(not {render_expr(e[1])})"
    if kind == "call":
        return f"mix({render_expr(e[1])}, {render_expr(e[2])})"
    if kind == "ifexp":
        return f"({render_expr(e[2])} if {render_expr(e[1])} else {render_expr(e[3])})"
    raise AssertionError(kind)


def render_body(body: list[Any], indent: str) -> list[str]:
    out = []
    for stmt in body:
        kind = stmt[0]
        if kind == "decl":
            ann = f": {stmt[2]}" if stmt[2] else ""
            out.append(f"{indent}{stmt[1]}{ann} = {render_expr(stmt[3])}")
        elif kind == "set":
            out.append(f"{indent}{stmt[1]} = {render_expr(stmt[2])}")
        elif kind == "aug":
            out.append(f"{indent}{stmt[1]} {stmt[2]}= {render_expr(stmt[3])}")
        elif kind == "if":
            out.append(f"{indent}if {render_expr(stmt[1])}:")
            out += render_body(stmt[2], indent + "    ") or [indent + "    pass"]
            if stmt[3]:
                out.append(f"{indent}else:")
                out += render_body(stmt[3], indent + "    ")
        elif kind == "for":
            out.append(f"{indent}for {stmt[1]} in range({stmt[2]}):")
            out += render_body(stmt[3], indent + "    ") or [indent + "    pass"]
        elif kind == "while":
            _, counter, bound, cond, inner = stmt
            out.append(f"{indent}{counter}: s32 = 0")
            out.append(f"{indent}while {counter} < {bound} and {render_expr(cond)}:")
            out.append(f"{indent}    {counter} += 1")
            out += render_body(inner, indent + "    ")
        elif kind in ("break", "continue"):
            out.append(f"{indent}{kind}")
        elif kind == "return":
            out.append(f"{indent}return {render_expr(stmt[1])}")
    return out


MIX = """def mix(x: u64, y: s32) -> u64:
    return x * 3 + u64(y) ^ (x >> 7)
"""


def render(program: Any, name: str = "f") -> str:
    params, body, final = program
    sig = ", ".join(f"{n}: {t}" for n, t in params)
    lines = [f"def {name}({sig}) -> u64:"]
    lines += render_body(body, "    ")
    lines.append(f"    return {render_expr(final)}")
    return "\n".join(lines) + "\n"


# -- generation ------------------------------------------------------------------

type_names = st.sampled_from(sorted(TYPES))
_INTERESTING = [0, 1, 2, 3, 7, 8, 31, 32, 63, 64, 127, 128, 255, 256, 0x7FFF, 0x8000, 0xFFFF,
                0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63,
                (1 << 64) - 1]  # fmt: skip


def constants() -> st.SearchStrategy[int]:
    small = st.integers(-300, 300)
    edges = st.sampled_from(_INTERESTING + [-v for v in _INTERESTING if v <= 1 << 63])
    wide = st.integers(-(1 << 63), (1 << 64) - 1)
    return st.one_of(small, edges, wide)


@st.composite
def expressions(draw: Any, names: list[str], depth: int = 3) -> Any:
    if depth == 0 or draw(st.integers(0, 4)) == 0:
        if names and draw(st.integers(0, 2)) > 0:
            return ("var", draw(st.sampled_from(names)))
        return ("const", draw(constants()))
    kind = draw(st.sampled_from(["bin", "bin", "bin", "bin", "neg", "inv", "cast", "cmp", "and",
                                 "or", "not", "ifexp", "call"]))  # fmt: skip
    sub = expressions(names, depth - 1)
    if kind == "call":
        return ("call", draw(sub), draw(sub))
    if kind == "bin":
        return ("bin", draw(st.sampled_from(BINOPS)), draw(sub), draw(sub))
    if kind in ("neg", "inv", "not"):
        return (kind, draw(sub))
    if kind == "cast":
        return ("cast", draw(type_names), draw(sub))
    if kind == "cmp":
        return ("cmp", draw(st.sampled_from(CMPOPS)), draw(sub), draw(sub))
    if kind in ("and", "or"):
        return (kind, draw(sub), draw(sub))
    return ("ifexp", draw(sub), draw(sub), draw(sub))


class _Names:
    def __init__(self) -> None:
        self.n = 0

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


@st.composite
def statements(draw: Any, scope: list[str], names: _Names, depth: int, in_loop: bool) -> Any:
    body: list[Any] = []
    scope = list(scope)
    mutable = [n for n in scope if not n.startswith("k")]  # loop counters stay bounded
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(
            ["decl", "decl", "set", "aug", "if", "for", "while", "return", "break"]
            if depth > 0 else ["decl", "set", "aug", "return", "break"]))  # fmt: skip
        ex = expressions(scope, 2)
        if kind == "decl":
            name = names.fresh("v")
            t = draw(st.one_of(st.none(), type_names))
            body.append(("decl", name, t, draw(ex)))
            scope.append(name)
        elif kind == "set" and mutable:
            body.append(("set", draw(st.sampled_from(mutable)), draw(ex)))
        elif kind == "aug" and mutable:
            body.append(("aug", draw(st.sampled_from(mutable)), draw(st.sampled_from(AUGOPS)),
                         draw(ex)))  # fmt: skip
        elif kind == "if":
            then = draw(statements(scope, names, depth - 1, in_loop))
            other = draw(st.one_of(st.just([]), statements(scope, names, depth - 1, in_loop)))
            body.append(("if", draw(ex), then, other))
        elif kind == "for":
            var = names.fresh("i")
            inner = draw(statements(scope + [var], names, depth - 1, True))
            body.append(("for", var, draw(st.integers(0, 4)), inner))
        elif kind == "while":
            counter = names.fresh("k")
            inner = draw(statements(scope + [counter], names, depth - 1, True))
            body.append(("while", counter, draw(st.integers(0, 4)), draw(ex), inner))
        elif kind == "return" and draw(st.integers(0, 3)) == 0:
            body.append(("if", draw(ex), [("return", draw(ex))], []))
        elif kind == "break" and in_loop:
            body.append(("if", draw(ex), [(draw(st.sampled_from(["break", "continue"])),)], []))
    return body


@st.composite
def programs(draw: Any) -> Any:
    params = [(n, draw(type_names)) for n in ("a", "b", "c")]
    names = _Names()
    body = draw(statements([n for n, _ in params], names, 2, False))
    scope = [n for n, _ in params] + [s[1] for s in body if s[0] == "decl"]
    return params, body, draw(expressions(scope, 3))
