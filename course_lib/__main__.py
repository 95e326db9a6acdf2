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
    from .grading.limits import SandboxLimits

    defaults = SandboxLimits.field_defaults()
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
    gr.add_argument("--memory-gb", type=float, default=defaults["memory_gb"],
                    help="memory limit per submission (default: %(default)s)")
    gr.add_argument("--cell-timeout", type=float, default=defaults["call_timeout_s"],
                    help="seconds per cell or call (default: %(default)s)")
    gr.add_argument("--cpu-seconds", type=int, default=defaults["cpu_seconds"],
                    help="CPU seconds per submission (default: %(default)s)")
    gr.add_argument("--submission-timeout", type=float, default=defaults["submission_timeout_s"],
                    help="wall seconds per submission, all cells together (default: %(default)s)")
    gr.add_argument("--max-processes", type=int, default=defaults["max_processes"],
                    help="processes and threads per submission (default: %(default)s)")
    gr.add_argument("--tmp-mb", type=int, default=defaults["tmp_mb"],
                    help="MB of private writable space per submission (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from .doctor import main as doctor_main

        return 1 if doctor_main() else 0
    if args.command == "labs":
        from .grading import list_labs

        print("\n".join(list_labs()))
        return 0
    if args.command == "grade":
        from .grading import REPO_ROOT, grade_lab

        try:
            results = grade_lab(args.lab, args.submissions, workers=args.workers,
                                student=args.student, course_root=args.course or REPO_ROOT,
                                csv_path=args.csv,
                                limits={"memory_gb": args.memory_gb,
                                        "call_timeout_s": args.cell_timeout,
                                        "cpu_seconds": args.cpu_seconds,
                                        "submission_timeout_s": args.submission_timeout,
                                        "max_processes": args.max_processes,
                                        "tmp_mb": args.tmp_mb})
        except (ValueError, FileNotFoundError) as e:
            parser.error(str(e))
        # exit 1 when something could not be graded: a script or service must notice
        return 0 if results and all(r.graded for r in results) else 1
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
