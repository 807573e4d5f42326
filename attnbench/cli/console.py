"""The CLI's consoles, which never read text as markup.

Almost everything the CLI prints comes from outside: suite files, options, records, plugin
kernel names and descriptions, exception messages. Rich would read ``[/]`` or ``[bold]`` in
any of them as markup (a MarkupError traceback, or text silently changed) and ``:name:`` as
an emoji code. So the consoles here have markup and emoji off: a string is always printed
as written, wherever it goes (``print``, table cells, titles, progress descriptions).
Styles are added explicitly, as ``rich.text.Text`` spans (``Text.assemble(("error: ",
"red"), message)``), never by tags inside strings.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import TextColumn


def plain_console(*, stderr: bool = False) -> Console:
    """A console that prints every string literally (no markup, no emoji codes)."""
    return Console(stderr=stderr, markup=False, emoji=False)


def plain_text_column(text_format: str, style: str = "") -> TextColumn:
    """A progress column whose formatted text (e.g. a case label) is never read as markup."""
    return TextColumn(text_format, style=style, markup=False)
