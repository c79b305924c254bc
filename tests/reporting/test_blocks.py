"""The block renderers: markdown and HTML say what the blocks say, escaped, with nothing lost."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from gemma_pipeline.reporting.blocks import (
    Bullets,
    CodeBlock,
    FigureRef,
    Heading,
    Paragraph,
    Styled,
    Table,
    render_html_page,
    render_markdown_blocks,
)

# Text a renderer must not take for markup: markdown's specials, HTML's, a table's pipe.
AWKWARD = '<script>alert(1)</script> | *bold* [link] `tick` a\\b & "q"'
TABLE = Table(
    ["name", "value"],
    [[AWKWARD, "1.0"], [Styled("x|y", "strong"), Styled("co`de|z", "code")]],
    align="lr",
)


class _Cells(HTMLParser):
    """Table cells of a page as (tag, class, text, inner tags), text unescaped by the parser."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str | None, str, list[str]]] = []
        self._open: list | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._open = [tag, dict(attrs).get("class"), "", []]
        elif self._open is not None:
            self._open[3].append(tag)

    def handle_data(self, data):
        if self._open is not None:
            self._open[2] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._open is not None:
            self.cells.append(tuple(self._open))
            self._open = None


def _md_cells(line: str) -> list[str]:
    # Split on pipes not escaped by a backslash, then undo the escapes.
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [re.sub(r"\\(.)", r"\1", part.strip()) for part in parts]


def test_markdown_table_cells_survive_escaping():
    lines = render_markdown_blocks([TABLE]).splitlines()
    assert _md_cells(lines[0]) == list(TABLE.headers)
    assert lines[1] == "| --- | ---: |"
    assert _md_cells(lines[2]) == TABLE.rows[0]
    strong, code = _md_cells(lines[3])
    assert strong == "**x|y**"
    # A code span cannot hold its own backtick: it becomes a quote, the pipe stays escaped.
    assert code == "`co'de|z`"


def test_markdown_blocks_in_order_one_blank_line_apart():
    blocks = [
        Heading("Title", level=1),
        Paragraph("line one\nline two"),
        Bullets(["a", "b*"]),
        CodeBlock("x = 1\n```nested```", "python"),
        FigureRef("loss_curve", "Loss", "loss_plot"),
    ]
    md = render_markdown_blocks(blocks)
    assert md.endswith("\n") and not md.endswith("\n\n")
    parts = md.rstrip("\n").split("\n\n")
    assert parts[:3] == ["# Title", "line one line two", "- a\n- b\\*"]
    # Code is verbatim; a fence inside it gets a longer fence around it.
    assert parts[3] == "````python\nx = 1\n```nested```\n````"
    assert "`loss_plot`" in parts[4] and "Loss" in parts[4]


def test_html_table_cells_are_escaped_aligned_and_styled():
    page = render_html_page([TABLE], "t", {})
    assert "<script>" not in page
    parser = _Cells()
    parser.feed(page)
    headers, body = parser.cells[:2], parser.cells[2:]
    assert [(text, css) for _, css, text, _ in headers] == [("name", None), ("value", "r")]
    assert [text for _, _, text, _ in body] == [AWKWARD, "1.0", "x|y", "co`de|z"]
    assert [css for _, css, _, _ in body] == [None, "r", None, "r"]
    assert [inner for _, _, _, inner in body] == [[], [], ["strong"], ["code"]]


def test_html_page_is_self_contained_and_embeds_only_given_figures():
    blocks = [
        Heading(AWKWARD),
        Paragraph(AWKWARD),
        Bullets([AWKWARD]),
        CodeBlock(AWKWARD),
        FigureRef("shown", "Shown figure", "shown_plot"),
        FigureRef("absent", "Absent figure", "absent_plot"),
    ]
    page = render_html_page(blocks, AWKWARD, {"shown": "cGluZw=="})
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page and "http" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # Title, heading, paragraph, bullet and code: every one escaped.
    assert page.count(escaped) == 5
    assert re.findall(r'src="data:image/png;base64,([^"]+)"', page) == ["cGluZw=="]
    assert "<p>Absent figure: figure not available.</p>" in page
