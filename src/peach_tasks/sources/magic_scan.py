"""Where IPython magics may be in a cell: a fast regex for candidate lines, and a line
scanner that knows strings, brackets, comments and continuations (a ``%`` inside a
string or a bracket is Python, never a magic)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Cheap whole-cell test for the lines that may be magics: a cell without any is
# returned as is, and the line scanner stops after the last one. It may say yes
# wrongly (a comment ending in '?', a '%' starting a line inside a string); the
# scanner, which knows about strings, brackets and comments, then decides.
# Matched against the source behind a '\n': MULTILINE '^' is several times slower.
_MAYBE_MAGIC = re.compile(r"\n[ \t]*[%!?]|=[ \t]*[%!]|\?[ \t]*(?:#[^\n]*)?(?=\n|\Z)")
# Outside strings, the only characters that change the scanner's state.
_CODE_SPECIAL = re.compile(r"""[#'"\\()\[\]{}]""")
_STRING_END = {q: re.compile(r"\\|" + re.escape(q)) for q in ('"""', "'''", '"', "'")}


@dataclass
class Scan:
    """Where the line scanner stands at the start of a line."""

    quote: str | None = None  # the open string's delimiter
    depth: int = 0  # open brackets
    continued: bool = False  # previous line ended with a backslash outside strings

    @property
    def at_statement_start(self) -> bool:
        return self.quote is None and self.depth == 0 and not self.continued


def candidate_lines(source: str) -> set[int]:
    """0-based numbers of the lines that may hold a magic, found by one regex pass."""
    padded = "\n" + source
    found: set[int] = set()
    line, position = -1, 0  # the padding newline is not a line break of the source
    for match in _MAYBE_MAGIC.finditer(padded):
        anchor = match.start() + (padded[match.start()] == "\n")  # first char on the line
        line += padded.count("\n", position, anchor)
        position = anchor
        found.add(line)
    return found


def scan_line(line: str, scan: Scan) -> int:
    """Advance ``scan`` over one line; return where the line's code ends (a comment starts).

    Regex jumps go from one quote, bracket, backslash or '#' to the next, so plain
    code costs nothing in Python per character.
    """
    i, n = 0, len(line)
    scan.continued = False
    while i < n:
        if scan.quote is not None:
            match = _STRING_END[scan.quote].search(line, i)
            if match is None:
                break
            if match.group() == "\\":
                if match.end() == n:  # backslash-newline: the string goes on
                    scan.continued = True
                i = match.end() + 1
                continue
            scan.quote = None
            i = match.end()
            continue
        match = _CODE_SPECIAL.search(line, i)
        if match is None:
            break
        char, i = match.group(), match.start()
        if char == "#":
            return i
        if char in "'\"":
            scan.quote = char * 3 if line.startswith(char * 3, i) else char
            i += len(scan.quote)
            continue
        if char == "\\":
            scan.continued = i == n - 1
        elif char in "([{":
            scan.depth += 1
        elif char in ")]}":
            scan.depth = max(0, scan.depth - 1)  # unbalanced code is compile()'s to report
        i += 1
    if scan.quote in ("'", '"') and not scan.continued:
        scan.quote = None  # unterminated one-line string: a syntax error compile() reports
    if scan.quote is not None:
        scan.continued = False  # inside a string, a trailing backslash is only text
    return n
