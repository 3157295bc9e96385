"""Equivalence of two parsed answers, without SymPy.

``equal(pred, gold)`` answers True, False, or None when only the symbolic path can tell
(either side is ``Latex``, or the two sides are of kinds this module does not compare).

The numeric rule, one for decimals, fractions and symbolic values:

- two rational values (integers, decimals, fractions written exactly) are equal only when
  they are the same number;
- otherwise two values are equal when ``|a - b| <= REL_TOL * max(|a|, |b|)`` (relative only:
  no absolute floor, so ``e^{-30}`` is not 0; a computed value within ``REL_TOL`` of an exact
  0 is left to the symbolic path, which tells ``\\sin\\pi`` from ``e^{-30}``);
- a decimal written with k >= 2 places stands for any value that has *no* finite decimal
  expansion (irrational, or a fraction like 1/3) and rounds to it at k places: 0.33 ~ 1/3,
  3.14 ~ pi, 6.28 ~ 2 pi. A value that has a finite expansion must be equal exactly:
  3.25 is not 13013/4000 (3.25325), and 3.253 is not 3.25 either way round.
- expressions with variables are compared at fixed sample points: equal when every point
  agrees within ``IDENTITY_TOL`` (float evaluation loses a few digits), different when some
  point differs by more than ``IDENTITY_GAP``; in between, the symbolic path decides.

>>> from mathse_rl.verify.answer import parse_answer as p
>>> equal(p("x^2+2x+1"), p("(x+1)^2"))
(True, 'symbolic')
>>> equal(p("0.5"), p("50"))
(False, 'mismatch')
"""

from __future__ import annotations

import cmath
import math
import re

from mathse_rl.verify import expr as E
from mathse_rl.verify.answer import Answer, Group, Inf, Latex, Letter, Relation, Scalar, Seq, Text, parse_answer
from mathse_rl.verify.extract import DECIMAL_COMMA

REL_TOL = 1e-12  # relative tolerance between two numeric values (see the module docstring)
IDENTITY_TOL = 1e-9  # relative agreement required at every sample point of an identity
IDENTITY_GAP = 1e-6  # a larger relative difference at some point decides "different"
# Sample points for identity testing: irrational-looking reals of both signs, some below 1 in size
# (so x^{10} + 1 is told from x^{10}). Real points only: |x| and sqrt(x^2) agree on the reals.
_POINTS = (0.5377, 1.8339, -2.2588, 0.8622, 3.1178, -0.3188, -1.3499, 2.7694)
_PI = math.pi

Outcome = tuple[bool | None, str]


def _close(a: complex, b: complex, tol: float = REL_TOL) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b))


def _finite_decimal(s: Scalar) -> bool:
    """Whether the value has a finite decimal expansion (a rational with denominator 2^i 5^j)."""
    if s.exact is None:
        return False
    d = s.exact.denominator
    for q in (2, 5):
        while d % q == 0:
            d //= q
    return d == 1


def _rounds_to(literal: Scalar, other: Scalar, other_value: complex) -> bool:
    if literal.decimals is None or literal.decimals < 2 or literal.value is None or abs(other_value.imag) > 1e-12:
        return False
    if other.literal or _finite_decimal(other):
        return False  # a value that can be written exactly must be written equal
    half_ulp = 0.5 * 10 ** (-literal.decimals)
    return abs(literal.value.real - other_value.real) <= half_ulp * (1 + 1e-9)


def _num_equal(p: Scalar, g: Scalar, pv: complex, gv: complex, scaled: bool) -> bool:
    both_exact = not scaled and p.exact is not None and g.exact is not None
    if both_exact:
        if p.exact == g.exact:
            return True
    elif _close(pv, gv):
        return True
    if scaled or (p.literal and g.literal):
        return False  # two written numbers must agree exactly: 2.99 is not 3
    # A rounded decimal against a value with no finite decimal form: 0.333333 ~ 1/3, 1.41 ~ sqrt(2).
    return (p.literal and _rounds_to(p, g, gv)) or (g.literal and _rounds_to(g, p, pv))


