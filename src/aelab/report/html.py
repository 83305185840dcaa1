"""A small builder for self-contained HTML reports (figures embedded as data URIs).

The builder knows nothing of the study: callers add sections, paragraphs,
tables and PNG figures, then :meth:`Report.render` returns one HTML string that
opens in any browser without a network or other files.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}
h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}
nav ol{columns:2}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em}
code{background:#f4f4f4;padding:0 .2em}
"""


def _fmt(value: Any) -> str:
    """Numbers to short text: ints as is, floats to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.integer):
            return str(int(value))
        if isinstance(value, np.floating):
            return f"{float(value):.4g}"
    except ImportError:  # pragma: no cover
        pass
    return str(value)


@dataclass
class _Section:
    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)


class Report:
    """Collect sections of text, tables and figures; render one HTML page.

    Parameters
    ----------
    title : str
        Page title and top heading.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._sections: list[_Section] = []

    def section(self, title: str) -> Report:
        """Start a new section; later calls add to it."""
        anchor = f"s{len(self._sections) + 1}"
        self._sections.append(_Section(title, anchor))
        return self

    def _current(self) -> _Section:
        if not self._sections:
            self.section("Results")
        return self._sections[-1]

    def paragraph(
        self, text: str, *, note: bool = False, link: tuple[str, str] | None = None
    ) -> Report:
        """A paragraph of plain text (escaped), optionally ending with a link.

        Parameters
        ----------
        text : str
        note : bool
            Highlight the paragraph.
        link : (str, str), optional
            ``(label, href)`` of a link after the text, e.g. to a file of the
            run beside the page (a relative ``href``).
        """
        cls = ' class="note"' if note else ""
        tail = ""
        if link is not None:
            label, href = link
            tail = f' <a href="{html.escape(href, quote=True)}">{html.escape(label)}</a>'
        self._current().parts.append(f"<p{cls}>{html.escape(text)}{tail}</p>")
        return self

    def code(self, text: str) -> Report:
        """A preformatted block (escaped)."""
        self._current().parts.append(f"<pre><code>{html.escape(text)}</code></pre>")
        return self

    def table(
        self,
        rows: Iterable[Mapping[str, Any]] | Iterable[Sequence[Any]],
        columns: Sequence[str],
        *,
        caption: str | None = None,
        table_id: str | None = None,
    ) -> Report:
        """A table; ``rows`` are mappings keyed by ``columns`` or sequences in their order."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for row in rows:
            cells = [row.get(c) for c in columns] if isinstance(row, Mapping) else list(row)
            body.append(
                "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in cells) + "</tr>"
            )
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        tid = f' id="{html.escape(table_id)}"' if table_id else ""
        self._current().parts.append(
            f"<table{tid}>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )
        return self

    def figure(self, png: bytes, caption: str = "", *, alt: str | None = None) -> Report:
        """A PNG image embedded as a base64 data URI, with a caption."""
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("figure() takes PNG bytes (see aelab.viz.figure_to_png_bytes)")
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        alt_text = html.escape(alt or caption or "figure")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._current().parts.append(f'<figure><img src="{uri}" alt="{alt_text}">{cap}</figure>')
        return self

    def render(self) -> str:
        """The whole page as one HTML string."""
        toc = "".join(
            f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in self._sections
        )
        body = "".join(
            f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>'
            for s in self._sections
        )
        t = html.escape(self.title)
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>'
            f"<body><h1>{t}</h1><nav><ol>{toc}</ol></nav>{body}</body></html>\n"
        )
