"""Renderer-neutral document blocks, and their markdown and self-contained HTML renderings.

A document is built once as a list of blocks and rendered twice, so the markdown file and the
HTML page always say the same thing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Styled:
    """A table cell's text shown bold (``strong``) or as code (``code``)."""

    text: str
    style: Literal["strong", "code"]


Cell = str | Styled


def strong_if(text: str, condition: bool) -> Cell:
    """``text`` as a bold cell where ``condition`` holds (a significant change), else plain."""
    return Styled(text, "strong") if condition else text


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    # "l" or "r" per column; numbers read best right-aligned.
    align: Sequence[str] = ()


@dataclass(frozen=True)
class CodeBlock:
    text: str
    language: str = ""


@dataclass(frozen=True)
class FigureRef:
    """A figure: embedded as base64 PNG in HTML, pointed to by catalog dataset in markdown."""

    key: str
    caption: str
    dataset: str


Block = Heading | Paragraph | Bullets | Table | CodeBlock | FigureRef


# --- markdown ---------------------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({char: "\\" + char for char in "\\`*[]<>|"})


def _md(text: str) -> str:
    return str(text).replace("\n", " ").translate(_MD_SPECIAL)


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Styled):
        if cell.style == "code":
            # A code span cannot escape its backticks; a pipe would still split the table.
            return "`" + cell.text.replace("`", "'").replace("|", "\\|") + "`"
        return f"**{_md(cell.text)}**"
    return _md(cell)


def _md_table(table: Table) -> str:
    align = list(table.align) or ["l"] * len(table.headers)
    lines = [
        "| " + " | ".join(_md(header) for header in table.headers) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + _md(block.text)
    if isinstance(block, Paragraph):
        return _md(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md(item)}" for item in block.items)
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, CodeBlock):
        fence = "````" if "```" in block.text else "```"
        return f"{fence}{block.language}\n{block.text}\n{fence}"
    # Markdown stays a plain text file: the figure is embedded in report.html and saved as PNG.
    return (
        f"Figure: {_md(block.caption)} (embedded in report.html; PNG in catalog dataset "
        f"`{block.dataset}`)."
    )


def render_markdown_blocks(blocks: Sequence[Block]) -> str:
    """The blocks as markdown (figures referenced by their catalog dataset, not embedded)."""
    return "\n\n".join(_md_block(block) for block in blocks) + "\n"


# --- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #1a1a1a; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.7rem; text-align: left; }
th { border-bottom: 2px solid #999; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9rem; }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_cell(cell: Cell, tag: str, align: str) -> str:
    css = ' class="r"' if align == "r" else ""
    if isinstance(cell, Styled):
        inner = f"<{cell.style}>{_esc(cell.text)}</{cell.style}>"
    else:
        inner = _esc(cell)
    return f"<{tag}{css}>{inner}</{tag}>"


def _html_table(table: Table) -> str:
    align = list(table.align) or ["l"] * len(table.headers)
    head = "".join(_html_cell(h, "th", a) for h, a in zip(table.headers, align, strict=False))
    body = "\n".join(
        "<tr>" + "".join(_html_cell(c, "td", a) for c, a in zip(row, align, strict=False)) + "</tr>"
        for row in table.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html_block(block: Block, images: Mapping[str, str]) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_esc(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_esc(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_esc(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, CodeBlock):
        return f"<pre><code>{_esc(block.text)}</code></pre>"
    image = images.get(block.key)
    if not image:
        return f"<p>{_esc(block.caption)}: figure not available.</p>"
    return (
        f'<figure><img alt="{_esc(block.caption)}" src="data:image/png;base64,{_esc(image)}">'
        f"<figcaption>{_esc(block.caption)}</figcaption></figure>"
    )


def render_html_page(blocks: Sequence[Block], title: str, images: Mapping[str, str]) -> str:
    """The blocks as one self-contained HTML page.

    ``images`` maps a figure's key to its base64 PNG (``plots.png_base64``); a figure without
    one is named as not available. The page needs nothing else to display.
    """
    body = "\n".join(_html_block(block, images) for block in blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
