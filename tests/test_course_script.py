"""What `scripts/course.sh` starts, fast: `--dry-run` does everything but start JupyterLab.

Learner mode serves a git-ignored working copy (OPEN_LLM_LAB_WORK_DIR here, my_work/ by
default) whose printed URL is lesson 00, and never overwrites a learner's edits; instructor
mode serves the whole course folder. The Jupyter configuration the script uses is checked
here too. tests/test_browser.py starts the real thing."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "course_lib" / "config"
LESSON = "lessons/00_welcome.ipynb"


def _course(*args: str, work: Path | None = None, **env: str) -> tuple[str, list[str], dict]:
    """Run ``course.sh --dry-run ARGS``; (its output, the jupyter command, the env it printed)."""
    full_env = dict(os.environ, OPEN_LLM_LAB_SKIP_SETUP="1", **env)
    full_env.pop("JUPYTER_CONFIG_PATH", None)
    if work is not None:
        full_env["OPEN_LLM_LAB_WORK_DIR"] = str(work)
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "course.sh"), "--dry-run", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    printed = dict(ln.split("=", 1) for ln in lines if ln.startswith("JUPYTER_CONFIG_"))
    cmd = shlex.split(next(ln for ln in lines if ln.startswith(".venv/bin/jupyter lab")))
    return r.stdout, cmd, printed


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _course_files() -> list[str]:
    return sorted(
        str(p.relative_to(REPO))
        for d in ("lessons", "labs")
        for p in (REPO / d).rglob("*")
        if p.is_file() and ".ipynb_checkpoints" not in p.parts
    )


def test_learner_mode_serves_a_working_copy_and_prints_lesson_00(tmp_path):
    work = tmp_path / "my_work"
    out, cmd, env = _course("--no-browser", "--port", "8999", work=work)
    assert f"--ServerApp.root_dir={work}" in cmd
    assert "--LabApp.default_url=/lab/tree/lessons/00_welcome.ipynb" in cmd
    assert cmd[-3:] == ["--no-browser", "--port", "8999"], "a positional path would become the root"
    assert "--LabApp.custom_css=True" in cmd
    paths = env["JUPYTER_CONFIG_PATH"].split(":")
    assert paths[:2] == [str(CONFIG / "learner"), str(CONFIG / "common")]
    assert env["JUPYTER_CONFIG_DIR"] == str(work / ".jupyter")
    assert (work / ".jupyter" / "custom" / "custom.css").read_text() == (
        CONFIG / "learner/custom/custom.css"
    ).read_text()
    # Every lesson and lab, byte for byte, in a folder git ignores.
    files = _course_files()
    assert LESSON in files and len(files) > 10
    assert all(_sha(work / f) == _sha(REPO / f) for f in files)
    assert (work / ".gitignore").read_text().splitlines()[-1] == "*"
    assert "created your working copy" in out


def test_working_copy_never_overwrites_a_learners_edits(tmp_path):
    work = tmp_path / "my_work"
    _course(work=work)
    state = work / ".course-sources"
    mine, untouched, removed = (
        work / LESSON,
        work / "lessons/01_tokenization.ipynb",
        work / "lessons/02_data.ipynb",
    )
    # As if the course had changed 00 and 01 since the copy was made: the copy holds the old
    # version ("old"), and 00 was then edited by the learner.
    old = b'{"old": true}'
    lines = []
    for line in state.read_text().splitlines():
        sha, path = line.split("  ", 1)
        if path in (LESSON, "lessons/01_tokenization.ipynb"):
            sha = hashlib.sha256(old).hexdigest()
        lines.append(f"{sha}  {path}")
    state.write_text("\n".join(lines) + "\n")
    mine.write_bytes(b'{"my": "answers"}')
    untouched.write_bytes(old)
    removed.unlink()

    out, _, _ = _course(work=work)
    assert mine.read_bytes() == b'{"my": "answers"}', "the learner's edits were overwritten"
    assert f"{work.name}/{LESSON}" in out or str(work / LESSON) in out, out
    assert "rename your copy" in out
    assert _sha(untouched) == _sha(REPO / "lessons/01_tokenization.ipynb"), (
        "an untouched copy was not updated"
    )
    assert _sha(removed) == _sha(REPO / "lessons/02_data.ipynb"), "a missing file was not copied again"
    assert "1 new and 1 updated" in out, out
    # A third run: nothing to do, and still no overwrite.
    out, _, _ = _course(work=work)
    assert mine.read_bytes() == b'{"my": "answers"}'
    assert "new and" not in out


def test_instructor_mode_serves_the_whole_course(tmp_path):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    out, cmd, env = _course("--instructor", NBGRADER_EXCHANGE=str(exchange))
    assert f"--ServerApp.root_dir={REPO}" in cmd
    assert "--LabApp.default_url=/lab/tree/solutions" in cmd
    assert not [a for a in cmd[2:] if not a.startswith("--")], f"positional arguments: {cmd}"
    assert env["JUPYTER_CONFIG_PATH"].split(":")[0] == str(CONFIG / "common")
    assert str(CONFIG / "learner") not in env["JUPYTER_CONFIG_PATH"]


def test_jupyter_configuration_for_learners_and_instructors():
    from jupyter_server.services.contents.manager import ContentsManager

    common = json.loads((CONFIG / "common" / "labconfig" / "page_config.json").read_text())
    assert common["disabledExtensions"]["@jupyterlab/apputils-extension:announcements"] is True
    learner = json.loads((CONFIG / "learner" / "labconfig" / "page_config.json").read_text())
    for ext in ("formgrader", "create-assignment", "course-list", "assignment-list", "menu"):
        assert learner["disabledExtensions"][f"@jupyter/nbgrader:{ext}"] is True, ext
    assert "@jupyter/nbgrader:validate-assignment" not in learner["disabledExtensions"]
    server = json.loads((CONFIG / "common" / "jupyter_server_config.json").read_text())
    globs = server["ContentsManager"]["hide_globs"]
    assert "*.egg-info" in globs
    assert set(ContentsManager().hide_globs) <= set(globs), "jupyter_server's own globs were dropped"
    css = (CONFIG / "learner" / "custom" / "custom.css").read_text()
    assert ":not(:has(.jp-Notebook .jp-mod-readOnly))" in css and ".validate-button" in css


@pytest.mark.parametrize("env_value", [None, "/srv/nbgrader/exchange"])
def test_nbgrader_exchange_is_course_local_unless_set(monkeypatch, env_value):
    from traitlets.config.loader import PyFileConfigLoader

    if env_value is None:
        monkeypatch.delenv("NBGRADER_EXCHANGE", raising=False)
    else:
        monkeypatch.setenv("NBGRADER_EXCHANGE", env_value)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
    assert config.Exchange.root == (env_value or str(REPO / "exchange"))
    assert config.CourseDirectory.release_directory == "labs"
