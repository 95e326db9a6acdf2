"""Feedback that is safe to open: nothing a student wrote runs in the reader's browser.

Both graders (plain ``autograde`` and ``python -m course_lib grade``) write feedback with
nbgrader's ``generate_feedback``; ``nbgrader_config.py`` points it at the pieces below.

**Sanitising.** A student controls markdown cells, raw cells and every output of their code.
nbconvert's own switch, ``HTMLExporter.sanitize_html``, runs its ``clean_html`` filter over
``text/html`` and ``text/markdown`` outputs and leaves out ``application/javascript`` and
widget outputs, but (a) nbgrader's feedback template renders markdown cells with its own
block that never calls ``clean_html``, so ``<script>``, ``onerror=`` and ``javascript:`` links
in a markdown cell reach the page, and (b) nbconvert's ``clean_html`` escapes ordinary tags
(``<p>``, ``<h1>``, ``<img>``, ``<th>``) so a pandas table turns into tag soup. Hence:

* :class:`FeedbackHTMLExporter` - nbconvert's ``HTMLExporter`` with ``sanitize_html`` on, whose
  ``clean_html`` filter is :func:`clean_feedback_html` (a wider list of harmless tags, still no
  script, event handler, ``style`` element, frame, form, embedded SVG or ``javascript:``/
  ``data:`` link) and whose ``markdown2html`` filter cleans what it renders (markdown cells,
  instructor comments).
* :class:`SanitizeOutputs` - a preprocessor that keeps only output types the page shows as
  inert content (text, LaTeX as text, PNG/JPEG, SVG without script, HTML and markdown cleaned
  as above) and says what it removed, so nothing active is left even under another template.

Streams, errors and code are escaped by the template itself (``ansi2html``, Pygments).

**Readable offline** (:meth:`FeedbackHTMLExporter.from_notebook_node`). nbconvert's page loads
MathJax 2 from a CDN, so LaTeX stayed raw offline. A page with math delimiters carries MathJax 3
inline instead (``tex-svg-full.js`` and its ``ui/safe`` extension from the pinned
``django-static-mathjax``, static files only: about 2.3 MB, self-contained, glyphs drawn as
SVG paths), configured to fetch nothing (``require`` and ``autoload`` off, no menu) and to
build its document only after ``ui/safe`` is installed, so ``\\href`` keeps only http(s)/file
links and ``\\class``, ``\\style``, ``\\cssId`` are filtered. These are the page's only scripts,
in its head. Long output lines (assertion messages with their hints) wrap inside their box,
and the table of contents names each graded cell by its ``grade_id`` (nbgrader's lists a row
of identical "Test cell" entries).

**Test cells with hidden tests** (:class:`HideHiddenTestOutputs`). One rule for both graders:
in a test cell whose instructor source (the gradebook's copy, not the submission) has a hidden
test block, feedback keeps only error outputs, each reduced to ``ename: evalue``; streams and
displays are dropped, and so is the traceback, which quotes hidden source. A student function
that prints its arguments therefore cannot copy hidden inputs into feedback (under
``course_lib grade`` such prints were dropped already; the test's own prints go too, so both
graders show the same cell). The message of an assertion is kept: what it reveals is the
instructor's choice. Test cells without hidden tests are left as they ran.
"""

from __future__ import annotations

import functools
import html as _html
import importlib.resources
import importlib.util
import re

import bleach
from bleach.css_sanitizer import CSSSanitizer
from nbconvert.exporters import HTMLExporter
from nbconvert.filters.strings import strip_files_prefix
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Unicode

try:
    from jinja2 import pass_context
except ImportError:  # jinja2 < 3
    from jinja2 import contextfilter as pass_context

__all__ = [
    "FEEDBACK_TAGS",
    "FeedbackHTMLExporter",
    "HideHiddenTestOutputs",
    "SanitizeOutputs",
    "clean_feedback_html",
    "mathjax_inline",
    "svg_is_inert",
]

