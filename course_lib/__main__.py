"""Command line of Open LLM Lab: ``python -m course_lib COMMAND``.

    doctor                 check this machine (versions, data files, memory, offline readiness)
    release LAB|--all      regenerate labs/LAB from solutions/LAB with nbgrader
    labs                   list the labs
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
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from .doctor import main as doctor_main

        return 1 if doctor_main() else 0
    if args.command == "labs":
        from .grading import list_labs

        print("\n".join(list_labs()))
        return 0
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
