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
# that NFKC cannot turn "1½" into "11⁄2". Superscripts and subscripts are handled apart
# (``unify``): NFKC would turn the exponent of "2⁵" into a digit (25).
_CHAR_MAP = {
    "−": "-", "–": "-", "—": "-", "‐": "-", "‑": "-", "﹣": "-", "－": "-",
    "×": r"\times ", "÷": r"\div ", "·": r"\cdot ", "⋅": r"\cdot ", "∙": r"\cdot ",
    "√": r"\sqrt", "π": r"\pi ", "∞": r"\infty ", "≤": r"\le ", "≥": r"\ge ",
    "⩽": r"\le ", "⩾": r"\ge ", "≦": r"\le ", "≧": r"\ge ", "≠": r"\ne ", "±": r"\pm ", "∓": r"\mp ",
    "≨": r"\lneq ", "≩": r"\gneq ", "≪": r"\ll ", "≫": r"\gg ", "≲": r"\lesssim ", "≳": r"\gtrsim ",
    "≺": r"\prec ", "≻": r"\succ ", "≮": r"\nless ", "≯": r"\ngtr ", "≰": r"\nleq ", "≱": r"\ngeq ",
    "°": r"^\circ ", "℃": r"^\circ ", "º": r"^\circ ", "˚": r"^\circ ", "ᵒ": r"^\circ ",
    "∪": r"\cup ", "∩": r"\cap ", "∈": r"\in ",
    "α": r"\alpha ", "β": r"\beta ", "θ": r"\theta ", "φ": r"\phi ",
    "，": ",", "：": ":", "；": ";", "（": "(", "）": ")", "\u3000": " ", "\xa0": " ",
    "％": "%", "$": "$", "“": '"', "”": '"', "’": "'", "‘": "'",
}
_VULGAR = {
    "½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5),
    "⅖": (2, 5), "⅗": (3, 5), "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8),
    "⅜": (3, 8), "⅝": (5, 8), "⅞": (7, 8), "⅐": (1, 7), "⅑": (1, 9), "⅒": (1, 10),
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

# ---------------------------------------------------------------- look-alike digits and invisible characters
#
# What a reader sees is what the verifier reads (docs/verifier_eval.md, "Look-alike digits"):
# - invisible characters (zero-width spaces and joiners, the word joiner, soft hyphens, invisible
#   operators, variation selectors) are dropped: "1<U+2060>2" shows, and is, 12;
# - direction controls (they reorder what is shown: "<U+202E>21" shows 12) and visible prefix marks
#   become UNREADABLE, and an answer holding it is refused;
# - superscripts are exponents ("2⁵" -> "2^{5}"), subscripts are indices ("x₁" -> "x_{1}", "101₂" -> "101_{2}");
# - full-width and mathematical-styled digits (１２, 𝟏𝟐) are the ASCII digits in another width or style;
# - every other character Unicode gives a digit value (other scripts' digits, circled, parenthesised,
#   Roman numerals...) is kept as written, out of NFKC's reach: an answer holding one is compared as text
#   only, so "①②" never equals 12.
UNREADABLE = "\ufffd"
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_PREFIX_MARKS = "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u08e2\U000110bd\U000110cd"
_HANGUL_FILLERS = "\u115f\u1160\u3164\uffa0"
_NOT_EXPONENTS = "™℠"


class _Tables:
    """Character classes for ``unify``, built once on the first non-ASCII input (~0.1 s)."""

    def __init__(self) -> None:
        strip, sup, sub, styled, keep = [], {}, {}, {}, []
        for cp in range(0x80, 0x20000):
            ch = chr(cp)
            if ch in _BIDI or ch in _PREFIX_MARKS:
                continue
            cat = unicodedata.category(ch)
            dec = unicodedata.decomposition(ch)
            if cat == "Cf" or ch in _HANGUL_FILLERS or 0xFE00 <= cp <= 0xFE0F or cp == 0x034F:
                strip.append(ch)
            elif dec.startswith("<super>") and ch not in _NOT_EXPONENTS and ch not in _CHAR_MAP:
                sup[ch] = _NEEDS_MAP.sub(_map_char, unicodedata.normalize("NFKC", ch))  # "⁻" -> "-", not "−"
            elif dec.startswith("<sub>"):
                sub[ch] = _NEEDS_MAP.sub(_map_char, unicodedata.normalize("NFKC", ch))
            elif cat == "Nd":
                plain = unicodedata.normalize("NFKC", ch)
                if plain.isascii() and plain.isdigit():
                    styled[ch] = plain
                else:
                    keep.append(ch)
            elif cat in ("No", "Nl") and ch not in _VULGAR:
                keep.append(ch)
        strip += [chr(c) for c in range(0xE0000, 0xE0080)] + [chr(c) for c in range(0xE0100, 0xE01F0)]
        self.strip = re.compile(_char_class(strip))
        self.refuse = re.compile(_char_class(list(_BIDI + _PREFIX_MARKS)))
        self.sup_map, self.sub_map = sup, sub
        self.sup = re.compile(_char_class(list(sup)) + "+")
        self.sub = re.compile(_char_class(list(sub)) + "+")
        self.styled = str.maketrans(styled)
        self.styled_re = re.compile(_char_class(list(styled)))
        self.keep = re.compile(_char_class(keep))
        self.keep_split = re.compile("(" + _char_class(keep) + "+)")
        self.any = re.compile("|".join(_char_class(x) for x in (strip, list(_BIDI + _PREFIX_MARKS), list(sup),
                                                                 list(sub), list(styled))))


def _char_class(chars: list[str]) -> str:
    """A compact regex character class for a set of characters (runs become ranges)."""
    cps = sorted({ord(c) for c in chars})
    parts, i = [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        a, b = re.escape(chr(cps[i])), re.escape(chr(cps[j]))
        parts.append(a if i == j else f"{a}-{b}")
        i = j + 1
    return "[" + "".join(parts) + "]"


_TABLES: _Tables | None = None


def _tables() -> _Tables:
    global _TABLES
    if _TABLES is None:
        _TABLES = _Tables()
    return _TABLES


def unify(s: str) -> str:
    """Invisible characters dropped, direction controls made UNREADABLE, superscripts as exponents,
    subscripts as indices, styled digits as ASCII digits (see the block comment above).

    >>> unify("2\\u2075 + x\\u2081 = 1\\u20602")
    '2^{5} + x_{1} = 12'
    """
    if s.isascii():
        return s
    t = _tables()
    if t.any.search(s) is None:
        return s
    s = t.strip.sub("", s)
    s = t.refuse.sub(UNREADABLE, s)
    s = t.sup.sub(lambda m: "^{" + "".join(t.sup_map[c] for c in m.group(0)) + "}", s)
    s = t.sub.sub(lambda m: "_{" + "".join(t.sub_map[c] for c in m.group(0)) + "}", s)
    return s.translate(t.styled)


def has_kept_numeral(s: str) -> bool:
    """Whether ``s`` holds a character with a digit value that is not read as a digit (①, ٣, Ⅻ)."""
    return not s.isascii() and _tables().keep.search(s) is not None


def _nfkc_keeping_numerals(s: str) -> str:
    parts = _tables().keep_split.split(s)
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


def clean(s: str) -> str:
    """Unicode to ASCII/LaTeX: full-width digits, minus signs, ½, π, √, ², °; control characters dropped;
    look-alike digits and invisible characters as ``unify`` says."""
    s = _CONTROL.sub("", s)
    if not s.isascii():
        s = _mixed_vulgar(s)
        s = _NEEDS_MAP.sub(_map_char, s)
        s = unify(s)
        s = _nfkc_keeping_numerals(s).replace("⁄", "/")
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
        s = s.strip()
        if "**" in s or s[:1] in ("*", "_") or s[-1:] in ("*", "_"):
            # Two or more "**" are emphasis (a reader sees "**2**3" as 23, never 2**3 = 8); one may be a power.
            s = s.replace("**", "").strip() if s.count("**") >= 2 else _EMPHASIS.sub("", s).strip()
        s = s.rstrip(".。").strip()
        if s == before:
            break
    return s


# Markdown emphasis around an answer or its parts ("**(D)**", "(B)**, No", "__12__"); never "2**3".
_EMPHASIS = re.compile(r"^[*_]{1,3}(?=\S)|(?<=\S)[*_]{1,3}$|(?<![\w)}\]*])\*\*(?=[\w(\\$])|(?<=[\w)}\]])\*\*(?![\w({\[*])")


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
_SPACES = re.compile(r"(?<!\\)\\[,;:! ]|~|\\displaystyle|\\big[lr]?|\\Big[lr]?")
_SIZED = re.compile(r"\\(?:left|right)(?![a-zA-Z])")  # "3\left(x+1\right)" is "3(x+1)", not "3 (x+1)"
_STRAY_BACKSLASH = re.compile(r"(?<!\\)\\(?=\d)")  # "\15": a backslash before a number is a typo
_BRACED_INDEX = re.compile(r"_\{(\w)\}")  # x_{1} and x_1 are one spelling
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
    s = s.replace(r"\leqslant", r"\le").replace(r"\geqslant", r"\ge").replace(r"\leq", r"\le").replace(r"\geq", r"\ge")
    s = s.replace(r"\lt", "<").replace(r"\gt", ">").replace(r"\neq", r"\ne")
    s = s.replace(r"\lbrace", r"\{").replace(r"\rbrace", r"\}").replace(r"\{,\}", ",")
    s = _QUAD.sub(", ", s)  # "2 \quad 3": two answers
    s = _SIZED.sub("", s)
    s = _SPACES.sub(" ", s)
    s = _STRAY_BACKSLASH.sub("", s)
    if "_{" in s:
        s = _BRACED_INDEX.sub(r"_\1", s)
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