# Tags that only lay out text, tables, lists and images; everything else is shown as text.
FEEDBACK_TAGS = frozenset(
    {
        "a",
        "abbr",
        "acronym",
        "b",
        "blockquote",
        "br",
        "caption",
        "cite",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "details",
        "div",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "ins",
        "kbd",
        "li",
        "mark",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strike",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "tt",
        "u",
        "ul",
        "var",
    }
)
_ANY_TAG_ATTRIBUTES = frozenset({"class", "id", "title", "style"})
_TAG_ATTRIBUTES = {
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "ol": {"start", "type"},
    "td": {"colspan", "rowspan", "align", "valign"},
    "th": {"colspan", "rowspan", "align", "valign"},
    "col": {"span"},
    "colgroup": {"span"},
    "table": {"border"},
    "details": {"open"},
}
_PROTOCOLS = frozenset({"http", "https", "mailto", "data"})  # data: only for <img src>, below
# Inline styles limited to text appearance: no positioning, sizes or url() loads.
_CSS = CSSSanitizer(
    allowed_css_properties=[
        "text-align",
        "vertical-align",
        "font-weight",
        "font-style",
        "text-decoration",
        "color",
        "background-color",
        "white-space",
    ]
)
# Removed with their content before cleaning (a stylesheet or script shown as text is noise);
# this is cosmetic: the cleaner that runs afterwards is what makes the result safe.
_DROP_WITH_CONTENT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def _normalized_url(value: str) -> str:
    """The URL as bleach compares it: entities decoded, blanks and control characters gone."""
    url = re.sub(r"[`\000-\040\177-\240\s]+", "", _html.unescape(value))
    return re.sub(r"[^\x00-\x7f]", "", url).lower()


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    """bleach attribute filter: the lists above, and ``data:`` URLs for images only."""
    if name not in _ANY_TAG_ATTRIBUTES and name not in _TAG_ATTRIBUTES.get(tag, ()):
        return False
    if name in ("href", "src") and _normalized_url(value).startswith("data:"):
        return tag == "img" and _normalized_url(value).startswith("data:image/")
    return True


_CLEANER = bleach.Cleaner(
    tags=FEEDBACK_TAGS,
    attributes=_allowed_attribute,
    protocols=_PROTOCOLS,
    strip=False,
    strip_comments=True,
    css_sanitizer=_CSS,
)


def clean_feedback_html(html) -> str:
    """Student HTML made inert: allowed tags keep safe attributes, other tags become text.

    Idempotent, and stable under nbconvert's ``strip_files_prefix`` (which would otherwise
    turn a harmless relative link ``files/javascript:...`` into a script link)."""
    text = html.decode("utf-8", "replace") if isinstance(html, bytes) else str(html)
    text = _DROP_WITH_CONTENT.sub("", text)
    for _ in range(text.count("files/") + 1):
        cleaned = _CLEANER.clean(text)
        stripped = strip_files_prefix(cleaned)
        if stripped == cleaned:
            return cleaned
        text = stripped
    return _html.escape(text)  # unreachable in practice: every pass removes one "files/"


_SVG_ACTIVE = re.compile(
    r"<\s*(script|foreignobject|iframe|embed|object|animate|set|handler)\b"
    r"|\bon[a-z]+\s*=|javascript\s*:",
    re.IGNORECASE,
)


def svg_is_inert(svg: str) -> bool:
    """True when an SVG image has no script, event handler, embedded document or animation.

    (The feedback template shows SVG as ``<img src="data:...">``, where scripts never run;
    this check is the second lock, for templates that would inline it.)"""
    return not _SVG_ACTIVE.search(str(svg))