def _near_zero_undecided(p: Scalar, g: Scalar) -> bool:
    """A computed value within REL_TOL of an exact zero: float noise or a tiny number? Undecided."""
    for a, b in ((p, g), (g, p)):
        if a.exact is not None and a.exact == 0 and b.exact is None and b.value is not None \
                and 0 < abs(b.value) < 1e-9:
            return True
    return False


def _scalar_values(p: Scalar, g: Scalar) -> list[tuple[complex, complex, bool]]:
    """The (pred, gold) value pairs that count as a match after percent/degree/unit rules."""
    pv, gv = p.value, g.value
    pairs = [(pv, gv, False)]
    if p.unit is not None and g.unit is not None and p.unit[0] == g.unit[0]:
        pairs = [(pv * p.unit[1], gv * g.unit[1], p.unit[1] != g.unit[1])]
    if p.percent != g.percent:
        pct, other = (pv, gv) if p.percent else (gv, pv)
        pairs = [(pv, gv, False), (pct / 100, other, True) if p.percent else (other, pct / 100, True)]
    if p.degree != g.degree:
        deg_side_pred = p.degree
        other = g if deg_side_pred else p
        dv = pv if deg_side_pred else gv
        ov = gv if deg_side_pred else pv
        if other.has_pi:
            rad = dv * _PI / 180
            pairs = [(rad, ov, True) if deg_side_pred else (ov, rad, True)]
        else:
            pairs = [(pv, gv, False)]
    elif p.degree and g.degree:
        pairs = [(pv, gv, False)]
    return pairs


def _scalar_equal(p: Scalar, g: Scalar) -> Outcome:
    if p.vars or g.vars:
        return _identity(p.node, g.node, p.vars | g.vars)
    if p.exact is not None and g.exact is not None and not (p.percent or g.percent or p.degree or g.degree
                                                            or p.unit or g.unit):
        if p.exact == g.exact or (p.value is not None and g.value is not None
                                  and _num_equal(p, g, p.value, g.value, False)):
            return True, "numeric"
        return False, "mismatch"
    if p.overflow or g.overflow:
        if p.overflow and g.overflow:
            return None, "overflow"
        return False, "mismatch"  # a finite number never equals one beyond float range
    if p.value is None or g.value is None:
        return None, "undefined"
    if p.unit is not None and g.unit is not None and p.unit[0] != g.unit[0]:
        return False, "mismatch"  # 5 kg is not 5 m, whatever the numbers
    if p.unit_word and g.unit_word and (p.unit is None or g.unit is None) and p.unit_word != g.unit_word:
        return False, "mismatch"  # "12 apples" is not "12 pears"; an unknown unit is never another one
    if _near_zero_undecided(p, g):
        return None, "symbolic_needed"
    for pv, gv, scaled in _scalar_values(p, g):
        if _num_equal(p, g, pv, gv, scaled):
            return True, "numeric"
    return False, "mismatch"


def _identity(a, b, names, ratio: bool = False) -> Outcome:
    """a == b (or a == c*b for a constant c when ``ratio``) at all sample points."""
    names = sorted(names)
    if len(names) > 6:
        return None, "too_many_vars"
    checked = 0
    loose = False  # some point agrees only within IDENTITY_GAP
    first_ratio = None
    for k in range(len(_POINTS)):
        env = {n: complex(_POINTS[(k + 3 * j) % len(_POINTS)]) for j, n in enumerate(names)}
        try:
            av, bv = E.evaluate(a, env), E.evaluate(b, env)
        except (ArithmeticError, ValueError):
            continue
        if not (cmath.isfinite(av) and cmath.isfinite(bv)):
            continue
        if abs(av.imag) > 1e-12 * max(1.0, abs(av)) or abs(bv.imag) > 1e-12 * max(1.0, abs(bv)):
            continue  # a fractional power of a negative point: branches differ, the point says nothing
        if ratio:
            if abs(bv) < 1e-12:
                if abs(av) > 1e-9:
                    return False, "mismatch"
                continue
            r = av / bv
            if first_ratio is None:
                first_ratio = r
                checked += 1
                continue
            av, bv = r, first_ratio
        scale = max(abs(av), abs(bv), 1e-12)  # float noise around an exact 0 at a sample point
        if abs(av - bv) > IDENTITY_TOL * scale:
            if abs(av - bv) > IDENTITY_GAP * scale:
                return False, "mismatch"
            loose = True
        checked += 1
    if checked >= 3:
        if ratio and (first_ratio is None or abs(first_ratio) < 1e-12):
            return False, "mismatch"
        return (None, "symbolic_needed") if loose else (True, "symbolic")
    return None, "undefined"


