"""Feedback is safe to open, and the same rule for test cells under both graders.

Two submissions of lab00, graded by plain nbgrader (``grading.autograde`` + nbgrader's
``generate_feedback``) and by the sandboxed ``grading.grade_lab``:

* ``payload``: the solution plus extra, ungraded cells that try to run script in whoever opens
  the feedback (markdown with ``<script>``/``onerror``/``onload``/``ontoggle``/``javascript:``
  links, a raw HTML cell, HTML/JavaScript/SVG/markdown displays, a print and an exception
  carrying HTML). Every payload appends its name to ``window.__pwned`` and sets the title.
  Each feedback page is opened in headless Chromium: no payload runs, no event handler,
  script link or frame is left, the only scripts are nbgrader's own (MathJax) in the head.
  Control: an unsanitised nbconvert export of the same graded notebook does run them.
  The payload cells cost no marks. Their LaTeX is typeset offline by the page's inline MathJax,
  and a ``\\href{javascript:...}`` in it leaves no script link (control: without MathJax's
  ``ui/safe`` extension the same page has one).
* ``printer``: a ``softmax`` that prints its arguments and ignores ``dim`` (so it fails the
  hidden part of both softmax tests). Its feedback holds none of the hidden tests' inputs,
  no hidden source (no traceback), only ``ename: evalue``; control: nbgrader's own graded
  notebook does show the inputs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from course_lib import grading

REPO = Path(__file__).resolve().parent.parent
LAB = "lab00_pytorch_warmup"
SOURCE = REPO / "solutions" / LAB / f"{LAB}.ipynb"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Payloads that an unsanitised export runs as soon as the page loads (the control). Raw cells
# are cleaned by nbconvert even then, SVG is shown as an <img>, and links need a click.
RUN_WHEN_UNSANITISED = {
    "md-script",
    "md-img",
    "md-svg",
    "md-details",
    "html-script",
    "html-img",
    "raw-html-img",
    "js-output",
    "markdown-output",
}
SOFTMAX_TESTS = ("test_softmax_values", "test_softmax_stable")
# Printed by the printer's softmax only when a hidden test calls it.
HIDDEN_INPUTS = ("-1001.0", "30000.0")


def _js(name: str) -> str:
    """JavaScript that records that payload ``name`` ran."""
    return f"(window.__pwned=window.__pwned||[]).push('{name}');document.title='PWNED'"


def _img(name: str) -> str:
    return f'<img src="no-such-image.png" onerror="{_js(name)}">'


def _payload_cells() -> list:
    """The extra cells of the ``payload`` submission."""
    v4 = nbformat.v4
    markdown = "\n\n".join(
        [
            "## Notes (payload)",
            f"<script>{_js('md-script')}</script>",
            _img("md-img"),
            f'<svg onload="{_js("md-svg")}"></svg>',
            f'<details open ontoggle="{_js("md-details")}"><summary>s</summary>d</details>',
            f'<iframe srcdoc="<script>parent.{_js("md-iframe")}</script>"></iframe>',
            f"[markdown link](javascript:{_js('md-link')})",
            f'<a href="javascript:{_js("md-a")}">raw link</a>',
            f"Math: $e^{{z_i}}$ and $\\href{{javascript:{_js('math-href')}}}{{math link}}$",
        ]
    )
    raw = v4.new_raw_cell(_img("raw-img"))
    raw.metadata["raw_mimetype"] = "text/html"
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" '
        f'onload="{_js("svg-onload")}"><script>{_js("svg-script")}</script></svg>'
    )
    displays = "\n".join(
        [
            "from IPython.display import HTML, Javascript, Markdown, display",
            f"display(HTML({'<script>' + _js('html-script') + '</script>' + _img('html-img')!r}))",
            f"display({{'text/html': {_img('raw-html-img')!r}}}, raw=True)",
            f"display(Javascript({_js('js-output')!r}))",
            f"display({{'image/svg+xml': {svg!r}}}, raw=True)",
            f"display(Markdown({_img('markdown-output') + ' [md](javascript:' + _js('md-out-link') + ')'!r}))",
            f"print({'<script>' + _js('stream') + '</script>' + _img('stream-img')!r})",
        ]
    )
    error = "\n".join(
        [
            f"Payload = type({_img('ename')!r}, (Exception,), {{}})",
            f"raise Payload({_img('evalue')!r})",
        ]
    )
    return [v4.new_markdown_cell(markdown), raw, v4.new_code_cell(displays), v4.new_code_cell(error)]


def _payload_notebook(dest: Path) -> Path:
    nb = nbformat.read(str(SOURCE), as_version=4)
    # Before the last test cell: course_lib grade runs student cells up to the last test only.
    last_test = max(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade"))
    nb.cells[last_test:last_test] = _payload_cells()
    nbformat.write(nb, str(dest))
    return dest


def _printer_notebook(dest: Path) -> Path:
    """The solution, with a softmax that prints its arguments and ignores ``dim``."""
    nb = nbformat.read(str(SOURCE), as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "softmax")
    cell.source = "\n".join(
        [
            "def softmax(x, dim=-1):",
            "    print('SOFTMAX' + '-ARGS', x.tolist(), dim)  # the marker is not in the source",
            "    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)",
            "    return e / e.sum(dim=-1, keepdim=True)",
        ]
    )
    nbformat.write(nb, str(dest))
    return dest


def _hidden_lines() -> list[str]:
    """Source lines of the hidden-test blocks that the released lab does not have."""
    released = nbformat.read(str(REPO / "labs" / LAB / f"{LAB}.ipynb"), as_version=4)
    visible = {ln.strip() for c in released.cells for ln in c.source.splitlines()}
    lines = []
    for c in nbformat.read(str(SOURCE), as_version=4).cells:
        if "### BEGIN HIDDEN TESTS" in c.source:
            block = c.source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS")[0]
            lines += [
                ln.strip() for ln in block.splitlines() if len(ln.strip()) > 25 and ln.strip() not in visible
            ]
    assert len(lines) > 10
    return lines


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Both submissions graded by both graders: {grader: {student: (GradeResult, feedback)}},
    plus the plain grader's course folder."""
    from course_lib.grading.course import _api, _quiet_nbgrader

    tmp = tmp_path_factory.mktemp("feedback")
    subs = {
        "payload": _payload_notebook(tmp / "payload.ipynb"),
        "printer": _printer_notebook(tmp / "printer.ipynb"),
    }
    plain_dir = tmp / "plain"
    plain = grading.autograde(LAB, subs, workdir=plain_dir)
    api = _api(plain_dir)
    with _quiet_nbgrader():
        for student in subs:
            res = api.generate_feedback(LAB, student, force=True)
            assert res.get("success"), res.get("error") or res.get("log")

    course = tmp / "course"
    shutil.copytree(REPO / "solutions" / LAB, course / "solutions" / LAB)
    shutil.copytree(REPO / "labs" / LAB, course / "labs" / LAB)
    for student, path in subs.items():
        dest = course / "submitted" / student / LAB
        dest.mkdir(parents=True)
        shutil.copy(path, dest / f"{LAB}.ipynb")
    log: list = []
    sandboxed = {
        r.student: r
        for r in grading.grade_lab(
            LAB, course / "submitted", workers=1, course_root=course, progress=False, print_fn=log.append
        )
    }

    def feedback(root: Path, student: str) -> Path:
        return root / "feedback" / student / LAB / f"{LAB}.html"

    out = {
        "plain": {s: (plain[s], feedback(plain_dir, s)) for s in subs},
        "grade": {s: (sandboxed[s], feedback(course, s)) for s in subs},
    }
    for grader, by_student in out.items():
        for student, (_, path) in by_student.items():
            assert path.is_file(), f"{grader}: no feedback for {student} at {path}; log: {log}"
    return out, plain_dir


