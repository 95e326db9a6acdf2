"""The learner's real experience: JupyterLab driven by headless Chromium (Playwright).

Starts JupyterLab in learner mode on a free localhost port in a temporary copy of the course,
runs lesson 00 through the UI, answers one lab cell through the editor and runs its test, then
checks that nbgrader's instructor tools are hidden, and (second start, instructor configuration)
that the formgrader loads. Screenshots of every step are saved under the test's temporary
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
import sys
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
    """Run `jupyter lab` in ``root`` in learner or instructor mode; yield (base_url, token)."""
    port, token = _free_port(), "olm-browser-test"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               JUPYTERLAB_SETTINGS_DIR=str(root / ".jupyter-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".jupyter-workspaces"),
               JUPYTER_CONFIG_DIR=str(root / ".jupyter-config"))
    env.pop("JUPYTER_CONFIG_PATH", None)
    # No "get notified about Jupyter news?" toast over the cells we click.
    labconfig = root / ".jupyter-config" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
    if mode == "learner":  # the same configuration scripts/course.sh uses
        env["JUPYTER_CONFIG_PATH"] = str(REPO / "course_lib" / "config" / "learner")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
           "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
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
                raise RuntimeError(f"jupyter lab did not answer in 180 s; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield base, token
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
        }""", timeout=timeout_s * 1000)


def _wait_run_finished(page, timeout_s: float, cells: list[int] | None = None, quiet_s: float = 2.0):
    """Wait until every code cell in ``cells`` (default: all) has run, or one shows an error
    (Run All stops there), and the kernel has then been idle for ``quiet_s`` seconds."""
    deadline, idle_since = time.time() + timeout_s, None
    while time.time() < deadline:
        state = page.evaluate("""(wanted) => {
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
        }""", cells)
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
    page.evaluate("""async (i) => {
        const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = i; nb.mode = 'command';
        await nb.scrollToItem(i, 'center');
    }""", index)
    # Cells far from the viewport are rendered lazily: wait for this one's editor to exist.
    page.wait_for_function("""(i) => {
        const w = window.jupyterapp.shell.currentWidget.content.widgets[i];
        return w && w.node.isConnected && w.node.querySelector('.cm-content') !== null;
    }""", arg=index, timeout=30_000)
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
    gid = lambda c: c.metadata.get("nbgrader", {}).get("grade_id")  # noqa: E731
    for i, c in enumerate(release.cells):
        meta = c.metadata.get("nbgrader", {})
        if c.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            ref = next(s for s in source.cells if gid(s) == gid(c))
            answer = "\n".join(ln for ln in ref.source.splitlines()
                               if "### BEGIN SOLUTION" not in ln and "### END SOLUTION" not in ln)
            test = next(j for j in range(i + 1, len(release.cells))
                        if release.cells[j].metadata.get("nbgrader", {}).get("grade"))
            return i, answer, test
    raise AssertionError(f"{lab} has no solution cell")


@pytest.fixture(scope="module")
def browser(chromium_browser):
    """Headless Chromium (tests/conftest.py finds or installs it)."""
    return chromium_browser


@pytest.fixture
def course_copy(tmp_path) -> Path:
    root = tmp_path / "course"
    for folder in ("lessons", "labs"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def test_learner_runs_lesson_00_and_solves_a_lab_cell(browser, course_copy, tmp_path):
    # BROWSER_SCREENSHOTS_DIR keeps them after pytest cleans its temporary folders.
    shots = Shots(Path(os.environ.get("BROWSER_SCREENSHOTS_DIR", tmp_path / "screenshots")))
    with jupyterlab(course_copy, "learner", tmp_path / "jupyter-learner.log") as (base, token):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        # 1. Lesson 00, all cells, through the Run menu.
        _open_notebook(page, base, token, LESSON)
        shots(page, "lesson00_opened")
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
        assert page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img").count() >= 1, \
            "the plot is in the notebook but no image was rendered"
        shots(page, "lesson00_plot")

        # 2. Learner mode: instructor tools are not offered.
        has = page.evaluate("""() => ({
            formgrader: window.jupyterapp.commands.hasCommand('nbgrader:open-formgrader'),
            create: !!document.getElementById('nbgrader-create_assignemnt')})""")
        assert not has["formgrader"] and not has["create"], has
        assert _http_status(f"{base}/formgrader?token={token}") == 404
        page.click(".lm-MenuBar-itemLabel:text-is('Nbgrader')")
        page.wait_for_timeout(500)
        labels = page.locator(".lm-Menu:visible .lm-Menu-itemLabel").all_inner_texts()
        assert not [t for t in labels if "Formgrader" in t or "Course List" in t], labels
        shots(page, "learner_no_instructor_tools")
        page.keyboard.press("Escape")

        # 3. The lab: answer the first exercise through the editor, run, see its test pass.
        _open_notebook(page, base, token, f"labs/{LAB}/{LAB}.ipynb")
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
        _menu(page, "Run", "notebook:run-all-above")   # setup cells and the answer
        _wait_run_finished(page, timeout_s=180, cells=list(range(test_index)))
        _select_cell(page, test_index)
        _menu(page, "Run", "notebook:run-cell")         # the locked test cell itself
        _wait_run_finished(page, timeout_s=180, cells=[test_index])
        result = page.evaluate("""(i) => {
            const c = window.jupyterapp.shell.currentWidget.content.model.cells.get(i);
            return {count: c.executionCount, outputs: c.outputs.toJSON()};
        }""", test_index)
        _select_cell(page, test_index)
        shots(page, "lab_test_passed")
        assert result["count"], "the test cell did not run"
        errors = [o for o in result["outputs"] if o["output_type"] == "error"]
        assert not errors, f"the test cell failed: {errors}"
        page.close()

    # 4. Instructor mode: a second start with the instructor configuration.
    instructor_root = tmp_path / "instructor"
    shutil.copytree(REPO / "solutions", instructor_root / "solutions")
    shutil.copy(REPO / "nbgrader_config.py", instructor_root / "nbgrader_config.py")
    with jupyterlab(instructor_root, "instructor", tmp_path / "jupyter-instructor.log") as (base, token):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        assert _http_status(f"{base}/formgrader?token={token}") == 200
        page.goto(f"{base}/formgrader?token={token}", wait_until="domcontentloaded")
        page.wait_for_selector("text=Manage Assignments", timeout=60_000)
        shots(page, "instructor_formgrader")
        page.close()
    print("[browser] screenshots:", *map(str, shots.paths), sep="\n  ")
    assert len(shots.paths) == 7
