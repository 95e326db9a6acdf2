"""The learner's real experience: JupyterLab driven by headless Chromium (Playwright).

Starts JupyterLab with the course's own script, `scripts/course.sh`, on a free localhost port:
learner mode with its working copy in a temporary folder (OPEN_LLM_LAB_WORK_DIR), whose printed
URL opens lesson 00; runs lesson 00 through the UI, answers one lab cell through the editor and
runs its test, and checks what a learner is shown (no instructor tools, no empty Nbgrader menu,
no "Jupyter news?" toast, Validate on labs only). A second start, `course.sh --instructor` in a
temporary copy of the course, checks that the formgrader loads without an exchange warning and
that the course folders can be browsed. Screenshots of every step are saved under the test's temporary
directory and their paths printed (`pytest -s` shows them).

Needs Debian's chromium (tests/conftest.py installs it with apt-get when missing and running as
root) and the Playwright Python package pointed at that executable: Playwright never downloads
a browser.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
LESSON = "lessons/00_welcome.ipynb"
LAB = "lab00_pytorch_warmup"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root: Path, mode: str, log_path: Path):
    """Run `scripts/course.sh` in learner mode (working copy in ``root``) or instructor mode
    (``root`` is a copy of the course with the script); yield (base_url, token, port)."""
    port, token = _free_port(), "olm-browser-test"
    home = root.parent / f".jupyter-home-{mode}"  # the learner's own Jupyter folders
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OPEN_LLM_LAB_SKIP_SETUP="1",
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
    )
    env.pop("JUPYTER_CONFIG_PATH", None)
    if mode == "learner":
        script, extra = REPO / "scripts" / "course.sh", []
        env["OPEN_LLM_LAB_WORK_DIR"] = str(root)
    else:
        script, extra = root / "scripts" / "course.sh", ["--instructor"]
    cmd = [
        "bash",
        str(script),
        *extra,
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",
    ]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early; log:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(
                    f"jupyter lab did not answer in 180 s; log:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(1)
        yield base, token, port
    finally:
        # Clean shutdown through the API (kernels too), then make sure the process is gone.
        with contextlib.suppress(OSError):
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=10)
        log.close()


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Shots:
    """Numbered screenshots of each step, paths printed for the person reading the log."""

    def __init__(self, folder: Path):
        self.folder, self.n, self.paths = folder, 0, []
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, page, name: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}_{name}.png"
        page.screenshot(path=str(path), full_page=False)
        self.paths.append(path)
        print(f"[browser] screenshot: {path}")
        return path


def _open_notebook(page, base: str, token: str, rel: str):
    page.goto(f"{base}/lab/tree/{rel}?token={token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
    _wait_kernel_idle(page, timeout_s=120)


def _wait_kernel_idle(page, timeout_s: float):
    """Wait until the current notebook's kernel exists and is idle (via the app's own API)."""
    page.wait_for_function(
        """() => {
            const app = window.jupyterapp; if (!app) return false;
            const w = app.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return !!k && k.status === 'idle';
        }""",
        timeout=timeout_s * 1000,
    )


def _wait_run_finished(page, timeout_s: float, cells: list[int] | None = None, quiet_s: float = 2.0):
    """Wait until every code cell in ``cells`` (default: all) has run, or one shows an error
    (Run All stops there), and the kernel has then been idle for ``quiet_s`` seconds."""
    deadline, idle_since = time.time() + timeout_s, None
    while time.time() < deadline:
        state = page.evaluate(
            """(wanted) => {
            const w = window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
            const cells = w.content.model.cells;
            let pending = 0, error = false;
            for (let i = 0; i < cells.length; i++) {
                const c = cells.get(i);
                if (c.type !== 'code' || (wanted && !wanted.includes(i))) continue;
                if (c.executionCount === null) pending++;
                if (c.outputs.toJSON().some(o => o.output_type === 'error')) error = true;
            }
            return {status: k ? k.status : 'none', pending, error};
        }""",
            cells,
        )
        if state["status"] == "idle" and (state["pending"] == 0 or state["error"]):
            idle_since = idle_since or time.time()
            if time.time() - idle_since >= quiet_s:
                return
        else:
            idle_since = None
        time.sleep(0.5)
    raise AssertionError(f"the notebook was still running after {timeout_s} s: {state}")


def _outputs(page) -> dict:
    """Every code cell's execution count and outputs, read from the notebook model (JupyterLab
    renders only the cells near the viewport, so the DOM alone would miss some)."""
    return page.evaluate("""() => {
        const nb = window.jupyterapp.shell.currentWidget.content;
        const res = {errors: [], text: '', images: [], counts: []};
        for (let i = 0; i < nb.model.cells.length; i++) {
            const c = nb.model.cells.get(i);
            if (c.type !== 'code') continue;
            res.counts.push(c.executionCount);
            for (const o of c.outputs.toJSON()) {
                const join = t => Array.isArray(t) ? t.join('') : (t || '');
                if (o.output_type === 'error') res.errors.push(i + ': ' + o.ename + ': ' + o.evalue);
                if (o.output_type === 'stream') res.text += join(o.text);
                if (o.data && o.data['text/plain']) res.text += join(o.data['text/plain']) + '\\n';
                if (o.data && o.data['image/png']) res.images.push(i);
            }
        }
        return res;
    }""")


def _select_cell(page, index: int):
    """Make cell ``index`` the active one and scroll it into view, as a click would."""
    page.evaluate(
        """async (i) => {
        const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = i; nb.mode = 'command';
        await nb.scrollToItem(i, 'center');
    }""",
        index,
    )
    # Cells far from the viewport are rendered lazily: wait for this one's editor to exist.
    page.wait_for_function(
        """(i) => {
        const w = window.jupyterapp.shell.currentWidget.content.widgets[i];
        return w && w.node.isConnected && w.node.querySelector('.cm-content') !== null;
    }""",
        arg=index,
        timeout=30_000,
    )
    page.wait_for_timeout(300)
    return page.evaluate_handle("i => window.jupyterapp.shell.currentWidget.content.widgets[i].node", index)


def _menu(page, menu: str, command: str):
    page.click(f".lm-MenuBar-itemLabel:text-is('{menu}')")
    page.click(f"li.lm-Menu-item[data-command='{command}']")


def _lab_cells(lab: str) -> tuple[int, str, int]:
    """(index of the first solution cell, its reference answer, index of its test cell) in the
    released notebook; the answer comes from the instructor's notebook."""
    release = nbformat.read(str(REPO / "labs" / lab / f"{lab}.ipynb"), as_version=4)
    source = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    gid = lambda c: c.metadata.get("nbgrader", {}).get("grade_id")
    for i, c in enumerate(release.cells):
        meta = c.metadata.get("nbgrader", {})
        if c.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            ref = next(s for s in source.cells if gid(s) == gid(c))
            answer = "\n".join(
                ln
                for ln in ref.source.splitlines()
                if "### BEGIN SOLUTION" not in ln and "### END SOLUTION" not in ln
            )
            test = next(
                j
                for j in range(i + 1, len(release.cells))
                if release.cells[j].metadata.get("nbgrader", {}).get("grade")
            )
            return i, answer, test
    raise AssertionError(f"{lab} has no solution cell")


