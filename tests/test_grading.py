"""course_lib.grading: input checks and the plumbing that the round-trip tests rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_lib import grading

REPO = Path(__file__).resolve().parent.parent


def test_list_labs_matches_solutions_folders():
    labs = grading.list_labs(REPO)
    assert labs == sorted(p.name for p in (REPO / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())
    assert "lab00_pytorch_warmup" in labs


def test_unknown_lab_lists_the_real_ones():
    with pytest.raises(ValueError, match="lab00_pytorch_warmup"):
        grading.lab_source("lab99_nope", REPO)
    with pytest.raises(TypeError):
        grading.lab_source(None, REPO)


def test_autograde_rejects_bad_submissions(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        grading.autograde("lab00_pytorch_warmup", {}, REPO)
    with pytest.raises(FileNotFoundError, match="alice"):
        grading.autograde("lab00_pytorch_warmup", {"alice": tmp_path / "missing.ipynb"}, REPO)
    nb = tmp_path / "x.ipynb"
    nb.write_text("{}")
    with pytest.raises(ValueError, match="student id"):
        grading.autograde("lab00_pytorch_warmup", {"../carol": nb}, REPO)
    with pytest.raises(ValueError, match="student id"):
        grading.autograde("lab00_pytorch_warmup", {"bad id!": nb}, REPO)


def test_config_is_rerooted_and_keeps_course_settings(tmp_path):
    cfg = grading.course_config(tmp_path)
    assert cfg.CourseDirectory.root == str(tmp_path)
    assert cfg.CourseDirectory.source_directory == "solutions"
    assert cfg.CourseDirectory.release_directory == "labs"
    assert cfg.OverwriteCells.add_missing_cells is True
    assert cfg.IgnorePattern.enabled is True
    assert "nbgrader.preprocessors.ClearHiddenTests" in cfg.GenerateFeedback.preprocessors
    assert cfg.Execute.timeout >= 60


def test_grade_result_fraction():
    def test(points, top):
        return {"points": points, "max": top, "passed": points >= top, "reason": ""}

    r = grading.GradeResult("a", {"t1": test(3.0, 3.0), "t2": test(0.0, 1.0)})
    assert (r.score, r.max_score, r.fraction) == (3.0, 4.0, 0.75)
    assert r.failed() == {"t2": ""}
    assert grading.GradeResult("b").fraction == 0.0


def test_fast_alembic_head_matches_nbgrader():
    import subprocess

    import nbgrader.api as nb_api

    from course_lib.grading.course import _fast_alembic_version

    _fast_alembic_version()
    fast = nb_api.get_alembic_version()
    with nb_api._temp_alembic_ini("sqlite:////tmp/gradebook.db") as ini:
        out = subprocess.check_output(["alembic", "-c", ini, "heads"]).decode()
    assert fast == out.split("\n")[0].split(" ")[0]


def test_grade_command_line_offers_every_limit_with_its_default(capsys):
    """Each SandboxLimits field has an option whose default is the dataclass's own."""
    from course_lib.__main__ import _LIMIT_OPTIONS, main
    from course_lib.grading.limits import SandboxLimits

    assert {f for _, f, _, _ in _LIMIT_OPTIONS} == set(SandboxLimits.field_defaults())
    with pytest.raises(SystemExit):
        main(["grade", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, field, _, _ in _LIMIT_OPTIONS:
        assert option in text and f"(default: {SandboxLimits.field_defaults()[field]})" in text
