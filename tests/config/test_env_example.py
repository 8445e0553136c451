"""`.env.example` documents every variable the settings and the run script read."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READERS = [
    *sorted((ROOT / "config" / "settings").glob("*.py")),
    ROOT / "config" / "gunicorn.conf.py",
    *sorted((ROOT / "scripts").glob("*.py")),
]
PATTERNS = [
    r"""\benv(?:\.\w+)?\(\s*["']([A-Z][A-Z0-9_]+)["']""",
    r"""os\.environ(?:\.get|\.setdefault)?\(\s*["']([A-Z][A-Z0-9_]+)["']""",
    r"""os\.environ\[["']([A-Z][A-Z0-9_]+)["']\]""",
]
NOT_SETTINGS = {"PYTHONUNBUFFERED"}


def test_every_variable_read_is_documented():
    read = set()
    for path in READERS:
        text = path.read_text()
        for pattern in PATTERNS:
            read.update(re.findall(pattern, text))
    documented = set(
        re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )

    assert read, "the patterns found no variables at all"
    assert read - NOT_SETTINGS <= documented, sorted(read - NOT_SETTINGS - documented)
