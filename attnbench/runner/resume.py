"""May a run be resumed with this suite? If not, say exactly what differs.

A run is continued only with the suite document, profile and filters it was started with
(the suite's sha256 covers the resolved document); the refusal names the differing fields,
e.g. ``sweep.seqlens: [512, 1024] in the run, [512] now``.
"""

from __future__ import annotations

from typing import Any

#: differences named in the message; the rest are counted
SHOWN = 3


def _short(value: Any, limit: int = 60) -> str:
    text = "none" if value is None else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def document_differences(recorded: Any, now: Any, path: str = "") -> list[str]:
    """Dotted paths where two suite documents differ, with both values (mappings walked,
    lists and scalars compared whole)."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        out: list[str] = []
        for key in list(dict.fromkeys([*recorded, *now])):
            where = f"{path}.{key}" if path else str(key)
            out += document_differences(recorded.get(key), now.get(key), where)
        return out
    if recorded == now:
        return []
    return [f"{path or 'document'}: {_short(recorded)} in the run, {_short(now)} now"]


def resume_refusal(recorded, suite) -> str | None:
    """Why a run recorded with `recorded` (results.schema.SuiteInfo) cannot be resumed with
    `suite` (a LoadedSuite), naming each difference; None when it can."""
    differences: list[str] = []
    if recorded.name != suite.name:
        differences.append(f"suite name: {_short(recorded.name)} in the run, {_short(suite.name)} now")
    if recorded.sha256 != suite.sha256:
        if recorded.profile != suite.profile:
            differences.append(f"profile: {_short(recorded.profile)} in the run, {_short(suite.profile)} now")
        differences += document_differences(recorded.document, suite.resolved) or [
            f"suite sha256: {recorded.sha256[:12]} in the run, {suite.sha256[:12]} now"
        ]
    filters_then, filters_now = recorded.filters or {}, getattr(suite, "filters", {}) or {}
    for key in list(dict.fromkeys([*filters_then, *filters_now])):
        if filters_then.get(key) != filters_now.get(key):
            differences.append(
                f"--{key}: {_short(filters_then.get(key))} in the run, {_short(filters_now.get(key))} now"
            )
    if not differences:
        return None
    shown = "; ".join(differences[:SHOWN])
    more = f"; and {len(differences) - SHOWN} more" if len(differences) > SHOWN else ""
    return f"the run was made with another suite, profile or filters: {shown}{more}; resume with the same command"