def _open(browser, path: Path) -> dict:
    """Load ``path`` in Chromium with the network cut off; what ran and what the page holds."""
    page = browser.new_page()
    try:
        page.route(re.compile(r"^(https?|wss?)://"), lambda route: route.abort())
        page.goto(path.resolve().as_uri(), wait_until="load", timeout=60_000)
        page.wait_for_timeout(1000)  # onerror / ontoggle / onload handlers fire after load
        return page.evaluate("""() => {
            const all = [...document.querySelectorAll('*')];
            const url = e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action') || '';
            return {
                pwned: window.__pwned || [],
                title: document.title,
                handlers: all.filter(e => [...e.attributes].some(a => /^on/i.test(a.name)))
                             .map(e => e.outerHTML.slice(0, 200)),
                script_links: all.filter(e => /^\\s*(javascript|vbscript|data:text)/i.test(url(e)))
                                 .map(e => e.outerHTML.slice(0, 200)),
                frames: document.querySelectorAll('iframe, frame, object, embed').length,
                body_scripts: [...document.querySelectorAll('body script')].map(s => s.outerHTML.slice(0, 200)),
                head_scripts: [...document.querySelectorAll('head script')].map(s => s.src || s.id || s.type),
                math: document.querySelectorAll('mjx-container svg').length,
                math_script_links: [...document.querySelectorAll('mjx-container *')]
                    .filter(e => [...e.attributes].some(a => /javascript/i.test(a.value)))
                    .map(e => e.outerHTML.slice(0, 200)),
                text: document.body.innerText,
            };
        }""")
    finally:
        page.close()


