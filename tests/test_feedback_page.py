"""The feedback page itself, fast (no grading): readable offline and easy to find one's way in.

The exporter nbgrader's generate_feedback uses (``FeedbackHTMLExporter`` with nbgrader's
``feedback`` template, configured as nbgrader configures it) renders a small graded notebook:
MathJax is inline (no CDN loader left) only where the page has math, the table of contents
names test cells by grade_id, and long output lines wrap. tests/test_feedback_safety.py opens
real feedback in Chromium (math typeset, nothing a student wrote runs)."""

from __future__ import annotations

import os
import re

import nbformat
import pytest
from traitlets.config import Config

from course_lib.grading import feedback

LONG_HINT = "softmax(x, dim=0) differs from torch.softmax: " + "hint " * 80


def _exporter() -> feedback.FeedbackHTMLExporter:
    """The exporter with nbgrader's own template settings (nbgrader.converters.GenerateFeedback)."""
    import nbgrader.converters.generate_feedback as gf

    here = os.path.dirname(gf.__file__)
    c = Config()
    c.HTMLExporter.template_name = "feedback"
    c.HTMLExporter.extra_template_basedirs = [
        os.path.join(here, "..", "server_extensions", "formgrader", "templates")
    ]
    c.HTMLExporter.extra_template_paths = [
        os.path.join(
            here,
            "..",
            "server_extensions",
            "formgrader",
            "static",
            "node_modules",
            "bootstrap",
            "dist",
            "css",
        )
    ]
    return feedback.FeedbackHTMLExporter(config=c)


def _graded_notebook(markdown: str):
    v4 = nbformat.v4
    test = v4.new_code_cell("assert softmax_ok, 'hint'")
    test.metadata["nbgrader"] = {
        "grade": True,
        "solution": False,
        "locked": True,
        "grade_id": "test_softmax_values",
        "points": 2,
        "score": 0,
    }
    test.outputs = [
        v4.new_output(
            "error", ename="AssertionError", evalue=LONG_HINT, traceback=[f"AssertionError: {LONG_HINT}"]
        )
    ]
    return v4.new_notebook(cells=[v4.new_markdown_cell(markdown), test])


def _render(markdown: str) -> str:
    resources = {"nbgrader": {"notebook": "lab00", "score": 0, "max_score": 2, "late_penalty": 0}}
    html, _ = _exporter().from_notebook_node(_graded_notebook(markdown), resources=resources)
    return html


def test_math_page_carries_mathjax_inline_with_its_safe_extension():
    html = _render(r"The softmax: $\sigma(z)_i = e^{z_i} / \sum_j e^{z_j}$")
    head = html.split("<body", 1)[0]
    assert "cdnjs" not in html and "Load mathjax" not in html, "nbconvert's CDN loader is still there"
    assert not re.search(r"<script[^>]*\bsrc=", html), "a script is loaded from elsewhere"
    for script_id in ("olm-mathjax-config", "olm-mathjax", "olm-mathjax-safe", "olm-mathjax-start"):
        assert f'<script id="{script_id}">' in head, script_id
    # ui/safe is installed before the document is built, and nothing is fetched at run time.
    assert head.index('id="olm-mathjax-safe"') < head.index('id="olm-mathjax-start"')
    assert "'[-]': ['require', 'autoload']" in head and "ready: function () {}" in head
    # The inline library cannot end its own script element early.
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, re.DOTALL)
    assert len(scripts) == 4 and all("<!--" not in s for s in scripts)
    assert sum(len(s) for s in scripts) > 2_000_000  # the whole of tex-svg-full.js


def test_page_without_math_loads_no_mathjax():
    html = _render("No formulas here.")
    assert "<script" not in html, "a page without math needs no script at all"
    assert "cdnjs" not in html


def test_table_of_contents_names_tests_and_long_lines_wrap():
    html = _render("Part 1")
    toc = html.split('<div id="toc">', 1)[1].split("</div>", 1)[0]
    assert ">Test cell<" not in toc, toc
    assert '<a href="#test_softmax_values">Test <code>test_softmax_values</code></a>' in toc, toc
    assert "white-space: pre-wrap" in html.split("<body", 1)[0]
    assert LONG_HINT.strip() in html  # the hint itself is shown, whole


def test_missing_mathjax_package_names_the_install(monkeypatch):
    feedback.mathjax_inline.cache_clear()
    monkeypatch.setattr(feedback.importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(FileNotFoundError, match="pip install django-static-mathjax=="):
            feedback.mathjax_inline()
        html = _render("$x$")  # a warning, and the page without MathJax: never a crash
        assert "<script" not in html
    finally:
        feedback.mathjax_inline.cache_clear()
