"""Generate every file that lists versions from pyproject.toml, the one source of truth.

    python tools/sync_env.py            rewrite environment.yml and binder/ files
    python tools/sync_env.py --check    exit 1 if any generated file is out of date
    python tools/sync_env.py --print-no-deps   print the --no-deps pins (used by scripts/setup.sh)

Generated: environment.yml (conda users), binder/environment.yml (Binder, CPU-only torch),
binder/requirements-nodeps.txt (packages installed with pip --no-deps by binder/postBuild).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "# GENERATED from pyproject.toml by tools/sync_env.py: do not edit, edit pyproject.toml.\n"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pins(pyproject: Path = ROOT / "pyproject.toml") -> tuple[list[str], list[str], list[str], str]:
    """(dependencies, test extras, no-deps pins, python version) from pyproject.toml."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data["project"]
    python = project["requires-python"].split(",")[0].lstrip("=<>~!").strip()
    return (
        list(project["dependencies"]),
        list(project["optional-dependencies"]["test"]),
        list(data["tool"]["open-llm-lab"]["no-deps"]),
        python,
    )


def environment_yml(binder: bool) -> str:
    deps, test, _, python = pins()
    lines = [HEADER]
    if binder:
        lines.append("# Binder: CPU-only PyTorch from PyTorch's CPU index (no multi-GB CUDA build).\n")
    else:
        lines.append(
            "# After `conda env create -f environment.yml`, also run:\n"
            "#   pip install --no-deps -r binder/requirements-nodeps.txt && pip install --no-deps -e .\n"
        )
    lines += [
        "name: open-llm-lab\n",
        "channels:\n",
        "  - conda-forge\n",
        "dependencies:\n",
        f"  - python={python}\n",
        "  - pip\n",
        "  - pip:\n",
    ]
    if binder:
        lines.append(f"      - --extra-index-url {TORCH_CPU_INDEX}\n")
    for spec in deps + ([] if binder else test):
        lines.append(f"      - {spec}\n")
    return "".join(lines)


def nodeps_txt() -> str:
    _, _, nodeps, _ = pins()
    return (
        HEADER
        + "# Install with: pip install --no-deps -r binder/requirements-nodeps.txt\n"
        + "".join(f"{spec}\n" for spec in nodeps)
    )


def generated() -> dict[Path, str]:
    return {
        ROOT / "environment.yml": environment_yml(binder=False),
        ROOT / "binder" / "environment.yml": environment_yml(binder=True),
        ROOT / "binder" / "requirements-nodeps.txt": nodeps_txt(),
    }


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--print-no-deps":
        print(" ".join(pins()[2]))
        return 0
    stale = []
    for path, text in generated().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(path)
            if not argv or argv[0] != "--check":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if argv and argv[0] == "--check":
        for p in stale:
            print(f"out of date: {p.relative_to(ROOT)} (run python tools/sync_env.py)")
        return 1 if stale else 0
    for p in stale:
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