def test_control_unsanitised_export_runs_the_payloads(graded, chromium_browser, tmp_path):
    """The test can fail: nbconvert's plain HTML export of the graded notebook runs them."""
    from nbconvert import HTMLExporter

    _, plain_dir = graded
    nb = nbformat.read(str(plain_dir / "autograded" / "payload" / LAB / f"{LAB}.ipynb"), as_version=4)
    body, _ = HTMLExporter(sanitize_html=False).from_notebook_node(nb)
    page = tmp_path / "unsanitised.html"
    page.write_text(body, encoding="utf-8")
    seen = _open(chromium_browser, page)
    assert RUN_WHEN_UNSANITISED <= set(seen["pwned"]), sorted(seen["pwned"])
    assert seen["title"] == "PWNED"


def test_control_mathjax_without_safe_keeps_the_script_link(graded, chromium_browser, tmp_path):
    """The math check can fail: the same feedback page without ui/safe has a javascript: link."""
    _, path = graded[0]["plain"]["payload"]
    html = path.read_text(encoding="utf-8")
    unsafe = re.sub(r'<script id="olm-mathjax-safe">.*?</script>', "", html, flags=re.DOTALL)
    assert unsafe != html
    page = tmp_path / "no-safe.html"
    page.write_text(unsafe, encoding="utf-8")
    seen = _open(chromium_browser, page)
    assert seen["math"] >= 2
    assert seen["math_script_links"], "MathJax without ui/safe made no javascript: link (the check is blind)"


@pytest.mark.parametrize("grader", ["plain", "grade"])
def test_feedback_runs_no_student_script(graded, chromium_browser, grader):
    result, path = graded[0][grader]["payload"]
    seen = _open(chromium_browser, path)
    assert seen["pwned"] == [], f"{grader}: payloads ran in {path}: {seen['pwned']}"
    assert seen["title"] != "PWNED"
    assert seen["handlers"] == [], seen["handlers"]
    assert seen["script_links"] == [], seen["script_links"]
    assert seen["frames"] == 0
    assert seen["body_scripts"] == [], seen["body_scripts"]
    # The page's only scripts: MathJax inline (with its ui/safe extension), in the head. It
    # typesets the math with the network cut off, and the \href in it is no script link.
    assert seen["head_scripts"] == [
        "olm-mathjax-config",
        "olm-mathjax",
        "olm-mathjax-safe",
        "olm-mathjax-start",
    ], seen["head_scripts"]
    assert seen["math"] >= 2, "the LaTeX was not typeset offline"
    assert seen["math_script_links"] == [], seen["math_script_links"]
    # The student's work is still shown: the markdown heading, the print and the error, as text.
    assert "Notes (payload)" in seen["text"]
    assert "no-such-image.png" in seen["text"]  # the printed payload, escaped
    if grader == "plain":  # (course_lib grade keeps no JavaScript output in the first place)
        assert "output not shown in feedback: application/javascript" in seen["text"]
    # The payload cells are extra, ungraded cells: full marks.
    assert result.graded and result.score == result.max_score > 0, (result.score, result.tests)


@pytest.mark.parametrize("grader", ["plain", "grade"])
def test_hidden_test_inputs_stay_out_of_feedback(graded, chromium_browser, grader):
    result, path = graded[0][grader]["printer"]
    failed = {g for g, t in result.tests.items() if not t["passed"]}
    assert failed == set(SOFTMAX_TESTS), result.tests
    seen = _open(chromium_browser, path)
    html = path.read_text(encoding="utf-8")
    for text in (seen["text"], html):
        assert "SOFTMAX-ARGS" not in text, f"{grader}: a student print in a test cell reached {path}"
        for value in HIDDEN_INPUTS:
            assert value not in text, f"{grader}: hidden input {value} in {path}"
    # The rule drops every print of a test cell with hidden tests, the test's own ones too
    # (its source, print("visible tests passed"), is still shown).
    assert "visible tests passed" not in seen["text"].splitlines()
    for line in _hidden_lines():
        assert line not in seen["text"], f"{grader}: hidden source in {path}: {line!r}"
    # What is left is the verdict: the error's type and message.
    assert "AssertionError: softmax(x, dim=0) " in seen["text"]
    assert "Traceback" not in seen["text"]


def test_control_plain_nbgrader_records_the_prints(graded):
    """Without the feedback rule the student's prints of hidden inputs would be shown:
    nbgrader's graded notebook has them in the test cells' outputs."""
    _, plain_dir = graded
    nb = nbformat.read(str(plain_dir / "autograded" / "printer" / LAB / f"{LAB}.ipynb"), as_version=4)
    cell = next(
        c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_softmax_stable"
    )
    printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    assert "SOFTMAX-ARGS" in printed and HIDDEN_INPUTS[0] in printed, printed[:500]
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert errors and len(errors[0].traceback) > 1  # nbgrader's traceback quotes the source
