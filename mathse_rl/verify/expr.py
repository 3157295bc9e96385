"""A small, bounded parser and evaluator for the LaTeX arithmetic answers are written in.

This is the fast path: it turns ``\\frac{\\sqrt{3}}{2}``, ``x^2+2x+1``, ``1.5\\times 10^{-3}``
into a tuple tree and evaluates it with complex floats, at sample points when the answer has
variables. It never calls ``eval``; it refuses anything it does not know (the caller then
falls back to the symbolic worker pool), and every step is bounded: at most
``MAX_TOKENS`` tokens, ``MAX_DEPTH`` nesting, and overflow is caught, so a power tower
costs microseconds.

>>> evaluate(parse(r"\\frac{6}{2}"))
(3+0j)
>>> sorted(free_vars(parse("x^2+2xy")))
['x', 'y']
"""

from __future__ import annotations

import cmath
import math
import re
from fractions import Fraction
from typing import Mapping

MAX_TOKENS = 400
MAX_DEPTH = 60


class ExprError(ValueError):
    """The string is not an expression this parser handles."""


class SideBySide(ExprError):
    """Two numbers written side by side ("3 4", "x 3", "3 (4)"): not a product a reader would see, so
    the answer is not read as one value at all (never handed to the symbolic path either)."""


_FUNCS = {
    "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan,
    "cot": lambda z: 1 / cmath.tan(z), "sec": lambda z: 1 / cmath.cos(z), "csc": lambda z: 1 / cmath.sin(z),
    "arcsin": cmath.asin, "arccos": cmath.acos, "arctan": cmath.atan,
    "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh,
    # \log without a base is read as the natural log, as SymPy and math-verify do.
    "ln": cmath.log, "exp": cmath.exp, "log": cmath.log,
}
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
    "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?)"
    r"|(?P<cmd>\\[a-zA-Z]+|\\[{}|])"
    r"|(?P<word>[a-zA-Z]+)"
    r"|(?P<op>\*\*|[-+*/^(){}\[\]!_|,'])"
    r")"
)


