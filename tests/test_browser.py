"""The learner's real experience: JupyterLab driven by headless Chromium (Playwright).

Starts JupyterLab in learner mode on a free localhost port in a temporary copy of the course,
runs lesson 00 through the UI, answers one lab cell through the editor and runs its test, then
checks that nbgrader's instructor tools are hidden, and (second start, instructor configuration)
that the formgrader loads. Screenshots of every step are saved under the test's temporary
directory and their paths printed (`pytest -s` shows them).

Needs Debian's chromium (installed here with apt-get when missing and running as root) and the
Playwright Python package pointed at that executable: Playwright never downloads a browser.
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
CHROMIUM_FLAGS = [
    "--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--disable-default-apps", "--mute-audio",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _chromium() -> str:
    """Path of Debian's chromium, installing it with apt-get when missing (root only)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here "
                    "(needs root and apt-get): sudo apt-get install chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.skip(f"could not install chromium ({' '.join(cmd)} failed): {r.stderr[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no chromium executable is on PATH")
    return found


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


def _run_all_from_menu(page):
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li.lm-Menu-item[data-command='notebook:run-all-cells']")


def _wait_run_finished(page, timeout_s: float):
    """Wait until no cell is queued or running ([*]) and the kernel is idle again."""
    deadline = time.time() + timeout_s
    time.sleep(2)
    while time.time() < deadline:
        busy = page.evaluate("""() => Array.from(document.querySelectorAll(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputArea-prompt')).some(p => p.textContent.includes('*'))""")
        if not busy:
            _wait_kernel_idle(page, timeout_s=max(5, deadline - time.time()))
            return
        time.sleep(1)
    raise AssertionError(f"the notebook was still running after {timeout_s} s")


def _outputs(page) -> dict:
    return page.evaluate("""() => {
        const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
        const outs = Array.from(panel.querySelectorAll('.jp-OutputArea-output'));
        return {
          errors: outs.filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.error'
                                   || o.querySelector('[data-mime-type="application/vnd.jupyter.error"]'))
                      .map(o => o.innerText.slice(0, 800)),
          images: panel.querySelectorAll('.jp-OutputArea-output img, .jp-RenderedImage img').length,
          text: outs.map(o => o.innerText).join('\\n'),
          prompts: Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')).map(p => p.textContent.trim()),
        };
    }""")


def _first_solution_cell(lab: str) -> tuple[int, str, int]:
    """(index of the first solution cell among code cells, its solution source, index of the
    test cell that follows it) from the instructor's notebook."""
    nb = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, c in enumerate(code):
        meta = c.metadata.get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade"):
            answer = "\n".join(ln for ln in c.source.splitlines()
                               if "### BEGIN SOLUTION" not in ln and "### END SOLUTION" not in ln)
            test = next(j for j in range(i + 1, len(code)) if code[j].metadata.get("nbgrader", {}).get("grade"))
            return i, answer, test
    raise AssertionError(f"{lab} has no solution cell")


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (test extra)")
    args = list(CHROMIUM_FLAGS) + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def course_copy(tmp_path) -> Path:
    root = tmp_path / "course"
    for folder in ("lessons", "labs"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def test_learner_runs_lesson_00_and_solves_a_lab_cell(browser, course_copy, tmp_path):
    shots = Shots(tmp_path / "screenshots")
    with jupyterlab(course_copy, "learner", tmp_path / "jupyter-learner.log") as (base, token):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        # 1. Lesson 00, all cells, through the Run menu.
        _open_notebook(page, base, token, LESSON)
        shots(page, "lesson00_opened")
        _run_all_from_menu(page)
        _wait_run_finished(page, timeout_s=420)
        out = _outputs(page)
        shots(page, "lesson00_executed")
        assert out["errors"] == [], f"lesson 00 showed errors: {out['errors']}"
        assert all(p and p != "[ ]:" for p in out["prompts"]), f"not every cell ran: {out['prompts']}"
        doctor = [ln for ln in out["text"].splitlines() if ln.startswith(("OK  ", "FAIL"))]
        assert doctor, "the doctor's lines are missing from lesson 00's output"
        assert not [ln for ln in doctor if ln.startswith("FAIL")], doctor
        assert out["images"] >= 1, "lesson 00 rendered no plot"
        page.locator(".jp-OutputArea-output img").first.scroll_into_view_if_needed()
        shots(page, "lesson00_plot")

        # 2. Learner mode: instructor tools are not offered.
        has = page.evaluate("""() => ({
            formgrader: window.jupyterapp.commands.hasCommand('nbgrader:open-formgrader'),
            create: !!document.getElementById('nbgrader-create_assignemnt'),
            validate: window.jupyterapp.commands.hasCommand('nbgrader:validate') ||
                      !!document.querySelector('.nbgrader-ValidateButton, [title*="Validate"]')})""")
        assert not has["formgrader"] and not has["create"], has
        assert _http_status(f"{base}/formgrader?token={token}") == 404
        shots(page, "learner_no_instructor_tools")

        # 3. The lab: answer the first exercise through the editor, run, see its test pass.
        lab_rel = f"labs/{LAB}/{LAB}.ipynb"
        _open_notebook(page, base, token, lab_rel)
        sol_index, answer, test_index = _first_solution_cell(LAB)
        cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
        editor = cells.nth(sol_index).locator(".cm-content")
        assert "NotImplementedError" in editor.inner_text()
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")
        page.keyboard.insert_text(answer)  # one input event: no auto-indent or bracket doubling
        assert "NotImplementedError" not in editor.inner_text()
        shots(page, "lab_answer_typed")
        # Run everything above and including the test cell; later exercises are still blank.
        cells.nth(test_index).locator(".jp-InputArea-prompt").click()
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click("li.lm-Menu-item[data-command='notebook:run-all-above']")
        _wait_run_finished(page, timeout_s=180)
        cells.nth(test_index).locator(".jp-InputArea-prompt").click()
        page.keyboard.press("Shift+Enter")
        _wait_run_finished(page, timeout_s=180)
        test_cell = cells.nth(test_index)
        test_cell.scroll_into_view_if_needed()
        shots(page, "lab_test_passed")
        prompt = test_cell.locator(".jp-InputArea-prompt").inner_text().strip()
        assert prompt not in ("[ ]:", "[*]:", ""), f"the test cell did not run: {prompt!r}"
        errors = test_cell.locator("[data-mime-type='application/vnd.jupyter.error']").count()
        assert errors == 0, test_cell.locator(".jp-OutputArea").inner_text()[:2000]
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
