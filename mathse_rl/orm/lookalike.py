"""Fold look-alike and invisible characters so disguised keywords are seen for what they read as.

A hostile text writes ``ѕtatus`` with a Cyrillic ``ѕ``, ``ＣＯＲＲＥＣＴ`` in fullwidth forms,
``sta\u200dtus`` with a zero-width joiner, ``C\u0301ORRECT`` with a combining accent, or
``ſtatus`` with a long s (which Python's case-insensitive regexes already match as ``s``).
:func:`fold` maps each such character to the ASCII letter it imitates and drops the invisible
ones; the parser then sees every verdict, however it is written, and treats one that was
written in disguise as ambiguous. A look-alike missing from the table stays as it is: the
parser does not read it as a keyword at all, so a gap here never turns text into a verdict.

    >>> fold("ѕtatus: ＣＯＲ\u200bＲＥＣＴ")
    'status: CORRECT'
    >>> letters("The Status: ｗｒｏｎｇ!")
    'thestatuswrong'
"""

from __future__ import annotations

import re
import unicodedata

# Letters of other scripts and Latin variants that imitate ASCII letters (after NFKD), plus quotes:
# (look-alikes, the ASCII characters they imitate, position by position).
_PAIRS = [
    ("аврсеһіјкмноԛѕтухԁԝӏ", "abpcehijkmhoqstyxdwl"),  # Cyrillic lower
    ("АВСЕНІЈКМОРЅТХУԌԀԜ", "ABCEHIJKMOPSTXYGDW"),  # Cyrillic upper
    ("αβεικνορτυχγ", "abeikvoptuxy"),  # Greek lower
    ("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX"),  # Greek upper
    ("ıȷɑɡɩʀᴄᴏᴛᴡɴɢᴜꜱᴇʟᴍᴘ", "ijagiRcotwnGuseLmp"),  # Latin variants and small capitals
    ("ꓚꓳꓣꓰꓔꓪꓠꓖꓢꓴ", "CORETWNGSU"),  # Lisu
    ("ᏟᎡᎬᎢᏔᏀᏚ", "CRETWGS"),  # Cherokee
    ("“”„‟″«»", '"' * 7), ("‘’‚‛′", "'" * 5), ("꞉", ":"),  # quotes and colons
]
assert all(len(a) == len(b) for a, b in _PAIRS)
_CONFUSABLE = {a: b for chars, ascii_ in _PAIRS for a, b in zip(chars, ascii_)}
_INVISIBLE = frozenset(("Cf", "Mn", "Me", "Cc", "Zl", "Zp"))
_CACHE: dict[str, str] = {}
_CACHE_MAX = 1 << 16


def _fold_char(ch: str) -> str:
    """The ASCII character ``ch`` imitates, "" when it is invisible, else ``ch`` itself."""
    if unicodedata.category(ch) in _INVISIBLE:
        return ""
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.category(c).startswith("M"))
    base = decomposed if len(decomposed) == 1 else ch
    base = _CONFUSABLE.get(base, base)
    return base if base.isascii() else ch


def fold(text: str) -> str:
    """``text`` with look-alikes mapped to ASCII and invisible characters removed (ASCII text is unchanged).

    Linear: one translation table for the distinct non-ASCII characters, applied in C.
    """
    if text.isascii():
        return text
    table: dict[int, str] = {}
    for ch in set(text):
        if ch.isascii():
            continue
        folded = _CACHE.get(ch)
        if folded is None:
            folded = _fold_char(ch)
            if len(_CACHE) < _CACHE_MAX:
                _CACHE[ch] = folded
        if folded != ch:
            table[ord(ch)] = folded
    return text.translate(table)


_NOT_LETTER = re.compile(r"[^a-z]+")


def letters(text: str) -> str:
    """The ASCII letters of ``fold(text)``, lower-cased: the form two texts are compared in
    (spacing, punctuation, quotes and look-alikes do not matter)."""
    return _NOT_LETTER.sub("", fold(text).lower())
