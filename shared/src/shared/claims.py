"""Claim records: a paper's headline result, reproduced in miniature and reported uniformly.

Every package's benchmark builds a list of :class:`Claim` and hands it to :func:`write_results`,
which writes ``results/<dist>.json`` atomically. :func:`render_markdown` turns the records into the
table that package READMEs and ``docs/results.md`` show.

A claim compares a *measured* value against a *target* with a comparator (``>=``, ``<=``, strict
``>``/``<`` for "beats" or "exceeds", ``==``, ``~=`` for a tolerance). ``holds`` is computed here, never passed in, so no benchmark can report a
claim as holding without the numbers that make it hold.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.files import atomic_write_text

__all__ = [
    "COMPARATORS",
    "Claim",
    "load_results",
    "render_markdown",
    "replace_marked_section",
    "write_results",
]

COMPARATORS = (">=", "<=", ">", "<", "==", "~=", "info")

RESULTS_SCHEMA_VERSION = 1


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass(frozen=True)
class Claim:
    """One reproduced claim.

    Args:
        name: short identifier, unique within a distribution (``"nfe10_error_ratio"``).
        description: one sentence a reader understands without the code.
        measured: our value (ratio, count, error...). ``None`` means it could not be measured;
            such a claim never holds.
        target: the value ``measured`` is compared with (from the paper or a physical limit).
        comparator: ``">="``, ``"<="``, ``">"``/``"<"`` (strictly: "exceeds", "beats"), ``"=="`` (exact), ``"~="`` (within ``tolerance``,
            relative), or ``"info"`` (reported without a target; ``holds`` is ``None``).
        baseline: the baseline's value measured beside ours in the same run, if there is one.
        paper: what the paper reports, as text (``"5-20x"``), for the table.
        unit: unit of ``measured``/``target``/``baseline`` (``"x"``, ``"s"``, ``"bytes"``).
        tolerance: relative tolerance for ``"~="``.
        details: free-form extra numbers (per-suite values, repeats, settings) kept in the JSON.
    """

    name: str
    description: str
    measured: float | int | None
    target: float | int | None
    comparator: str = ">="
    baseline: float | int | None = None
    paper: str = ""
    unit: str = ""
    tolerance: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"claim name must be a non-empty identifier, got {self.name!r}")
        if self.comparator not in COMPARATORS:
            raise ValueError(
                f"claim {self.name!r}: comparator must be one of {COMPARATORS}, got {self.comparator!r}"
            )
        if self.comparator != "info" and self.target is None:
            raise ValueError(f"claim {self.name!r}: a target is required with {self.comparator!r}")
        if self.tolerance < 0:
            raise ValueError(f"claim {self.name!r}: tolerance must be >= 0")

    @property
    def holds(self) -> bool | None:
        """Whether the measured value meets the target (``None`` for ``"info"`` claims)."""
        if self.comparator == "info":
            return None
        m, t = self.measured, self.target
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return False
        if self.comparator == ">=":
            return m >= t
        if self.comparator == "<=":
            return m <= t
        if self.comparator == ">":
            return m > t
        if self.comparator == "<":
            return m < t
        if self.comparator == "==":
            return m == t
        # "~=": relative tolerance, with an absolute floor for a zero target
        scale = max(abs(t), 1e-300)
        return abs(m - t) <= self.tolerance * scale

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["holds"] = self.holds
        return {k: _finite_or_none(v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Claim:
        d = dict(d)
        d.pop("holds", None)
        return cls(**d)


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        s = f"{x:,}"
    elif isinstance(x, float):
        if x == 0 or 1e-3 <= abs(x) < 1e5:
            s = f"{x:.4g}"
        else:
            s = f"{x:.3e}"
    else:
        s = str(x)
    return f"{s} {unit}".strip() if unit else s


def _holds_cell(h: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "info"}[h]


def render_markdown(claims: Iterable[Claim], dist: str | None = None) -> str:
    """A markdown table: (package,) claim, paper, target, ours, baseline, holds."""
    rows = []
    head = ["claim", "paper", "target", "ours", "baseline", "holds"]
    if dist is not None:
        head.insert(0, "package")
    rows.append("| " + " | ".join(head) + " |")
    rows.append("|" + "---|" * len(head))
    for c in claims:
        target = "—" if c.comparator == "info" else f"{c.comparator} {_fmt(c.target, c.unit)}"
        cells = [
            f"{c.name}: {c.description}",
            c.paper or "—",
            target,
            _fmt(c.measured, c.unit),
            _fmt(c.baseline, c.unit),
            _holds_cell(c.holds),
        ]
        if dist is not None:
            cells.insert(0, dist)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def write_results(
    dist: str,
    claims: Sequence[Claim],
    path: str | Path | None = None,
    *,
    quick: bool = False,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``results/<dist>.json`` (or ``path``) atomically and return its path.

    The file holds the schema version, the distribution, when and where it ran, whether it was a
    ``--quick`` run, free-form ``meta`` (settings, seeds), and every claim with ``holds``.
    """
    if not claims:
        raise ValueError(f"{dist}: a results file needs at least one claim")
    names = [c.name for c in claims]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{dist}: duplicate claim names {dupes}")
    out = Path(path) if path is not None else Path("results") / f"{dist}.json"
    doc = {
        "schema": RESULTS_SCHEMA_VERSION,
        "dist": dist,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.machine(),
        },
        "meta": meta or {},
        "claims": [c.to_dict() for c in claims],
    }
    atomic_write_text(out, json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    return out


def load_results(path: str | Path) -> tuple[str, list[Claim], dict[str, Any]]:
    """Read a results file back: ``(dist, claims, document)``. Raises ``ValueError`` if malformed."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read results file {p}: {e}") from e
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA_VERSION:
        raise ValueError(f"{p}: not a results file of schema {RESULTS_SCHEMA_VERSION}")
    try:
        claims = [Claim.from_dict(c) for c in doc["claims"]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{p}: malformed claim record: {e}") from e
    return doc["dist"], claims, doc


def replace_marked_section(path: str | Path, content: str, marker: str = "claims") -> bool:
    """Replace the text between ``<!-- <marker>:start -->`` and ``<!-- <marker>:end -->`` in ``path``.

    Used to regenerate the claims table in a package README from its benchmark results. The file
    is rewritten atomically. Returns ``False`` (and changes nothing) when the markers are absent;
    raises ``ValueError`` when they are malformed (end before start, or repeated).
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text and end not in text:
        return False
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{p}: markers {start!r} / {end!r} must appear once each, in order")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{content.rstrip()}\n{end}{tail}"
    if new != text:
        atomic_write_text(p, new)
    return True