@pytest.fixture(scope="module")
def browser(chromium_browser):
    """Headless Chromium (tests/conftest.py finds or installs it)."""
    return chromium_browser


def _page_config(page) -> dict:
    return page.evaluate("() => JSON.parse(document.getElementById('jupyter-config-data').textContent)")


def _validate_button_shown(page, settle_s: float = 20.0) -> bool:
    """Whether nbgrader's Validate button is visible on the current notebook's toolbar.

    nbgrader's extension shows or hides the button once it has read the notebook's metadata,
    which can take seconds on a loaded machine: poll for up to ``settle_s`` seconds (until it is
    visible) instead of judging after a fixed pause. A lesson's button never becomes visible, so
    that answer costs the whole wait."""
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .validate-button", state="attached")
    deadline = time.monotonic() + settle_s
    while True:
        page.wait_for_timeout(500)
        shown = page.evaluate("""() => {
            const b = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .validate-button');
            return b.offsetParent !== null; }""")
        if shown or time.monotonic() > deadline:
            return shown


def test_learner_runs_lesson_00_and_solves_a_lab_cell(browser, tmp_path):
    # BROWSER_SCREENSHOTS_DIR keeps them after pytest cleans its temporary folders.
    shots = Shots(Path(os.environ.get("BROWSER_SCREENSHOTS_DIR", tmp_path / "screenshots")))
    work, log_path = tmp_path / "my_work", tmp_path / "jupyter-learner.log"
    with jupyterlab(work, "learner", log_path) as (base, token, port):
        # course.sh made the git-ignored working copy, serves it, and prints lesson 00's URL.
        assert (work / LESSON).is_file() and (work / "labs" / LAB / f"{LAB}.ipynb").is_file()
        assert (work / ".gitignore").read_text().splitlines()[-1] == "*"
        assert f"127.0.0.1:{port}/lab/tree/{LESSON}?token=" in log_path.read_text()
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        # 1. Lesson 00, all cells, through the Run menu.
        _open_notebook(page, base, token, LESSON)
        shots(page, "lesson00_opened")
        disabled = _page_config(page)["disabledExtensions"]
        for ext in (
            "@jupyterlab/apputils-extension:announcements",
            "@jupyter/nbgrader:menu",
            "@jupyter/nbgrader:formgrader",
            "@jupyter/nbgrader:create-assignment",
        ):
            assert ext in disabled, (ext, disabled)
        assert page.locator(".Toastify__toast").count() == 0, "a notification covers the notebook"
        assert not _validate_button_shown(page), "Validate is offered on a lesson"
        _menu(page, "Run", "runmenu:run-all")
        _wait_run_finished(page, timeout_s=480)
        out = _outputs(page)
        shots(page, "lesson00_executed")
        assert out["errors"] == [], f"lesson 00 showed errors: {out['errors']}"
        assert all(n for n in out["counts"]), f"not every cell ran: {out['counts']}"
        doctor = [ln for ln in out["text"].splitlines() if ln.startswith(("OK  ", "FAIL"))]
        assert len(doctor) > 10, "the doctor's lines are missing from lesson 00's output"
        assert not [ln for ln in doctor if ln.startswith("FAIL")], doctor
        assert out["images"], "lesson 00 produced no plot"
        node = _select_cell(page, out["images"][0])
        node.as_element().query_selector(".jp-OutputArea-output img").scroll_into_view_if_needed()
        assert page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img").count() >= 1, (
            "the plot is in the notebook but no image was rendered"
        )
        shots(page, "lesson00_plot")

        # 2. Learner mode: instructor tools are not offered.
        has = page.evaluate("""() => ({
            formgrader: window.jupyterapp.commands.hasCommand('nbgrader:open-formgrader'),
            create: !!document.getElementById('nbgrader-create_assignemnt')})""")
        assert not has["formgrader"] and not has["create"], has
        assert _http_status(f"{base}/formgrader?token={token}") == 404
        menus = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
        assert "Run" in menus and "Nbgrader" not in menus, menus  # no empty Nbgrader menu
        shots(page, "learner_no_instructor_tools")

        # 3. The lab: answer the first exercise through the editor, run, see its test pass.
        _open_notebook(page, base, token, f"labs/{LAB}/{LAB}.ipynb")
        assert _validate_button_shown(page), "Validate is missing on a lab"
        sol_index, answer, test_index = _lab_cells(LAB)
        node = _select_cell(page, sol_index).as_element()
        editor = node.query_selector(".cm-content")
        assert "NotImplementedError" in editor.inner_text()
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")
        page.keyboard.insert_text(answer)  # one input event: no auto-indent or bracket doubling
        assert "NotImplementedError" not in editor.inner_text()
        shots(page, "lab_answer_typed")
        page.keyboard.press("Escape")
        _select_cell(page, test_index)
        _menu(page, "Run", "notebook:run-all-above")  # setup cells and the answer
        _wait_run_finished(page, timeout_s=180, cells=list(range(test_index)))
        _select_cell(page, test_index)
        _menu(page, "Run", "notebook:run-cell")  # the locked test cell itself
        _wait_run_finished(page, timeout_s=180, cells=[test_index])
        result = page.evaluate(
            """(i) => {
            const c = window.jupyterapp.shell.currentWidget.content.model.cells.get(i);
            return {count: c.executionCount, outputs: c.outputs.toJSON()};
        }""",
            test_index,
        )
        _select_cell(page, test_index)
        shots(page, "lab_test_passed")
        assert result["count"], "the test cell did not run"
        errors = [o for o in result["outputs"] if o["output_type"] == "error"]
        assert not errors, f"the test cell failed: {errors}"
        page.close()

    # 4. Instructor mode: `course.sh --instructor` in a copy of the course (it writes exchange/).
    root = tmp_path / "instructor"
    for folder in ("solutions", "labs", "scripts", "course_lib/config"):
        shutil.copytree(REPO / folder, root / folder)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / ".venv").symlink_to(REPO / ".venv")
    log_path = tmp_path / "jupyter-instructor.log"
    with jupyterlab(root, "instructor", log_path) as (base, token, port):
        assert f"127.0.0.1:{port}/lab/tree/solutions?token=" in log_path.read_text()
        assert (root / "exchange").is_dir(), "course.sh --instructor made no exchange folder"
        # The whole course folder is served (not only solutions/).
        for folder in ("solutions", "labs", f"solutions/{LAB}"):
            assert _http_status(f"{base}/api/contents/{folder}?token={token}") == 200, folder
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        assert _http_status(f"{base}/formgrader?token={token}") == 200
        page.goto(f"{base}/formgrader?token={token}", wait_until="domcontentloaded")
        page.wait_for_selector("text=Manage Assignments", timeout=60_000)
        page.wait_for_selector(f"text={LAB}", timeout=60_000)
        assert page.locator("#warning-exchange").count() == 0, "the formgrader says the exchange is missing"
        # The formgrader's links into the course folder (the assignment's source) open.
        links = page.eval_on_selector_all("a[href*='/tree/']", "els => els.map(e => e.href)")
        assert any(f"solutions/{LAB}" in u for u in links), links
        for url in links:
            sep = "&" if "?" in url else "?"
            assert _http_status(f"{url}{sep}token={token}") == 200, url
        shots(page, "instructor_formgrader")
        page.close()
    print("[browser] screenshots:", *map(str, shots.paths), sep="\n  ")
    assert len(shots.paths) == 7