def _is_var(a: Answer) -> bool:
    return isinstance(a, Scalar) and a.node[:1] == ("var",)


# A name, possibly a function value: x, AB, V_1, f(x), f(2), I(6,3), P(A).
_NAME = r"(?:\\angle\s*|m\s*\\angle\s*)?(?:\\?[A-Za-z]+)(?:_\{?[\w,]+\}?)?'*(?:\(\s*[\w.+-]+(?:\s*,\s*[\w.+-]+){0,3}\s*\))?"
# What an answer may be labelled with: x, AB, |AB|, \angle ABC, V_1, f(x), x + y, (p, q), V_1:V_2.
_LABEL = re.compile(r"^(?:\\d?frac\{" + _NAME + r"\}\{" + _NAME + r"\}|\|\s*" + _NAME + r"\s*\||" + _NAME + r"(?:\s*[+:,]\s*" + _NAME + r")*|\(\s*" + _NAME
                    + r"(?:\s*[,;]\s*" + _NAME + r")+\s*\))$")


def _is_label(a: Answer) -> bool:
    """Whether ``a`` names the quantity asked for rather than stating a condition on it."""
    if isinstance(a, Seq) and all(isinstance(x, Scalar) and x.vars and _LABEL.match(x.raw.strip()) for x in a.items):
        return True  # (p, q) and V_1:V_2
    if isinstance(a, Latex):  # "I(6,3)": a function value the arithmetic parser does not read
        return re.match(r"^[A-Za-z]+\(", a.raw.strip()) is not None and _LABEL.match(a.raw.strip()) is not None
    return isinstance(a, Scalar) and bool(a.vars) and _LABEL.match(a.raw.strip()) is not None


def _constant(a: Answer) -> bool:
    return isinstance(a, Scalar) and not a.vars


def relation_value(rel: Relation) -> tuple[Answer | None, bool]:
    """The value an equation answers with, and whether it is false.

    ``x = 3``, ``|AB| = 1``, ``(p,q) = (3,2)``: the right side. ``3 + 4 = 7``: 7, and
    ``2 + 2 = 5`` is false. Anything else (``x^2 = 4``, ``2x = 6``) answers nothing."""
    if rel.ops and all(o == "=" for o in rel.ops):
        parts = rel.parts
        if all(_constant(x) for x in parts):
            first = parts[0]
            for other in parts[1:]:
                ok, _ = equal(other, first)
                if ok is not True:
                    return None, ok is False
            return parts[-1], False
        if len(parts) == 2:
            lhs, rhs = parts
            if _is_label(lhs) and not _is_label(rhs):
                return rhs, False
            if _is_label(rhs) and not _is_label(lhs) and _constant(lhs):
                return lhs, False
    return None, False


def _as_interval(r: Relation) -> Seq | None:
    """x > 2 -> (2, inf); 2 < x <= 5 -> (2, 5]; None when not one variable bounded."""
    parts, ops = r.parts, r.ops
    if "=" in ops:
        return None
    inf, ninf = Inf("inf", "inf", sign=1), Inf("inf", "-inf", sign=-1)
    if len(parts) == 2:
        (a, b), op = parts, ops[0]
        if _is_var(b) and not _is_var(a):  # 2 < x  ==  x > 2
            a, b, op = b, a, {"<": ">", ">": "<", "<=": ">=", ">=": "<="}[op]
        if not _is_var(a):
            return None
        if op in (">", ">="):
            return Seq("seq", r.raw, open="(" if op == ">" else "[", close=")", items=(b, inf))
        return Seq("seq", r.raw, open="(", close=")" if op == "<" else "]", items=(ninf, b))
    if len(parts) == 3 and _is_var(parts[1]) and ops[0][:1] == ops[1][:1]:  # a < x <= b, a > x > b
        lo, hi = parts[0], parts[2]
        if ops[0].startswith(">"):
            lo, hi = hi, lo
            return Seq("seq", r.raw, open="[" if ops[1] == ">=" else "(", close="]" if ops[0] == ">=" else ")", items=(lo, hi))
        return Seq("seq", r.raw, open="[" if ops[0] == "<=" else "(", close="]" if ops[1] == "<=" else ")", items=(lo, hi))
    return None


