"""What one doctor check found: passed, failed (with a fix) or skipped (with why)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    """Outcome of a check; ``mark`` is what the technician sees."""

    OK = "ok"
    FAIL = "fail"
    SKIP = "skip"

    @property
    def mark(self) -> str:
        """✓, ✗ or – (skipped / not applicable)."""
        return {"ok": "✓", "fail": "✗", "skip": "–"}[self.value]


@dataclass(frozen=True)
class Result:
    """One line of ``gatectl doctor``. ``detail`` and ``fix`` are single lines that never
    carry an attendee id, an image, an embedding or key material (P10)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        """True for ✗."""
        return self.status is Status.FAIL

    def as_dict(self) -> dict[str, str]:
        """JSON-able form for ``--json``."""
        return {"name": self.name, "status": self.status.value, "detail": self.detail,
                "fix": self.fix}


def ok(name: str, detail: str) -> Result:
    """A passed check."""
    return Result(name, Status.OK, detail)


def fail(name: str, detail: str, fix: str) -> Result:
    """A failed check, with the one-line fix."""
    return Result(name, Status.FAIL, detail, fix)


def skip(name: str, detail: str) -> Result:
    """A check that does not apply here, or could not tell."""
    return Result(name, Status.SKIP, detail)
