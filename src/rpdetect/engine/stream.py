"""How ``rpdetect detect`` prints: one line (or JSON object) per image as soon as it is known.

* Text lines carry file names as given, except that a name with a non-printable character (a
  newline, a tab, an ANSI escape, a Unicode direction override...) is printed as a Python string
  literal (``'a\\nb.png'``), so no name can forge a result line or drive the terminal. Error
  messages get the same characters escaped (``\\n``, ``\\x1b``).
* JSON output is one document, written as it goes: the header, then each result as it is
  known, then the failures; it is closed properly on Ctrl-C (``"interrupted": true``), and never
  holds NaN or Infinity tokens.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

__all__ = ["JsonStream", "display_name", "escape_controls"]


def _escape_char(c: str) -> str:
    if c.isprintable():
        return c
    return repr(c)[1:-1] if c in "\t\n\r" else (
        f"\\x{ord(c):02x}" if ord(c) < 0x100 else
        f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")


def escape_controls(text: str) -> str:
    """``text`` with every non-printable character written as its escape (``\\n``, ``\\x1b``)."""
    return text if text.isprintable() else "".join(_escape_char(c) for c in text)


def display_name(name: str) -> str:
    """A file name fit for one line of text: unchanged if every character is printable, else
    a Python string literal (quoted, backslashes doubled, controls escaped)."""
    if name.isprintable():
        return name
    quoted = repr(name)
    return quoted if quoted.isprintable() else "'" + escape_controls(
        name.replace("\\", "\\\\").replace("'", "\\'")) + "'"


def _dumps(value: Any, indent: int) -> str:
    text = json.dumps(value, indent=2, allow_nan=False)
    return text.replace("\n", "\n" + " " * indent)


class JsonStream:
    """One JSON document ``{header..., "results": [...], "failures": [...]}`` written
    incrementally to ``out`` (flushed after each result)."""

    def __init__(self, out: TextIO, header: dict[str, Any]) -> None:
        self.out = out
        self.count = 0
        body = _dumps(header, 0)
        self.out.write(body[:-2] + ',\n  "results": [')  # header without its closing "\n}"
        self.out.flush()

    def result(self, item: dict[str, Any]) -> None:
        self.out.write(("," if self.count else "") + "\n    " + _dumps(item, 4))
        self.out.flush()
        self.count += 1

    def close(self, failures: list[dict[str, Any]], *, interrupted: bool = False) -> None:
        tail = ("\n  ]" if self.count else "]") + ',\n  "failures": ' + _dumps(failures, 2)
        if interrupted:
            tail += ',\n  "interrupted": true'
        self.out.write(tail + "\n}\n")
        self.out.flush()
