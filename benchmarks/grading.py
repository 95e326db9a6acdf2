"""Grading throughput: plain serial `nbgrader autograde` vs `course_lib grade --workers N`.

    python benchmarks/grading.py [--submissions 12] [--workers 2] [--lab lab00_pytorch_warmup]

Builds a class of synthetic submissions (the solution, the blank release and the seeded
mistakes of tests/lab_mistakes/, cycled), grades the same class both ways in fresh course
folders in one run, and prints both wall times and their ratio. Use --submissions 100 for the
"100-submission class" figure, --lab lab02_gpt for the slowest lab's seconds per submission.
Last line: RESULT lab=... submissions=... serial_s=... parallel_s=... speedup=...
s_per_submission_median=... s_per_submission_max=... not_graded=...
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course_lib import grading  # noqa: E402
from course_lib.grading import ensure_assignment, grade_lab  # noqa: E402
from course_lib.grading.mistakes import apply_mistake, load_mistakes  # noqa: E402


def make_class(lab: str, n: int, folder: Path) -> list[str]:
    sources = [("solution", grading.lab_source(lab)), ("blank", ROOT / "labs" / lab / f"{lab}.ipynb")]
    tmp = folder / "_mistakes"
    tmp.mkdir(parents=True)
    for m in load_mistakes(lab):
        sources.append((m["name"], apply_mistake(lab, m, tmp / f"{m['name']}.ipynb")))
    students = []
    for i in range(n):
        kind, path = sources[i % len(sources)]
        sid = f"s{i:03d}_{kind}"[:40]
        dest = folder / "submitted" / sid / lab
        dest.mkdir(parents=True)
        shutil.copy(path, dest / f"{lab}.ipynb")
        students.append(sid)
    shutil.rmtree(tmp)
    return students


def course(lab: str, n: int, base: Path) -> Path:
    root = base
    shutil.copytree(ROOT / "solutions" / lab, root / "solutions" / lab)
    shutil.copytree(ROOT / "labs" / lab, root / "labs" / lab)
    make_class(lab, n, root)
    return root


def serial_nbgrader(lab: str, root: Path, students: list[str]) -> float:
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    cfg = grading.course_config(root)
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    assert api.generate_assignment(lab, force=True, create=True)["success"]
    t0 = time.perf_counter()
    for s in students:
        api.autograde(lab, s, force=True, create=True)
        api.generate_feedback(lab, s, force=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lab", default="lab00_pytorch_warmup")
    ap.add_argument("--submissions", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-serial", action="store_true", help="only time course_lib grade")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        serial_root, parallel_root = (
            course(args.lab, args.submissions, Path(a)),
            course(args.lab, args.submissions, Path(b)),
        )
        students = sorted(p.name for p in (serial_root / "submitted").iterdir())
        serial_s = float("nan") if args.skip_serial else serial_nbgrader(args.lab, serial_root, students)
        # Like the serial run (generate_assignment before its clock starts), the parallel course
        # starts with the assignment in its gradebook, as after `course_lib release`.
        ensure_assignment(args.lab, parallel_root)
        t0 = time.perf_counter()
        results = grade_lab(
            args.lab, workers=args.workers, course_root=parallel_root, progress=True, print_fn=lambda *x: None
        )
        parallel_s = time.perf_counter() - t0
    assert len(results) == args.submissions
    graded = [r for r in results if r.graded]
    # seconds one submission takes inside its sandbox (kernel start to last test), the figure
    # that matters for a class graded `workers` at a time
    per_sub = sorted(r.seconds for r in graded)
    median_s = per_sub[len(per_sub) // 2] if per_sub else float("nan")
    print(
        f"{args.submissions} submissions of {args.lab}: serial nbgrader autograde {serial_s:.1f} s, "
        f"course_lib grade --workers {args.workers} {parallel_s:.1f} s "
        f"({parallel_s / args.submissions:.2f} s per submission)"
    )
    print(
        f"RESULT lab={args.lab} submissions={args.submissions} serial_s={serial_s:.1f} "
        f"parallel_s={parallel_s:.1f} speedup={serial_s / parallel_s:.2f} "
        f"s_per_submission_median={median_s:.1f} s_per_submission_max={max(per_sub, default=float('nan')):.1f} "
        f"not_graded={len(results) - len(graded)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
