"""Command line of Open LLM Lab: ``python -m course_lib COMMAND``.

    doctor                 check this machine (versions, data files, memory, offline readiness)
    release LAB|--all      regenerate labs/LAB from solutions/LAB with nbgrader
    labs                   list the labs
    grade LAB [--submissions DIR] [--workers N] [--student ID]
                           autograde submissions in sandboxes, verdicts outside student code
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check that this machine is ready for the course")
    rel = sub.add_parser("release", help="regenerate labs/ from solutions/ with nbgrader")
    rel.add_argument("lab", nargs="?", help="lab name, e.g. lab00_pytorch_warmup")
    rel.add_argument("--all", action="store_true", help="release every lab")
    sub.add_parser("labs", help="list the labs")
    gr = sub.add_parser("grade", help="autograde a lab's submissions safely and in parallel")
    gr.add_argument("lab")
    gr.add_argument("--submissions", help="folder of submissions (default: <course>/submitted), "
                    "laid out as <student>/<lab>/<lab>.ipynb")
    gr.add_argument("--workers", type=int, default=2, help="submissions graded in parallel")
    gr.add_argument("--student", help="grade only this student")
    gr.add_argument("--course", help="nbgrader course folder (default: this repository)")
    gr.add_argument("--csv", help="where to export grades (default: <course>/grades/<lab>.csv)")
    gr.add_argument("--memory-gb", type=float, default=4.0, help="memory limit per submission")
    gr.add_argument("--cell-timeout", type=float, default=120.0, help="seconds per cell or call")
    gr.add_argument("--cpu-seconds", type=int, default=900, help="CPU seconds per submission")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from .doctor import main as doctor_main

        return 1 if doctor_main() else 0
    if args.command == "labs":
        from .grading import list_labs

        print("\n".join(list_labs()))
        return 0
    if args.command == "grade":
        from .grading import REPO_ROOT
        from .secure_grading import grade_lab

        results = grade_lab(args.lab, args.submissions, workers=args.workers, student=args.student,
                            course_root=args.course or REPO_ROOT, csv_path=args.csv,
                            limits={"memory_gb": args.memory_gb, "call_timeout_s": args.cell_timeout,
                                    "cpu_seconds": args.cpu_seconds})
        return 0 if results else 1
    if args.command == "release":
        from .grading import list_labs, release

        if args.all == bool(args.lab):
            parser.error("give one LAB or --all")
        for lab in (list_labs() if args.all else [args.lab]):
            print(f"released {release(lab)}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