def _relation_equal(p: Relation, g: Relation) -> Outcome:
    if p.ops == ("=",) and g.ops == ("=",):
        pl, pr = p.parts
        gl, gr = g.parts
        if any(not isinstance(x, Scalar) for x in (pl, pr, gl, gr)):
            return None, "symbolic_needed"
        if _is_var(pl) and _is_var(gl) and pl.node == gl.node:
            return equal(pr, gr)
        diff_p = ("add", pl.node, ("neg", pr.node))
        diff_g = ("add", gl.node, ("neg", gr.node))
        return _identity(diff_p, diff_g, pl.vars | pr.vars | gl.vars | gr.vars, ratio=True)
    pi, gi = _as_interval(p), _as_interval(g)
    if pi is not None and gi is not None:
        return equal(pi, gi)
    return None, "symbolic_needed"


def _seq_equal(p: Seq, g: Seq) -> Outcome:
    if p.open != g.open or p.close != g.close or len(p.items) != len(g.items):
        if p.close == ":" and g.close == ":" and len(p.items) == len(g.items) == 2:
            pass
        else:
            return False, "mismatch"
    if p.close == ":":
        # 2:3 ~ 4:6 — a ratio is equal up to a common factor.
        items = [x for x in p.items + g.items]
        if all(isinstance(x, Scalar) and x.value is not None and not x.vars and abs(x.value) > 0 for x in items) \
                and not any(re.match(r"0\d", x.raw.strip()) for x in items):
            a, b = p.items[0].value, p.items[1].value
            c, d = g.items[0].value, g.items[1].value
            return (_close(a * d, b * c), "numeric" if _close(a * d, b * c) else "mismatch")
        # a zero part or a clock-like "12:05": compare part by part
    return _all_equal(p.items, g.items)


def _all_equal(ps, gs) -> Outcome:
    undecided = False
    for a, b in zip(ps, gs):
        ok, why = equal(a, b)
        if ok is False:
            return False, "mismatch"
        if ok is None:
            undecided = True
    return (None, "symbolic_needed") if undecided else (True, "numeric")


def _decimal_comma(grp: Group) -> Scalar | None:
    """"1000,99" against a decimal gold: a European decimal comma (see docs/verifier_eval.md)."""
    raw = grp.raw.strip()
    if not re.fullmatch(DECIMAL_COMMA, raw):
        return None
    value = parse_answer(raw.replace(",", "."))
    return value if isinstance(value, Scalar) else None


def _distinct(items: tuple) -> tuple:
    """A collection's items with exact repeats of a tuple dropped ("(3,17), (3,17)" lists one solution)."""
    seen, out = set(), []
    for x in items:
        key = re.sub(r"\s+", "", x.raw) if isinstance(x, Seq) else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        out.append(x)
    return tuple(out)


def _group_equal(ps: tuple, gs: tuple) -> Outcome:
    ps, gs = _distinct(ps), _distinct(gs)
    if len(ps) != len(gs):
        if any(isinstance(x, (Relation, Latex, Group)) for x in ps + gs):
            return None, "symbolic_needed"  # "AB=4, CD=5" may pair up differently
        return False, "mismatch"
    left = list(gs)
    undecided = False
    for a in ps:
        for i, b in enumerate(left):
            ok, _ = equal(a, b)
            if ok:
                del left[i]
                break
            if ok is None:
                undecided = True
        else:
            return (None, "symbolic_needed") if undecided else (False, "mismatch")
    return True, "numeric"