def tokenize(s: str) -> list[tuple[str, str, bool]]:
    """Tokens as (kind, text, spaced): ``spaced`` says whether whitespace came before the token."""
    out: list[tuple[str, str, bool]] = []
    pos, n = 0, len(s)
    while pos < n:
        m = _TOKEN.match(s, pos)
        if m is None or m.end() == pos:
            if s[pos:].strip() == "":
                break
            raise ExprError(f"unexpected character {s[pos]!r}")
        kind = m.lastgroup
        text = m.group(kind)
        spaced = m.start(kind) > pos
        pos = m.end()
        if kind == "num" and text.endswith("."):
            text = text[:-1]
        if kind == "word":
            # A run of letters: a known function, else single-letter variables (xy = x*y).
            if text in _FUNCS or text == "sqrt":
                out.append(("cmd", "\\" + text, spaced))
            else:
                # i is the imaginary unit (answers like 3+4i, e^{i\pi}); e is Euler's number.
                out.extend((("const", ch, spaced and k == 0) if ch in ("i", "e") else ("var", ch, spaced and k == 0))
                           for k, ch in enumerate(text))
        else:
            out.append((kind, text, spaced))
        if len(out) > MAX_TOKENS:
            raise ExprError("too many tokens")
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, bool]]):
        self.t = tokens
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> tuple[str, str, bool] | None:
        j = self.i + k
        return self.t[j] if j < len(self.t) else None

    def take(self) -> tuple[str, str, bool]:
        tok = self.peek()
        if tok is None:
            raise ExprError("unexpected end")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok[1] != text:
            raise ExprError(f"expected {text!r}, got {tok[1]!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError("nesting too deep")

    # expr := term (('+'|'-') term)*
    def expr(self):
        self.enter()
        node = self.term()
        while (tok := self.peek()) is not None and tok[1] in ("+", "-"):
            self.i += 1
            rhs = self.term()
            node = ("add", node, rhs) if tok[1] == "+" else ("add", node, ("neg", rhs))
        self.depth -= 1
        return node

    _MUL = {"*", r"\cdot", r"\times", r"\ast"}
    _DIV = {"/", r"\div"}

    def _starts_primary(self, tok) -> bool:
        kind, text = tok[0], tok[1]
        if kind in ("num", "var", "const"):
            return True
        if kind == "op":
            return text in ("(", "{", "[")
        return text in (r"\frac", r"\sqrt", r"\pi", r"\binom", r"\mathrm", r"\text", r"\operatorname", r"\e") or \
            text[1:] in _FUNCS or text[1:] in _GREEK

    # term := factor (op factor | implicit factor)*
    def term(self):
        node = self.factor()
        while (tok := self.peek()) is not None:
            if tok[1] in self._MUL:
                self.i += 1
                node = ("mul", node, self.factor())
            elif tok[1] in self._DIV:
                self.i += 1
                node = ("div", node, self.factor())
            elif self._starts_primary(tok):
                # An implicit product never has a number on its right ("3 4", "x3", "\\frac{1}{2}4") and never
                # joins two bare numbers across a space ("3 (4)"): a reader sees two numbers there.
                if tok[0] == "num":
                    raise SideBySide(f"a number after {self.t[self.i - 1][1]!r} with no operator")
                right = self.power()
                if tok[2] and _bare_number(node) and _bare_number(right):
                    raise SideBySide("two numbers separated by a space")
                node = ("mul", node, right)
            else:
                break
        return node

    def factor(self):
        tok = self.peek()
        if tok is not None and tok[1] in ("-", "+"):
            self.i += 1
            self.enter()
            inner = self.factor()
            self.depth -= 1
            return ("neg", inner) if tok[1] == "-" else inner
        return self.power()

    def power(self):
        base = self.postfix()
        tok = self.peek()
        if tok is not None and tok[1] in ("^", "**"):
            self.i += 1
            self.enter()
            exp = self.exponent()
            self.depth -= 1
            return ("pow", base, exp)
        return base

    def exponent(self):
        tok = self.peek()
        if tok is not None and tok[1] in ("-", "+"):
            self.i += 1
            inner = self.exponent()
            return ("neg", inner) if tok[1] == "-" else inner
        return self.power()

    def postfix(self):
        node = self.primary()
        while (tok := self.peek()) is not None and tok[1] in ("!", "'"):
            if tok[1] == "'":
                raise ExprError("primes are not arithmetic")
            self.i += 1
            node = ("fact", node)
        return node

    def group(self):
        """A {...} argument or a single token (\\frac12)."""
        tok = self.peek()
        if tok is None:
            raise ExprError("missing argument")
        if tok[1] == "{":
            self.i += 1
            node = self.expr()
            self.expect("}")
            return node
        if tok[0] == "num":
            self.i += 1
            # \frac12 means 1/2: a bare digit run as a macro argument is one digit.
            text = tok[1]
            if len(text) > 1 and text.isdigit():
                self.t.insert(self.i, ("num", text[1:], False))
                text = text[0]
            return ("num", text)
        return self.primary()

    def primary(self):
        self.enter()
        kind, text, _ = self.take()
        node = None
        if kind == "num":
            node = ("num", text)
        elif kind == "const":
            node = ("const", text)
        elif kind == "var":
            node = self._subscript(("var", text))
        elif kind == "op" and text in ("(", "{", "["):
            close = {"(": ")", "{": "}", "[": "]"}[text]
            node = self.expr()
            self.expect(close)
        elif kind == "op" and text == "|":
            node = ("abs", self.expr())
            self.expect("|")
        elif kind == "cmd":
            node = self._command(text)
        if node is None:
            raise ExprError(f"unexpected {text!r}")
        self.depth -= 1
        return node

    def _subscript(self, node):
        if (tok := self.peek()) is not None and tok[1] == "_":
            self.i += 1
            sub = self.take()
            if sub[1] == "{":
                parts = []
                while (t := self.take())[1] != "}":
                    parts.append(t[1])
                    if len(parts) > 20:
                        raise ExprError("subscript too long")
                label = "".join(parts)
            else:
                label = sub[1]
            return ("var", f"{node[1]}_{label}")
        return node

    def _command(self, cmd: str):
        name = cmd[1:]
        if name == "frac":
            return ("div", self.group(), self.group())
        if name == "sqrt":
            index = None
            if (tok := self.peek()) is not None and tok[1] == "[":
                self.i += 1
                index = self.expr()
                self.expect("]")
            arg = self.group()
            return ("root", arg, index) if index is not None else ("pow", arg, ("num", "0.5"))
        if name == "binom":
            return ("binom", self.group(), self.group())
        if name == "pi":
            return ("const", "pi")
        if name == "e":
            return ("const", "e")
        if name in _GREEK:
            return self._subscript(("var", name))
        if name in ("text", "mathrm", "operatorname", "mathit"):
            tok = self.peek()
            if tok is not None and tok[1] == "{":
                self.i += 1
                inner = []
                while (t := self.take())[1] != "}":
                    inner.append(t)
                word = "".join(t[1] for t in inner)
                if word == "e":
                    return ("const", "e")
                if word in _FUNCS:
                    return self._function(word)
            raise ExprError(f"text inside an expression: {cmd}")
        if name in _FUNCS:
            return self._function(name)
        if name in ("{", "}", "|"):
            raise ExprError("braces as symbols")
        raise ExprError(f"unknown command {cmd}")

    def _function(self, name: str):
        base = None
        power = None
        if name == "log" and (tok := self.peek()) is not None and tok[1] == "_":
            self.i += 1
            base = self.group()
        if (tok := self.peek()) is not None and tok[1] == "^":
            # \sin^2 x means (\sin x)^2.
            self.i += 1
            power = self.group()
        arg = self.postfix() if (tok := self.peek()) is not None and tok[1] in ("(", "{", "[") else self.power()
        node = ("fn", name, arg)
        if base is not None:
            node = ("div", ("fn", "ln", arg), ("fn", "ln", base))
        if power is not None:
            node = ("pow", node, power)
        return node


def _bare_number(node) -> bool:
    return node[0] == "num" or (node[0] == "neg" and node[1][0] == "num")


def parse(s: str):
    """Parse a normalised LaTeX/plain arithmetic string to a tree, or raise ExprError."""
    tokens = tokenize(s)
    if not tokens:
        raise ExprError("empty")
    p = _Parser(tokens)
    node = p.expr()
    if p.i != len(p.t):
        raise ExprError(f"trailing {p.t[p.i][1]!r}")
    return node


def free_vars(node) -> frozenset[str]:
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n[0] == "var":
            out.add(n[1])
        elif n[0] in ("num", "const"):
            continue
        else:
            stack.extend(c for c in n[1:] if isinstance(c, tuple))
    return frozenset(out)


def has_const(node, name: str) -> bool:
    stack = [node]
    while stack:
        n = stack.pop()
        if n[0] == "const" and n[1] == name:
            return True
        if n[0] not in ("num", "var", "const"):
            stack.extend(c for c in n[1:] if isinstance(c, tuple))
    return False


_CONSTS = {"pi": math.pi, "e": math.e, "i": 1j}


def _fact(z: complex) -> complex:
    if z.imag != 0 or z.real < 0 or z.real != int(z.real):
        raise ArithmeticError("factorial outside the naturals")
    if z.real > 170:
        raise OverflowError("factorial beyond float range")
    return complex(math.factorial(int(z.real)))


def _pow(a: complex, b: complex) -> complex:
    if a.imag == 0 and b.imag == 0:
        x, y = a.real, b.real
        if x < 0 and y != int(y):
            return complex(a) ** complex(b)
        if abs(y) > 1e6 and abs(x) not in (0.0, 1.0):
            raise OverflowError("exponent too large")
        return complex(x ** y)
    if abs(b) > 1e6:
        raise OverflowError("exponent too large")
    return a ** b


def evaluate(node, env: Mapping[str, complex] | None = None) -> complex:
    """The value of a tree; raises ArithmeticError/ValueError where it is undefined or huge."""
    kind = node[0]
    if kind == "num":
        return complex(float(node[1]))
    if kind == "var":
        if env is None or node[1] not in env:
            raise ValueError(f"free variable {node[1]}")
        return env[node[1]]
    if kind == "const":
        return complex(_CONSTS[node[1]])
    if kind == "add":
        return evaluate(node[1], env) + evaluate(node[2], env)
    if kind == "neg":
        return -evaluate(node[1], env)
    if kind == "mul":
        return evaluate(node[1], env) * evaluate(node[2], env)
    if kind == "div":
        return evaluate(node[1], env) / evaluate(node[2], env)
    if kind == "pow":
        return _pow(evaluate(node[1], env), evaluate(node[2], env))
    if kind == "root":
        idx = evaluate(node[2], env)
        val = evaluate(node[1], env)
        if val.imag == 0 and val.real < 0 and idx.imag == 0 and idx.real % 2 == 1:
            return -complex((-val.real) ** (1 / idx.real))
        return _pow(val, 1 / idx)
    if kind == "fn":
        return complex(_FUNCS[node[1]](evaluate(node[2], env)))
    if kind == "abs":
        return complex(abs(evaluate(node[1], env)))
    if kind == "fact":
        return _fact(evaluate(node[1], env))
    if kind == "binom":
        n, k = evaluate(node[1], env), evaluate(node[2], env)
        if n.imag or k.imag or n.real != int(n.real) or k.real != int(k.real) or not 0 <= k.real <= n.real <= 10_000:
            raise ArithmeticError("binomial outside small naturals")
        return complex(math.comb(int(n.real), int(k.real)))
    raise ValueError(f"unknown node {kind}")


# Exact arithmetic stays cheap: no intermediate integer longer than this many bits.
MAX_EXACT_BITS = 60_000


def _bits(q: Fraction) -> int:
    return max(q.numerator.bit_length(), q.denominator.bit_length())


def exact(node) -> Fraction | None:
    """The exact rational value of a tree of literals, + - * /, integer powers and factorials,
    or None (not rational, or too large to compute cheaply: see ``MAX_EXACT_BITS``).

    >>> exact(parse("2^{100} + 1")) - exact(parse("2^{100}"))
    Fraction(1, 1)
    """
    kind = node[0]
    try:
        if kind == "num":
            return Fraction(node[1])
        if kind == "neg":
            v = exact(node[1])
            return None if v is None else -v
        if kind in ("add", "mul", "div"):
            a, b = exact(node[1]), exact(node[2])
            if a is None or b is None:
                return None
            out = a + b if kind == "add" else a * b if kind == "mul" else a / b
            return out if _bits(out) <= MAX_EXACT_BITS else None
        if kind == "pow":
            a, b = exact(node[1]), exact(node[2])
            if a is None or b is None or b.denominator != 1:
                return None
            if a in (0, 1, -1):
                return a ** int(b) if not (a == 0 and b < 0) else None
            if _bits(a) * abs(int(b)) > MAX_EXACT_BITS:
                return None
            return a ** int(b)
        if kind == "fact":
            n = exact(node[1])
            if n is None or n.denominator != 1 or n < 0 or n > 4000:  # 4000! has ~42,000 bits
                return None
            return Fraction(math.factorial(int(n)))
    except (ZeroDivisionError, ValueError, OverflowError):
        return None
    return None
