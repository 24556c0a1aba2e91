"""The read report: what reading a dataset did, for the run's metrics and its bad_rows.csv.

Every bad row is kept with its table, reason, file, line, offending value and a readable detail;
`metrics()` gives the counts, `describe_bad()` the first few rows for an error or a warning,
`describe_table()` a table's counts for the console.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

# How many bad rows a failing run prints; the full list goes to bad_rows.csv when skipping.
SHOWN_BAD_ROWS = 5


@dataclass
class ReadReport:
    """What reading did: counts for the run's metrics and every bad row, with where it was."""

    counts: Counter = field(default_factory=Counter)
    bad_rows: list[dict] = field(default_factory=list)

    def add_bad(self, table: str, reason: str, path: str, lines, values, details) -> None:
        for line, value, detail in zip(lines, values, details):
            self.bad_rows.append(
                dict(table=table, reason=reason, file=path, line=int(line), value=value, detail=detail)
            )
        self.counts[f"data/bad_rows/{table}/{reason}"] += len(lines)

    @property
    def n_bad(self) -> int:
        return len(self.bad_rows)

    def bad_rows_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.bad_rows, columns=["table", "reason", "file", "line", "value", "detail"])

    def metrics(self) -> dict[str, float]:
        out = {key: float(value) for key, value in sorted(self.counts.items())}
        out["data/bad_rows/total"] = float(self.n_bad)
        return out

    def describe_table(self, table: str) -> str:
        """One line of what reading `table` ("events", "items", "users") kept and dropped, e.g.
        "events: 85,213 rows read, 80,943 kept; 4,270 exact duplicate rows dropped"."""
        counts = self.counts
        kept = counts["data/events"] if table == "events" else counts[f"data/{table}/rows"]
        bad = sum(1 for row in self.bad_rows if row["table"] == table)
        read = counts["data/events/rows_read"] if table == "events" else None
        head = f"{table}: {kept:,} rows kept" if read is None else f"{table}: {read:,} rows read, {kept:,} kept"
        dropped = [f"{n:,} {what}" for n, what in (
            (counts[f"data/{table}/duplicate_rows"], "exact duplicate rows dropped"),
            (counts[f"data/{table}/repeated_keys"], "repeated keys (the first row of each kept)"),
            (bad, "malformed rows skipped"),
            (counts[f"data/{table}/truncated_last_line"], "truncated last line dropped"),
        ) if n]
        return head + ("; " + ", ".join(dropped) if dropped else "")

    def describe_bad(self, limit: int = SHOWN_BAD_ROWS) -> str:
        by_reason = Counter(row["reason"] for row in self.bad_rows)
        summary = ", ".join(f"{reason} {count}" for reason, count in by_reason.most_common())
        lines = [f"{self.n_bad} malformed rows ({summary}); the first {min(limit, self.n_bad)}:"]
        for row in self.bad_rows[:limit]:
            lines.append(f"  {row['file']}:{row['line']}: {row['detail']}: {row['value']!r}")
        return "\n".join(lines)