# MathJax 3.2.2 (Apache-2.0), shipped by the pinned django-static-mathjax (static files only).
MATHJAX_DISTRIBUTION = "django-static-mathjax"
_MATHJAX_FILES = ("es5/tex-svg-full.js", "es5/ui/safe.js")
# Fetch nothing: no \require, no autoloading, no menu (its accessibility parts load on demand).
# ready() does nothing, so the document is built only when the last script calls defaultReady(),
# after ui/safe has registered its handler.
_MATHJAX_CONFIG = r"""window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams',
        packages: {'[-]': ['require', 'autoload']}},
  options: {enableMenu: false},
  startup: {ready: function () {}}
};"""
# nbconvert's MathJax 2 loader (a CDN script and its configuration) in the page head.
_CDN_MATHJAX = re.compile(r"[ \t]*<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)
_MATH_DELIMITERS = re.compile(r"\$|\\\(|\\\[|\\begin\{")
# nbgrader's table of contents: one "Test cell" per test, told apart only by the link target.
_TOC_ENTRY = re.compile(
    r'<li><a href="#([A-Za-z0-9_.:-]+)">'
    r"(Test cell|Coding free-response|Written response|Task)</a>"
)
_TOC_LABELS = {
    "Test cell": "Test",
    "Coding free-response": "Coding free-response",
    "Written response": "Written response",
    "Task": "Task",
}
_FEEDBACK_STYLE = """<style>
/* Open LLM Lab: long output lines (assertion messages and their hints) wrap inside the box */
div.output_area pre, div.output_subarea pre {
  white-space: pre-wrap; word-break: normal; overflow-wrap: anywhere;
}
#toc code { font-size: 90%; }
</style>"""


def _inline_script(js: str, script_id: str) -> str:
    """``js`` as an inline script element. ``<!--`` and ``</script`` are written with a
    backslash (the same string or regular expression to JavaScript) so that the HTML parser
    never ends the script early or enters its "double escaped" state."""
    for text, escaped in (("<!--", "<\\!--"), ("</script", "<\\/script"), ("</SCRIPT", "<\\/SCRIPT")):
        js = js.replace(text, escaped)
    return f'<script id="{script_id}">\n{js}\n</script>'


@functools.lru_cache(maxsize=1)
def mathjax_inline() -> str:
    """The script elements that typeset a feedback page's LaTeX offline (MathJax 3, ui/safe).

    Raises ``FileNotFoundError`` naming the package to install when MathJax is missing."""
    files = []
    if importlib.util.find_spec("mathjax") is not None:
        root = importlib.resources.files("mathjax") / "static" / "mathjax"
        files = [root / f for f in _MATHJAX_FILES if (root / f).is_file()]
    if len(files) != len(_MATHJAX_FILES):
        from ..versions import pin

        raise FileNotFoundError(
            f"MathJax for offline feedback is missing: pip install {pin(MATHJAX_DISTRIBUTION)}"
        )
    core, safe = (f.read_text(encoding="utf-8") for f in files)
    return "\n".join(
        [
            "<!-- MathJax 3.2.2 (Apache-2.0), inline so that the page shows LaTeX offline -->",
            _inline_script(_MATHJAX_CONFIG, "olm-mathjax-config"),
            _inline_script(core, "olm-mathjax"),
            _inline_script(safe, "olm-mathjax-safe"),
            _inline_script("MathJax.startup.defaultReady();", "olm-mathjax-start"),
        ]
    )


def _toc_entry(match: re.Match) -> str:
    grade_id = _html.escape(match.group(1))
    return f'<li><a href="#{match.group(1)}">{_TOC_LABELS[match.group(2)]} <code>{grade_id}</code></a>'


class FeedbackHTMLExporter(HTMLExporter):
    """nbconvert's HTML exporter with ``sanitize_html`` on and feedback-grade filters.

    ``clean_html`` (which the template applies to HTML and markdown outputs, raw cells and
    SVG) is :func:`clean_feedback_html`; ``markdown2html`` (markdown cells, comments, markdown
    outputs) cleans its result the same way, because nbgrader's feedback template renders
    markdown cells without ``clean_html``."""

    sanitize_html = Bool(True, help="Clean student HTML in the page (on for feedback).").tag(config=True)

    def default_filters(self):
        """nbconvert's filters, with the two that see student HTML replaced."""
        yield from super().default_filters()
        yield ("clean_html", clean_feedback_html)
        yield ("markdown2html", self.markdown2html)

    @pass_context
    def markdown2html(self, context, source):
        """nbconvert's markdown rendering (attachments, anchors, math), then cleaned."""
        return clean_feedback_html(super().markdown2html(context, source))

    def from_notebook_node(self, nb, resources=None, **kw):
        """The page, readable offline: MathJax inline instead of its CDN loader (where the
        page has math delimiters), long output lines wrapped, graded cells named by grade_id
        in the table of contents."""
        output, resources = super().from_notebook_node(nb, resources, **kw)
        head, sep, body = output.partition("<body")
        if sep and _CDN_MATHJAX.search(head):
            scripts = ""
            if _MATH_DELIMITERS.search(body):
                try:
                    scripts = mathjax_inline()
                except FileNotFoundError as e:
                    self.log.warning("%s; LaTeX in feedback stays as source", e)
            head = _CDN_MATHJAX.sub(lambda _: scripts, head, count=1)
        if sep:
            head = head.replace("</head>", _FEEDBACK_STYLE + "\n</head>", 1)
            body = _TOC_ENTRY.sub(_toc_entry, body)
        return head + sep + body, resources


# Output types kept (each shown as inert content); anything else is removed with a note.
_KEPT_MIMETYPES = ("text/plain", "text/latex", "image/png", "image/jpeg")
_CLEANED_MIMETYPES = ("text/html",)


class SanitizeOutputs(Preprocessor):
    """Drop active outputs (JavaScript, widgets, SVG with script, unknown types) from every
    code cell and clean the HTML that remains; an output left empty says what was removed."""

    enabled = Bool(True, help="On when listed (nbconvert preprocessors default to off).").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        """Sanitise one code cell's outputs in place."""
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.get("output_type") in ("display_data", "execute_result"):
                    self._sanitize_data(output)
        return cell, resources

    @staticmethod
    def _sanitize_data(output) -> None:
        data = output.get("data", {})
        removed = []
        for mime in list(data):
            value = data[mime]
            if mime in _KEPT_MIMETYPES:
                continue
            if mime in _CLEANED_MIMETYPES:
                data[mime] = clean_feedback_html("".join(value) if isinstance(value, list) else value)
            elif mime == "text/markdown":
                continue  # the template renders it with markdown2html | clean_html
            elif mime == "image/svg+xml" and svg_is_inert(value):
                continue
            else:
                removed.append(mime)
                del data[mime]
        if removed and set(data) <= {"text/plain"}:  # say what is missing, before any repr
            note = f"[output not shown in feedback: {', '.join(sorted(removed))}]"
            plain = data.get("text/plain", "")
            plain = "".join(plain) if isinstance(plain, list) else plain
            data["text/plain"] = note + ("\n" + plain if plain else "")


class HideHiddenTestOutputs(Preprocessor):
    """In test cells whose instructor source has hidden tests, keep only ``ename: evalue``.

    Which cells those are is read from the gradebook (``resources['nbgrader']``, as nbgrader's
    GetGrades does), so it works after ClearHiddenTests has removed the block. Without a
    gradebook every test cell is treated as having hidden tests."""

    enabled = Bool(True, help="On when listed (nbconvert preprocessors default to off).").tag(config=True)
    begin_delimiter = Unicode(
        "", help="Marker of a hidden-test block; default: ClearHiddenTests' begin_test_delimeter."
    ).tag(config=True)
    max_evalue_chars = 2000

    def preprocess(self, nb, resources):
        """Find the test cells without hidden tests, then reduce the outputs of the others."""
        self._begin = self._delimiter()
        self._visible_only = self._visible_only_cells(resources)
        return super().preprocess(nb, resources)

    def _delimiter(self) -> str:
        if self.begin_delimiter:
            return self.begin_delimiter
        from nbgrader.preprocessors import ClearHiddenTests

        return ClearHiddenTests(config=self.config).begin_test_delimeter

    def _visible_only_cells(self, resources) -> set[str]:
        """grade_ids of the gradebook's source cells that have no hidden-test block."""
        info = (resources or {}).get("nbgrader") or {}
        if not all(info.get(k) for k in ("db_url", "notebook", "assignment")):
            return set()
        from nbgrader.api import Gradebook, MissingEntry

        from .course import _fast_alembic_version

        _fast_alembic_version()
        with Gradebook(info["db_url"]) as gb:
            try:
                nb = gb.find_notebook(info["notebook"], info["assignment"])
            except MissingEntry:
                return set()
            return {c.name for c in nb.source_cells if self._begin not in (c.source or "")}

    def preprocess_cell(self, cell, resources, index):
        """Reduce the outputs of one test cell that has hidden tests."""
        meta = cell.get("metadata", {}).get("nbgrader", {})
        is_test = cell.cell_type == "code" and meta.get("grade") and not meta.get("solution")
        if is_test and (meta.get("grade_id") not in self._visible_only or self._begin in cell.source):
            cell.outputs = [
                self._short_error(o) for o in cell.get("outputs", []) if o.get("output_type") == "error"
            ]
        return cell, resources

    def _short_error(self, output):
        """An error output with only its type and message (the traceback quotes source)."""
        from nbformat import from_dict

        ename = str(output.get("ename") or "Error")[:200]
        evalue = str(output.get("evalue") or "")[: self.max_evalue_chars]
        return from_dict(
            {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": [f"{ename}: {evalue}"]}
        )
