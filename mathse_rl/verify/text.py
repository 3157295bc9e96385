"""String-level normalisation shared by extraction and answer parsing.

Everything here is plain string work (no SymPy), linear in the input length.

>>> clean("１２ − ½")
'12 - \\\\frac{1}{2}'
>>> strip_wrappers("$\\\\boxed{10}$")
'10'
"""

from __future__ import annotations

import re
import unicodedata

# Characters models and datasets use for the same symbols; mapped before NFKC so
# that NFKC cannot turn "x²" into "x2" or "1½" into "11⁄2".
_CHAR_MAP = {
    "−": "-", "–": "-", "—": "-", "‐": "-", "‑": "-", "﹣": "-", "－": "-",
    "×": r"\times ", "÷": r"\div ", "·": r"\cdot ", "⋅": r"\cdot ", "∙": r"\cdot ",
    "√": r"\sqrt", "π": r"\pi ", "∞": r"\infty ", "≤": r"\le ", "≥": r"\ge ",
    "⩽": r"\le ", "⩾": r"\ge ", "≠": r"\ne ", "±": r"\pm ", "∓": r"\mp ",
    "°": r"^\circ ", "℃": r"^\circ ", "∪": r"\cup ", "∩": r"\cap ", "∈": r"\in ",
    "²": "^2", "³": "^3", "¹": "^1", "⁴": "^4", "⁻": "^-",
    "α": r"\alpha ", "β": r"\beta ", "θ": r"\theta ", "φ": r"\phi ",
    "，": ",", "：": ":", "；": ";", "（": "(", "）": ")", "\u3000": " ", "\xa0": " ",
    "％": "%", "$": "$", "“": '"', "”": '"', "’": "'", "‘": "'",
}
_VULGAR = {
    "½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5),
    "⅖": (2, 5), "⅗": (3, 5), "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8),
    "⅜": (3, 8), "⅝": (5, 8), "⅞": (7, 8),
}
_NEEDS_MAP = re.compile("[" + re.escape("".join(_CHAR_MAP) + "".join(_VULGAR)) + "]")


def _map_char(m: re.Match) -> str:
    ch = m.group(0)
    if ch in _VULGAR:
        a, b = _VULGAR[ch]
        return rf"\frac{{{a}}}{{{b}}}"
    return _CHAR_MAP[ch]


def _mixed_vulgar(s: str) -> str:
    # "1½" means 1 + 1/2: put a plus between a digit and a vulgar fraction.
    return re.sub(r"(\d)\s*(?=[" + "".join(_VULGAR) + "])", r"\1+", s)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean(s: str) -> str:
    """Unicode to ASCII/LaTeX: full-width digits, minus signs, ½, π, √, ², °; control characters dropped."""
    s = _CONTROL.sub("", s)
    if not s.isascii():
        s = _mixed_vulgar(s)
        s = _NEEDS_MAP.sub(_map_char, s)
        s = unicodedata.normalize("NFKC", s).replace("⁄", "/")
    return s


_WRAPPERS = [
    re.compile(r"^\$\$(.*)\$\$$", re.S),
    re.compile(r"^\$(.*)\$$", re.S),
    re.compile(r"^\\\((.*)\\\)$", re.S),
    re.compile(r"^\\\[(.*)\\\]$", re.S),
]


def strip_wrappers(s: str) -> str:
    """Remove math delimiters and one enclosing \\boxed{...}/\\fbox{...} around a whole answer."""
    s = s.strip()
    for _ in range(4):
        before = s
        for rx in _WRAPPERS:
            m = rx.match(s)
            if m:
                s = m.group(1).strip()
        for cmd in ("\\boxed", "\\fbox"):
            if s.startswith(cmd):
                inner, end = braced(s, len(cmd))
                if inner is not None and end == len(s):
                    s = inner.strip()
        s = s.strip().rstrip(".。").strip()
        if s == before:
            break
    return s


