"""Command line of Open LLM Lab: ``python -m course_lib COMMAND``.

doctor                 check this machine (versions, data files, memory, offline readiness)
release LAB|--all      regenerate labs/LAB from solutions/LAB with nbgrader
labs                   list the labs
grade LAB [--submissions DIR] [--workers N] [--student ID]
                       autograde submissions in sandboxes, verdicts outside student code
serve [--model smollm2|course-gpt|PATH] [--port N] [--batching continuous|static]
                       an OpenAI-compatible HTTP server (continuous batching) for a course model
"""

from __future__ import annotations

import argparse
import sys

# (command-line option, SandboxLimits field, type, help): the defaults come from SandboxLimits
_LIMIT_OPTIONS = [
    ("--memory-gb", "memory_gb", float, "memory limit per submission"),
    ("--cell-timeout", "call_timeout_s", float, "seconds per cell or call"),
    ("--cpu-seconds", "cpu_seconds", int, "CPU seconds per submission"),
    (
        "--submission-timeout",
        "submission_timeout_s",
        float,
        "wall seconds per submission, all cells together",
    ),
    ("--max-processes", "max_processes", int, "processes and threads per submission"),
    ("--tmp-mb", "tmp_mb", int, "MB of private writable space per submission"),
]


def main(argv: list[str] | None = None) -> int:
    from .grading.limits import SandboxLimits

    defaults = SandboxLimits.field_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m course_lib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check that this machine is ready for the course")
    rel = sub.add_parser("release", help="regenerate labs/ from solutions/ with nbgrader")
    rel.add_argument("lab", nargs="?", help="lab name, e.g. lab00_pytorch_warmup")
    rel.add_argument("--all", action="store_true", help="release every lab")
    sub.add_parser("labs", help="list the labs")
    gr = sub.add_parser("grade", help="autograde a lab's submissions safely and in parallel")
    gr.add_argument("lab")
    gr.add_argument(
        "--submissions",
        help="folder of submissions (default: <course>/submitted), laid out as <student>/<lab>/<lab>.ipynb",
    )
    gr.add_argument("--workers", type=int, default=2, help="submissions graded in parallel")
    gr.add_argument("--student", help="grade only this student")
    gr.add_argument("--course", help="nbgrader course folder (default: this repository)")
    gr.add_argument("--csv", help="where to export grades (default: <course>/grades/<lab>.csv)")
    for option, field, kind, what in _LIMIT_OPTIONS:  # one option per SandboxLimits field
        gr.add_argument(
            option, dest=field, type=kind, default=defaults[field], help=f"{what} (default: %(default)s)"
        )
    sv = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    sv.add_argument("--model", default="smollm2", help="smollm2, course-gpt or a save_pretrained folder")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-batch-size", type=int, default=8, help="sequences decoded together at most")
    sv.add_argument("--batching", choices=["continuous", "static"], default="continuous")
    sv.add_argument("--quantize", choices=["int8", "int4"], help="lesson 06's weight quantization")
    sv.add_argument("--max-context", type=int, help="tokens per sequence at most (default: the model's)")
    sv.add_argument("--max-waiting", type=int, default=256, help="queued requests at most; more get 429")
    sv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $OPEN_LLM_LAB_API_KEY)")
    args = parser.parse_args(argv)

    if args.command == "serve":
        from .serve import serve

        try:
            serve(
                args.model,
                host=args.host,
                port=args.port,
                max_batch_size=args.max_batch_size,
                batching=args.batching,
                quantize=args.quantize,
                api_key=args.api_key,
                max_context=args.max_context,
                max_waiting=args.max_waiting,
            )
        except ValueError as e:
            parser.error(str(e))
        return 0

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
            results = grade_lab(
                args.lab,
                args.submissions,
                workers=args.workers,
                student=args.student,
                course_root=args.course or REPO_ROOT,
                csv_path=args.csv,
                limits={field: getattr(args, field) for _, field, _, _ in _LIMIT_OPTIONS},
            )
        except (ValueError, FileNotFoundError) as e:
            parser.error(str(e))
        # exit 1 when something could not be graded: a script or service must notice
        return 0 if results and all(r.graded for r in results) else 1
    if args.command == "release":
        from .grading import list_labs, release

        if args.all == bool(args.lab):
            parser.error("give one LAB or --all")
        for lab in list_labs() if args.all else [args.lab]:
            print(f"released {release(lab)}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