def equal(p: Answer, g: Answer) -> Outcome:
    """Whether prediction ``p`` matches gold ``g``: (True/False/None, reason)."""
    if isinstance(p, Latex) or isinstance(g, Latex):
        return None, "symbolic_needed"
    if isinstance(p, Letter) or isinstance(g, Letter):
        if isinstance(p, Letter) and isinstance(g, Letter):
            return (p.letter == g.letter), "choice" if p.letter == g.letter else "mismatch"
        return False, "mismatch"
    if isinstance(p, Text) or isinstance(g, Text):
        if isinstance(p, Text) and isinstance(g, Text):
            return (p.key == g.key and p.key != ""), "text" if p.key == g.key else "mismatch"
        return False, "mismatch"
    if isinstance(p, Inf) or isinstance(g, Inf):
        same = isinstance(p, Inf) and isinstance(g, Inf) and p.sign == g.sign
        return same, "numeric" if same else "mismatch"
    if isinstance(p, Scalar) and isinstance(g, Scalar):
        return _scalar_equal(p, g)
    if isinstance(p, Relation) or isinstance(g, Relation):
        if isinstance(p, Relation) and isinstance(g, Relation):
            return _relation_equal(p, g)
        rel, other = (p, g) if isinstance(p, Relation) else (g, p)
        value, false = relation_value(rel)
        if false:
            return False, "mismatch"  # "2 + 2 = 5" answers nothing, whatever its right side
        if value is not None:
            return equal(value, other) if rel is p else equal(other, value)
        iv = _as_interval(rel)
        if iv is not None and isinstance(other, (Seq, Group)):
            return equal(iv, other) if rel is p else equal(other, iv)
        if rel.ops and all(o == "=" for o in rel.ops) and isinstance(other, (Scalar, Inf)):
            return False, "mismatch"  # an unsolved equation ("2x = 6", "x^2 = 4") against a value
        return None, "symbolic_needed"
    if isinstance(p, Group) and isinstance(g, Group):
        return _group_equal(p.items, g.items)
    if isinstance(p, Group) or isinstance(g, Group):
        grp, other = (p, g) if isinstance(p, Group) else (g, p)
        if len(grp.items) == 1:
            return equal(grp.items[0], other) if grp is p else equal(other, grp.items[0])
        comma = _decimal_comma(grp)
        if comma is not None and isinstance(other, Scalar) and other.literal and other.decimals:
            return equal(comma, other) if grp is p else equal(other, comma)
        if isinstance(other, Seq) and grp.bare and other.open == "(" and len(other.items) == len(grp.items):
            return _all_equal(p.items, g.items)
        if any(isinstance(x, (Relation, Latex, Group)) for x in grp.items):
            return None, "symbolic_needed"  # "p=5, q=2; p=7, q=2" against "(5,2), (7,2)"
        return False, "mismatch"
    if isinstance(p, Seq) and isinstance(g, Seq):
        return _seq_equal(p, g)
    ratio, other = (p, g) if isinstance(p, Seq) else (g, p)
    if isinstance(ratio, Seq) and ratio.close == ":" and isinstance(other, Scalar):
        return _ratio_as_fraction(ratio, other)
    return False, "mismatch"


def _ratio_as_fraction(ratio: Seq, value: Scalar) -> Outcome:
    """A ratio a:b against a fraction: the same answer when a/b is that fraction (6:pi ~ 6/pi).
    Only a written fraction counts: a bare number (1 against 2:2) never does, nor does a part
    of 0 or a clock-like "12:05"."""
    a, b = ratio.items
    if not re.search(r"\\[dt]?frac|/", value.raw):
        return False, "mismatch"
    if not (isinstance(a, Scalar) and isinstance(b, Scalar)) or a.vars or b.vars or value.vars:
        return False, "mismatch"
    if re.match(r"0\d", a.raw.strip()) or re.match(r"0\d", b.raw.strip()) or not b.value or not a.value:
        return False, "mismatch"
    if a.exact is not None and b.exact is not None and value.exact is not None:
        same = a.exact / b.exact == value.exact
    elif value.value is None:
        return None, "undefined"
    else:
        same = _close(a.value / b.value, value.value)
    return same, "numeric" if same else "mismatch"
