"""Naming what must not leak: literal strings, regexes and built-in detectors.

A *secret spec* is ``builtin`` (all detectors below) or the path of a text file with one secret a
line: a literal string, or ``re:`` followed by a Python regex. Blank lines are skipped. Each secret
is named by its line as written (a detector by its name) in reports and ``summary.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from goldfish.utf8 import read_utf8

# Deliberately broad (a detector should rather flag a number that is not a phone than miss one).
BUILTIN_DETECTORS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone": r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)|\d{2,4})[\s.-]?\d{3}[\s.-]?\d{3,4}(?!\w)",
    "url": r"https?://[^\s<>\"'()]+[^\s<>\"'().,;:!?]",
    "ipv4": r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])",
    "card": r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)",
    "api_key": r"(?<![\w-])(?:(?:sk|pk|rk|ghp|gho|ghs|xox[abprs]|AKIA|AIza)[-_A-Za-z0-9]{12,}"
               r"|(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,})(?![\w-])",
}


@dataclass(frozen=True)
class Secret:
    """One named secret: a literal string or a compiled regex."""

    name: str
    literal: str | None = None
    pattern: re.Pattern | None = None

    def find(self, text: str) -> set[str]:
        """The concrete strings of this secret that occur in ``text``."""
        if self.literal is not None:
            return {self.literal} if self.literal in text else set()
        return {m.group(0) for m in self.pattern.finditer(text) if m.group(0)}

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character ranges of every occurrence in ``text`` (for highlighting and protection)."""
        if self.literal is not None:
            return [(m.start(), m.end()) for m in re.finditer(re.escape(self.literal), text)]
        return [m.span() for m in self.pattern.finditer(text) if m.end() > m.start()]


def parse_secret(line: str) -> Secret:
    """One secret from a line of a secrets file: ``re:REGEX`` or a literal; ValueError on a bad regex."""
    if line.startswith("re:"):
        try:
            return Secret(line, pattern=re.compile(line[3:]))
        except re.error as e:
            raise ValueError(f"not a valid regex ({e})") from None
    return Secret(line, literal=line)


def secret_line(secret: Secret) -> str:
    """The line that defines ``secret`` (``parse_secret`` reads it back; a detector becomes its regex)."""
    return secret.literal if secret.literal is not None else "re:" + secret.pattern.pattern


def find_spans(text: str, secrets: list[Secret]) -> list[tuple[int, int]]:
    """Character ranges of every occurrence of every secret in ``text`` (they may overlap)."""
    return [span for s in secrets for span in s.spans(text)]


def is_detector(secret: Secret) -> bool:
    """A built-in detector (``builtin``), not a secret a user wrote in a file."""
    return secret.pattern is not None and BUILTIN_DETECTORS.get(secret.name) == secret.pattern.pattern


def builtin_secrets() -> list[Secret]:
    return [Secret(name, pattern=re.compile(rx)) for name, rx in BUILTIN_DETECTORS.items()]


def load_secrets(specs: list[str]) -> list[Secret]:
    """Secrets from specs (``builtin`` or files, see module docstring). ValueError naming the file
    (and line) when it is missing, not UTF-8 text, holds no secret, or has a bad regex."""
    out: list[Secret] = []
    for spec in specs:
        if spec == "builtin":
            out += builtin_secrets()
            continue
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"secrets {spec}: no such file (give a file with one secret a line, or 'builtin')")
        found = 0
        for n, line in enumerate(read_utf8(path).removeprefix("\ufeff").splitlines(), 1):
            if not (line := line.strip()):  # a trailing space or an editor's BOM would otherwise match nothing, silently
                continue
            try:
                out.append(parse_secret(line))
            except ValueError as e:
                raise ValueError(f"{spec}:{n}: {e}") from None
            found += 1
        if not found:
            raise ValueError(f"secrets file {spec} holds no secret (it is empty or blank); write one literal or "
                             "re:REGEX a line")
    names = [s.name for s in out]
    return [s for i, s in enumerate(out) if s.name not in names[:i]]  # each name once, first kept
