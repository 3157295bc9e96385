"""Turn an answer string into a structured value the comparer understands.

Forms: an option letter (``Letter``), short text (``Text``), a number or expression with
its marks (``Scalar``: percent, degrees, units), tuples and intervals (``Seq``), sets,
``\\pm`` and several answers (``Group``), equations and inequalities (``Relation``), and
``Latex`` for what the fast parser does not handle (left to the symbolic path).

>>> parse_answer("1.2\\\\text{ m}").unit  # (length, mass, time) exponents and factor to SI
((1, 0, 0), 1.0)
>>> parse_answer("[2, 5)").kind
'seq'
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction

from mathse_rl.verify import expr as E
from mathse_rl.verify.text import UNREADABLE, balanced, has_kept_numeral, normalise_latex, strip_wrappers, text_key

MAX_ANSWER_CHARS = 600  # longer extracted answers are refused ("too_long")


@dataclass(frozen=True)
class Answer:
    kind: str  # "letter", "text", "scalar", "seq", "group", "relation", "latex", "inf"
    raw: str


@dataclass(frozen=True)
class Letter(Answer):
    letter: str = ""
    rest: "Answer | None" = None


@dataclass(frozen=True)
class Text(Answer):
    key: str = ""


@dataclass(frozen=True)
class Scalar(Answer):
    node: tuple = ()
    vars: frozenset = frozenset()
    value: complex | None = None
    overflow: bool = False
    exact: Fraction | None = None
    decimals: int | None = None
    literal: bool = False  # written as a plain integer or decimal
    percent: bool = False
    degree: bool = False
    unit: tuple | None = None  # (dimension, factor to SI units) when a known unit was written
    unit_word: str = ""  # the unit or word written after the number ("cm", "apples"), singular, lower case
    has_pi: bool = False


@dataclass(frozen=True)
class Inf(Answer):
    sign: int = 1


@dataclass(frozen=True)
class Seq(Answer):
    """An ordered tuple, point or interval; ``open``/``close`` are the brackets ("" for ratios)."""

    open: str = "("
    close: str = ")"
    items: tuple = ()


@dataclass(frozen=True)
class Group(Answer):
    """An unordered collection: a set, a union, several answers, ``a \\pm b``."""

    items: tuple = ()
    bare: bool = False  # written as a plain list ("2, 3"): may also be read in order


@dataclass(frozen=True)
class Relation(Answer):
    """``lhs op rhs`` with op one of = < <= > >=; chains ``a < x <= b`` keep all parts."""

    parts: tuple = ()
    ops: tuple = ()


@dataclass(frozen=True)
class Latex(Answer):
    """Something only the symbolic path can judge."""

    text: str = ""


# ---------------------------------------------------------------- units

_LEN = {"mm": 1e-3, "cm": 1e-2, "dm": 0.1, "m": 1.0, "km": 1e3, "millimeter": 1e-3, "centimeter": 1e-2,
        "meter": 1.0, "metre": 1.0, "kilometer": 1e3, "kilometre": 1e3, "in": 0.0254, "inch": 0.0254,
        "inches": 0.0254, "ft": 0.3048, "feet": 0.3048, "foot": 0.3048, "yd": 0.9144, "yard": 0.9144,
        "mi": 1609.344, "mile": 1609.344}
_MASS = {"mg": 1e-6, "g": 1e-3, "kg": 1.0, "milligram": 1e-6, "gram": 1e-3, "kilogram": 1.0,
         "lb": 0.45359237, "pound": 0.45359237, "ton": 1000.0, "tonne": 1000.0}
_TIME = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hr": 3600.0,
         "hour": 3600.0, "day": 86400.0, "week": 604800.0}
_VOLUME = {"l": 1e-3, "liter": 1e-3, "litre": 1e-3, "ml": 1e-6, "milliliter": 1e-6, "millilitre": 1e-6}
UNITS: dict[str, tuple[tuple[int, int, int], float]] = {}
for _table, _dim in ((_LEN, (1, 0, 0)), (_MASS, (0, 1, 0)), (_TIME, (0, 0, 1)), (_VOLUME, (3, 0, 0))):
    for _name, _f in _table.items():
        UNITS[_name] = (_dim, _f)
        if len(_name) > 3:
            UNITS[_name + "s"] = (_dim, _f)
UNITS["cc"] = ((3, 0, 0), 1e-6)
for _plural, _name in {"days": "day", "hrs": "hr", "mins": "min", "secs": "sec", "lbs": "lb", "yds": "yd",
                       "kms": "km"}.items():  # short names are not pluralised above
    UNITS[_plural] = UNITS[_name]

# Words that may follow a number without being a unit we convert ("12 apples", "5 square units").
_UNIT_WORD = re.compile(r"^[a-zA-Z][a-zA-Z ]*$")
_POW = re.compile(r"\^\{?(\d)\}?")


def _unit_term(word: str, power: int):
    w = word.lower() if word.lower() in UNITS or word not in UNITS else word
    if w not in UNITS:
        return None
    dim, f = UNITS[w]
    return (tuple(d * power for d in dim), f ** power)


def parse_unit(spec: str):
    """``cm^2`` -> ((2,0,0), 1e-4); ``km/h`` -> ((1,0,-1), 0.2777...); None when not a known unit."""
    spec = spec.replace("\\cdot", " ").replace("\\,", " ").strip()
    spec = re.sub(r"^(square|sq\.?)\s+(\w+)", r"\2^2", spec)
    spec = re.sub(r"^cubic\s+(\w+)", r"\1^3", spec)
    num, _, den = spec.partition("/")
    dim = [0, 0, 0]
    factor = 1.0
    for part, sign in ((num, 1), (den, -1)):
        if sign == -1 and not part:
            continue
        terms = re.findall(r"([a-zA-Z]+)\s*(?:\^\{?(-?\d)\}?)?", part)
        if not terms or re.sub(r"[a-zA-Z]+\s*(?:\^\{?-?\d\}?)?|\s", "", part):
            return None
        for word, p in terms:
            t = _unit_term(word, int(p or 1) * sign)
            if t is None:
                return None
            dim = [a + b for a, b in zip(dim, t[0])]
            factor *= t[1]
    return (tuple(dim), factor)


# ---------------------------------------------------------------- scalars

_TEXT_CMD = r"\\(?:text|textnormal|mathrm|mbox|textrm|textbf|mathbf|operatorname)\s*\{([^{}]*)\}"
_DEGREE = re.compile(r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°|\s*(?:\\text\{\s*)?(?:degrees?|deg)\b\}?)\s*$")
_PERCENT = re.compile(r"\s*(?:\\%|%|\s*(?:\\text\{\s*)?percent\}?)\s*$")
_TRAIL_UNIT = re.compile(r"^(.*?\S)\s*(?:" + _TEXT_CMD + r"(\s*\^\s*\{?\d\}?)?|\s([a-zA-Z][a-zA-Z ./]*(?:\^\{?\d\}?)?)|(?<=\d)([a-zA-Z]{2,}(?:/[a-zA-Z]+)?(?:\^\{?\d\}?)?))\s*$", re.S)
# Units written in Chinese after a number ("5厘米", "3平方米", "12个"): known ones convert.
_CJK_TAIL = re.compile(r"^(.*?[\d)}])\s*([\u4e00-\u9fff]+)$", re.S)
_CJK_UNITS = {"毫米": "mm", "厘米": "cm", "分米": "dm", "米": "m", "千米": "km", "公里": "km",
              "平方厘米": "cm^2", "平方米": "m^2", "平方千米": "km^2", "立方厘米": "cm^3", "立方米": "m^3",
              "克": "g", "千克": "kg", "公斤": "kg", "毫克": "mg", "秒": "s", "分钟": "min", "小时": "h", "天": "day",
              "升": "l", "毫升": "ml"}
_DECIMAL = re.compile(r"^-?\d+\.(\d+)$")


def _strip_marks(s: str) -> tuple[str, bool, bool, tuple | None, bool]:
    percent = degree = False
    unit = None
    stripped_word = False
    word = ""
    s = re.sub(r"^\\?\$\s*", "", s).strip()  # currency sign
    for _ in range(3):
        m = _PERCENT.search(s)
        if m and m.start() > 0:
            s, percent = s[: m.start()].strip(), True
            continue
        m = _DEGREE.search(s)
        if m and m.start() > 0:
            s, degree = s[: m.start()].strip(), True
            continue
        m = _CJK_TAIL.match(s)
        if m and not stripped_word:
            word = m.group(2)
            if word == "度":
                s, degree = m.group(1).strip(), True
                continue
            if word in _CJK_UNITS:
                unit = parse_unit(_CJK_UNITS[word])
            s, stripped_word = m.group(1).strip(), word
            continue
        m = _TRAIL_UNIT.match(s)
        if m and not stripped_word:
            core = m.group(1)
            if m.group(2) is not None:
                spec = m.group(2).strip() + (m.group(3) or "").strip()
            else:
                spec = (m.group(4) or m.group(5) or "").strip()
            if not re.search(r"[\d)}]\s*$|\\pi\s*$", core) or not spec:
                break
            if spec.lower() in ("and", "or"):
                break
            if re.fullmatch(r"(?:degrees?|deg)", spec.strip()):
                s, degree = core.strip(), True
                continue
            if re.fullmatch(r"percent", spec.strip()):
                s, percent = core.strip(), True
                continue
            if not _UNIT_WORD.match(re.sub(r"[\^{}\d/.]", "", spec)) and m.group(2) is None:
                break
            unit = parse_unit(spec)
            if unit is None and len(spec.strip()) == 1 and m.group(2) is None:
                break  # "2 x" is not a unit
            s, stripped_word = core.strip(), spec
            continue
        break
    return s, percent, degree, unit, stripped_word or ""


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def parse_scalar(raw: str, s: str) -> Answer:
    word = re.match(r"^([a-zA-Z]+)((?:\s.*)?)$", s.strip())
    if word and word.group(1).lower() in _NUMBER_WORDS:
        s = _NUMBER_WORDS[word.group(1).lower()] + word.group(2)  # "five", "two cm"
    core, percent, degree, unit, word = _strip_marks(s)
    core = re.sub(_TEXT_CMD, r"\1", core) if "\\text" in core and re.fullmatch(r"[-+\d.\s]*" + _TEXT_CMD + r"[-+\d.\s]*", core) else core
    if _looks_like_text(core) or _BASE_NUMERAL.search(core):
        return Text("text", raw, key=text_key(s))  # "101_2" is a numeral in base 2: compared as written
    try:
        node = E.parse(core)
    except E.SideBySide:
        return Text("text", raw, key=text_key(s))  # "3 4": two numbers, never their product nor one of them
    except E.ExprError:
        return _text_or_latex(raw, s)
    vs = E.free_vars(node)
    value, overflow = None, False
    if not vs:
        try:
            value = E.evaluate(node)
        except OverflowError:
            overflow = True
        except (ArithmeticError, ValueError):
            value = None
    dm = _DECIMAL.match(core.replace(" ", ""))
    literal = dm is not None or re.fullmatch(r"-?\d+", core.replace(" ", "")) is not None
    return Scalar("scalar", raw, node=node, vars=vs, value=value, overflow=overflow,
                  exact=E.exact(node) if not vs else None, decimals=len(dm.group(1)) if dm else None, literal=literal,
                  percent=percent, degree=degree, unit=unit, has_pi=E.has_const(node, "pi"),
                  unit_word=_singular(word))


_BASE_NUMERAL = re.compile(r"(?<![A-Za-z_\\])[0-9]+\s*_\s*\{?\s*[0-9]")  # 101_2, 1011_{2} (not x_1, a1_2)


def _singular(word: str) -> str:
    w = re.sub(r"\s+", " ", str(word)).strip().lower()
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


_WORD_RUN = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")
_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "sqrt", "arcsin", "arccos", "arctan",
               "sinh", "cosh", "tanh", "frac", "text", "mathrm", "infty", "cdot", "times", "circ", "pi", "mbox",
               "matrix", "pmatrix", "bmatrix", "vmatrix", "array", "cases", "aligned"}


def _looks_like_text(s: str) -> bool:
    plain = re.sub(r"\\[a-zA-Z]+", " ", s)
    words = [w for w in _WORD_RUN.findall(plain) if w.lower() not in _MATH_WORDS]
    return bool(words) or text_key(s) in ("yes", "no", "true", "false")


def _text_or_latex(raw: str, s: str) -> Answer:
    if _looks_like_text(s):
        return Text("text", raw, key=text_key(s))
    return Latex("latex", raw, text=s)


# ---------------------------------------------------------------- structure

_OPENERS, _CLOSERS = "([{", ")]}"
# A matrix or vector (optionally in one pair of parentheses): rows split at \\, cells at &.
_MATRIX = re.compile(r"\(?\s*\\begin\{([pbvB]?matrix)\}(.*?)\\end\{\1\}\s*\)?", re.S)


def split_top(s: str, seps: re.Pattern) -> list[str]:
    """Split at separators outside any brackets (intervals like [2,5) count as one level)."""
    out, depth, start = [], 0, 0
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\" and s.startswith(("\\{", "\\}"), i):
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in _OPENERS:
            depth += 1
        elif c in _CLOSERS:
            depth -= 1
        elif depth == 0:
            m = seps.match(s, i)
            if m and m.end() > i:
                out.append(s[start:i])
                start = i = m.end()
                continue
        i += 1
    out.append(s[start:])
    return [p.strip() for p in out]


_LIST_SEP = re.compile(r"\s*(?:,\s*(?:and|or)\s+|,|;|\\text\{\s*(?:and|or)\s*\}|\s(?:and|or)\s)\s*")
_REL_SEP = re.compile(r"\s*(<=|>=|\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|<|>|=)\s*")
_UNION = re.compile(r"\s*(?:\\cup|∪|\bU\b)\s*")
_LETTER = re.compile(r"^(?:\\(?:text|textnormal|textbf|mathrm|mathbf|mbox)\{\s*)?\(?([A-J])\)?(?:\s*\})?(?:\s*[.:)：、,]\s*(.*)|\s+(.*))?$", re.S)
_OPTION_WORD = re.compile(r"^(?:option|choice)\s+", re.I)
_INF = re.compile(r"^([-+]?)\s*\\infty$|^([-+]?)\s*(?:inf|infinity|oo)$")


def _item(s: str) -> Answer:
    m = _INF.match(s.strip())
    if m:
        return Inf("inf", s, sign=-1 if "-" in (m.group(1) or m.group(2) or "") else 1)
    return _parse(s, allow_letter=False)


# A relation with one side missing ("\\le 3", "< 3", "x >") states no value.
_OPEN_RELATION = re.compile(r"^\s*(?:[<>=]|\\(?:le|ge|ne|ll|gg|prec|succ|preceq|succeq|lesssim|gtrsim|nless|ngtr|nleq|ngeq|"
                            r"leqq|geqq|lneq|gneq|lneqq|gneqq|approx|sim|simeq|cong|equiv|propto)(?![a-zA-Z]))|"
                            r"(?:[<>=]|\\(?:le|ge|ne|ll|gg|approx)(?![a-zA-Z]))\s*$")


def _parse(s: str, allow_letter: bool) -> Answer:
    raw = s
    if not s:
        return Text("text", raw, key="")
    if _OPEN_RELATION.search(s):
        return Text("text", raw, key=text_key(s))
    if allow_letter:
        letter = _letter(s)
        if letter is not None:
            return letter
    if "\\pm" in s or "\\mp" in s:
        plus = s.replace("\\pm", "+").replace("\\mp", "-")
        minus = s.replace("\\pm", "-").replace("\\mp", "+")
        return Group("group", raw, items=(_parse(plus, False), _parse(minus, False)))
    # x \in [2, 5)
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)
    matrix = _MATRIX.fullmatch(s)
    if matrix:
        rows = [r for r in re.split(r"\\\\", matrix.group(2)) if r.strip()]
        cells = [tuple(_item(c.strip()) for c in r.split("&")) for r in rows]
        if cells and all(len(r) == len(cells[0]) for r in cells) and all(c.strip() for r in rows for c in r.split("&")):
            return Seq("seq", raw, open="matrix", close="matrix",
                       items=tuple(Seq("seq", r_raw, open="row", close="row", items=r) for r_raw, r in zip(rows, cells)))
    if s.startswith("{") and s.endswith("}") and _one_group(s) and "," in s:
        return _parse(s[1:-1].strip(), False)  # "{-2021, 2021}": bare braces only group
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2].strip()
        items = split_top(inner, re.compile(r"\s*[,;]\s*")) if inner else []
        return Group("group", raw, items=tuple(_item(p) for p in items if p))
    unions = split_top(s, _UNION)
    if len(unions) > 1:
        return Group("group", raw, items=tuple(_parse(p, False) for p in unions))
    parts = [p for p in split_top(s, _LIST_SEP) if p]  # "19, 46, \text{ and } 82" leaves an empty piece
    if len(parts) > 1:
        return Group("group", raw, items=tuple(_item(p) for p in parts), bare=True)
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _one_group(s):
        inner = s[1:-1]
        items = split_top(inner, re.compile(r"\s*,\s*"))
        if len(items) > 1 and all(items):
            return Seq("seq", raw, open=s[0], close=s[-1], items=tuple(_item(p) for p in items))
    rel = split_top(s, _REL_SEP)
    if len(rel) > 1:
        ops = tuple(_REL_SEP.match(m.group(0)).group(1) for m in _REL_SEP.finditer(s))
        ops = tuple({"\\le": "<=", "\\ge": ">="}.get(o, o) for o in ops)
        if len(ops) == len(rel) - 1 and all(rel):
            return Relation("relation", raw, parts=tuple(_item(p) for p in rel), ops=ops)
    if re.fullmatch(r"[^:]+:[^:]+", s) and "\\" not in s.split(":")[0][-1:]:
        a, b = s.split(":")
        return Seq("seq", raw, open="", close=":", items=(_item(a.strip()), _item(b.strip())))
    return parse_scalar(raw, s)


_PAREN_LETTER = re.compile(r"^(?:\\[a-z]+\{\s*)?\([A-J]\)")


def _letter(s: str) -> Letter | None:
    """"B", "(B)", "B. 2\\sqrt{3}", "Option B", "\\text{(B)}" -> Letter; "A or B" is not one."""
    m = _LETTER.match(_OPTION_WORD.sub("", s))
    if not m:
        return None
    rest_text = (m.group(2) or m.group(3) or "").strip()
    if rest_text and re.match(r"^(?:or|and|/|,)(?:\b|\s|$)|^\(?[A-J]\)?$", rest_text) and rest_text.strip("()") != m.group(1):
        return None  # "A or B", "A, B": not one option ("(C) C" is option C whose text is "C")
    if m.group(3) is not None and re.match(r"^[-+=<>*/^_\\]|^(?:or|and)\b", rest_text) and not (
            re.match(r"^\\[a-zA-Z]", rest_text) and _PAREN_LETTER.match(s)):
        return None  # "D = (0, 1)" and "A + B" are expressions, not option D / A; "(D) \frac{4}{5}" is option D
    rest = None
    if rest_text and balanced(rest_text.replace("\\{", "").replace("\\}", "")):
        if rest_text[0] == "(" and rest_text[-1] == ")" and _one_group(rest_text) and "," not in rest_text:
            rest_text = rest_text[1:-1].strip()  # "A (6cm)", "B (No)": the option's text in parentheses
        rest = _parse(rest_text, allow_letter=False)
    return Letter("letter", s, letter=m.group(1), rest=rest)


def _one_group(s: str) -> bool:
    """Whether the outer brackets of s enclose all of it: "(1,2)" yes, "(1)+(2)" no."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPENERS:
            depth += 1
        elif c in _CLOSERS:
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return True


class AnswerError(ValueError):
    """An answer string that cannot be read at all (unbalanced brackets, too long)."""


@functools.lru_cache(maxsize=65536)
def parse_answer(s: str, allow_letter: bool = True) -> Answer:
    """Parse one answer string (gold, prediction or option); cached, since golds repeat.

    Raises AnswerError for unbalanced or over-long input.
    """
    s = strip_wrappers(s)
    if len(s) > MAX_ANSWER_CHARS:
        raise AnswerError("too_long")
    s = normalise_latex(s)
    s = strip_wrappers(s)
    if UNREADABLE in s:
        raise AnswerError("parse_error")  # a direction control inside: what is shown is not what is written
    if has_kept_numeral(s):
        return Text("text", s, key=text_key(s))  # "①②", "٣", "Ⅻ": compared as written, never as numbers
    if allow_letter and (letter := _letter(s)) is not None:
        return letter
    if not balanced(s.replace("\\{", "").replace("\\}", "")):
        raise AnswerError("parse_error")
    return _parse(s, allow_letter)