def braced(s: str, i: int) -> tuple[str | None, int]:
    """The content of the brace group starting at ``s[i]`` (spaces skipped) and the index after it.

    >>> braced("\\\\boxed{a{b}c}d", 6)
    ('a{b}c', 13)
    """
    n = len(s)
    while i < n and s[i] == " ":
        i += 1
    if i >= n or s[i] != "{":
        return None, i
    depth = 0
    for j in range(i, n):
        c = s[j]
        if c == "\\":
            continue
        if c == "{" and (j == 0 or s[j - 1] != "\\"):
            depth += 1
        elif c == "}" and (j == 0 or s[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return s[i + 1 : j], j + 1
    return None, n


def balanced(s: str) -> bool:
    """Whether (), [] and {} nest properly enough to parse; intervals like [2,5) are allowed."""
    depth_curly = 0
    depth_round = 0
    for c in s:
        if c == "{":
            depth_curly += 1
        elif c == "}":
            depth_curly -= 1
            if depth_curly < 0:
                return False
        elif c in "([":
            depth_round += 1
        elif c in ")]":
            depth_round -= 1
            if depth_round < 0:
                return False
    return depth_curly == 0 and depth_round == 0


_INLINE_DOLLAR = re.compile(r"(?<!\\)\$")  # "$125$ miles": math delimiters inside an answer
_SPACES = re.compile(r"(?<!\\)\\[,;:! ]|~|\\displaystyle|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\big[lr]?|\\Big[lr]?")
_QUAD = re.compile(r"\s*,?\s*\\q?quad\s*,?\s*")
_THOUSANDS_BRACED = re.compile(r"(?<=\d)(?:\{,\}|,\\!\s*)(?=\d{3}(?!\d))")  # 1{,}000 and 32,\! 349
_THOUSANDS_SPACE = re.compile(r"(?<=\d)(?:\\,|\\ |\\;|\\!| |\u2009|\u202f)(?=\d{3}(?!\d))")
# 1,000,000 and $16,386.20 at the start of an answer with no other comma: one number.
_THOUSANDS_LEAD = re.compile(r"^(\\?\$\s*)?([-+]?(?!0,)\d{1,3}(?:,\d{3})+(?:\.\d+)?)(?![\d,])")


_MIXED = re.compile(r"(?:(?<=^)|(?<=[\s=(,-]))(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}")
_REPEATING = re.compile(r"(\d*)\.(\d*)\\(?:overline|dot)\{(\d+)\}")


def _repeating(m: re.Match) -> str:
    whole, fixed, rep = m.group(1) or "0", m.group(2), m.group(3)
    num = int(whole + fixed + rep) - int(whole + fixed)
    den = 10 ** len(fixed) * (10 ** len(rep) - 1)
    return rf"\frac{{{num}}}{{{den}}}"


def _mixed(m: re.Match) -> str:
    a, b, c = m.groups()
    if int(b) >= int(c):
        return m.group(0)  # not a proper fraction: keep the product reading
    return rf"({a}+\frac{{{b}}}{{{c}}})"


def normalise_latex(s: str) -> str:
    """LaTeX spelling variants to one form; thousands separators removed; spacing collapsed."""
    s = clean(s)
    s = _THOUSANDS_BRACED.sub("", s)
    s = _THOUSANDS_SPACE.sub("", s)
    s = _INLINE_DOLLAR.sub("", s)
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac").replace(r"\cfrac", r"\frac")
    s = s.replace(r"\leq", r"\le").replace(r"\geq", r"\ge").replace(r"\leqslant", r"\le").replace(r"\geqslant", r"\ge")
    s = s.replace(r"\lt", "<").replace(r"\gt", ">").replace(r"\neq", r"\ne")
    s = s.replace(r"\lbrace", r"\{").replace(r"\rbrace", r"\}").replace(r"\{,\}", ",")
    s = _QUAD.sub(", ", s)  # "2 \quad 3": two answers
    s = _SPACES.sub(" ", s)
    s = re.sub(r"\s+", " ", s).strip()
    if "\\frac" in s:
        s = _MIXED.sub(_mixed, s)
    if "\\overline" in s or "\\dot" in s:
        s = _REPEATING.sub(_repeating, s)
    m = _THOUSANDS_LEAD.match(s)
    if m and "," not in s[m.end():]:
        s = s[: m.start(2)] + m.group(2).replace(",", "") + s[m.end():]
    return s


def text_key(s: str) -> str:
    """A key for comparing short text answers: case, spaces, \\text{} and punctuation ignored.

    >>> text_key("\\\\text{ Isosceles }.")
    'isosceles'
    """
    s = clean(s)
    s = re.sub(r"\\(?:text|textbf|textnormal|textrm|mathrm|mathbf|textit|operatorname|mbox)\s*\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\", " ").lower()
    s = re.sub(r"[\s{}$.,;:!?\"'`*]+", " ", s).strip()
    return s
