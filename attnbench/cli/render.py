"""Rich rendering of tables and run summaries (the CLI's screens)."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from attnbench.results.tables import Table

STATUS_STYLE = {"OOM": "red", "error": "red", "invalid": "magenta", "timeout": "red", "unsupported": "dim", "skipped": "yellow"}


def rich_table(table: Table) -> RichTable:
    out = RichTable(header_style="bold")
    numeric = pd.api.types.is_numeric_dtype(table.frame.index)
    out.add_column(table.frame.index.name or "", justify="right" if numeric else "left", overflow="fold")
    for column in table.frame.columns:
        out.add_column(str(column), justify="right", no_wrap=len(str(column)) <= 2)  # e.g. "S": never wrapped
    for index, row in table.frame.iterrows():
        cells = []
        for value in row.tolist():
            text = str(value)
            style = next((s for word, s in STATUS_STYLE.items() if text.startswith(word)), None)
            cells.append(Text(text, style=style or ""))
        out.add_row(str(index), *cells)
    return out


def print_tables(console: Console, tables: list[Table]) -> None:
    explained: set[str] = set()
    for table in tables:
        # the title on its own line: a rich table title wraps at the (narrow) table width
        console.print(Text(table.title, style="bold"), highlight=False)
        console.print(rich_table(table))
        for note in table.notes:  # a legend once, under the first table that needs it
            if note not in explained:
                console.print(Text(note, style="dim"), highlight=False)
                explained.add(note)
        console.print()
