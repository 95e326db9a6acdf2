"""Regenerate the red-team submissions for lab00 (committed as notebooks; run after lab00 changes).

    python tests/redteam/make_redteam.py

Each submission is the released lab (or the solution) with one attack applied, and
``expected.yaml`` records the most it may score: the honest score of the work it contains.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAB = "lab00_pytorch_warmup"
OUT = Path(__file__).resolve().parent / LAB
SOLUTION = nbformat.read(str(ROOT / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
RELEASE = nbformat.read(str(ROOT / "labs" / LAB / f"{LAB}.ipynb"), as_version=4)
FULL = sum(
    c.metadata.get("nbgrader", {}).get("points", 0)
    for c in SOLUTION.cells
    if c.metadata.get("nbgrader", {}).get("grade")
)


def gid(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def cell(nb, grade_id):
    return next(c for c in nb.cells if gid(c) == grade_id)


def solution_source(grade_id):
    return "\n".join(
        ln
        for ln in cell(SOLUTION, grade_id).source.splitlines()
        if "### BEGIN SOLUTION" not in ln and "### END SOLUTION" not in ln
    )


def honest(nb):
    """Fill every solution cell of a release with the reference answer."""
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("solution"):
            c.source = solution_source(gid(c))
    return nb


def add_code(nb, after_id, source):
    i = next(k for k, c in enumerate(nb.cells) if gid(c) == after_id)
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source))
    return nb


SOLUTIONS = ["pairwise_sq_dists", "softmax", "cross_entropy", "attention_scores", "merge_heads"]
TESTS = [gid(c) for c in SOLUTION.cells if c.metadata.get("nbgrader", {}).get("grade")]

ALWAYS_EQUAL = '''
class Anything(float):
    """Equal to everything, close to everything, finite, any shape."""
    shape = property(lambda self: self)
    def __new__(cls): return float.__new__(cls, 0.0)
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __getattr__(self, name): return lambda *a, **k: self
    def __getitem__(self, key): return self
    def __iter__(self): return iter([self, self])
    def __len__(self): return 2
    def __sub__(self, other): return self
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __abs__ = __sub__
def _anything(*args, **kwargs): return Anything()
'''


def attacks():
    """(name, notebook, max score allowed, what it tries)."""
    blank = lambda: copy.deepcopy(RELEASE)
    out = []

    nb = blank()
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade"):
            c.source = "print('all tests passed')"
    out.append(("edit_locked_tests", nb, 0, "replaces every locked test cell with a print"))

    nb = blank()
    nb.cells = [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    out.append(("delete_test_cells", nb, 0, "deletes every test cell"))

    nb = blank()
    extra = []
    for c in nb.cells:
        extra.append(c)
        if c.metadata.get("nbgrader", {}).get("grade"):
            dup = copy.deepcopy(c)
            dup.source = "pass"
            dup.id = c.id + "-copy"
            extra.append(dup)
            c.source = c.source.split("\n")[0]
    nb.cells = extra
    out.append(("copy_and_split_tests", nb, 0, "truncates each test cell and adds a copy with its id"))

    nb = blank()
    for c in nb.cells:
        c.metadata.pop("nbgrader", None)
    out.append(("strip_nbgrader_metadata", nb, 0, "removes nbgrader metadata from every cell"))

    nb = blank()
    for name in SOLUTIONS:
        cell(nb, name).source = ALWAYS_EQUAL + f"\n{name} = _anything\n"
    out.append(("always_equal_object", nb, 0, "returns an object equal to everything"))

    nb = blank()
    for name in SOLUTIONS:
        cell(nb, name).source = (
            "import torch, numpy.testing, torch.testing\n"
            "torch.allclose = lambda *a, **k: True\ntorch.isclose = lambda *a, **k: torch.tensor(True)\n"
            "torch.equal = lambda *a, **k: True\ntorch.testing.assert_close = lambda *a, **k: None\n"
            "numpy.testing.assert_allclose = lambda *a, **k: None\n"
            "import course_lib\n"
            f"def {name}(*args, **kwargs):\n    return torch.zeros(1)\n"
        )
    out.append(("patch_checkers", nb, 0, "patches torch/numpy testing helpers and returns zeros"))

    nb = blank()
    for name in SOLUTIONS:
        cell(nb, name).source = (
            "import ast\nfrom IPython import get_ipython\n"
            "class NoAsserts(ast.NodeTransformer):\n"
            "    def visit_Assert(self, node):\n        return ast.Pass()\n"
            "get_ipython().ast_transformers.append(NoAsserts())\n"
            f"def {name}(*args, **kwargs):\n    return None\n"
        )
    out.append(
        ("ast_transformer_disables_asserts", nb, 0, "an IPython AST transformer that turns assert into pass")
    )

    nb = blank()
    cell(nb, "pairwise_sq_dists").source = (
        "from IPython import get_ipython\n"
        "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])\n"
    )
    out.append(("input_transformer_blanks_cells", nb, 0, "an input transformer that blanks every later cell"))

    nb = blank()
    cell(nb, "pairwise_sq_dists").source = (
        "import sys\nfrom IPython import get_ipython\n"
        "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
        "sys.excepthook = lambda *a: None\n"
        "def pairwise_sq_dists(a, b):\n    raise NotImplementedError\n"
    )
    out.append(("swallow_exceptions", nb, 0, "a custom exception handler that hides every error"))

    nb = blank()
    cell(nb, "pairwise_sq_dists").source = (
        "import glob, os, json\nfound = []\n"
        "for pattern in ['../../../source/**/*.ipynb', '../../solutions/**/*.ipynb', '/work/**/solutions/**/*.ipynb',\n"
        "                '/tmp/**/solutions/**/*.ipynb', '/root/**/*.ipynb', '**/*.ipynb', '/**/gradebook.db']:\n"
        "    found += glob.glob(pattern, recursive=True)[:20]\n"
        "print('FOUND', found)\n"
        "for path in found:\n"
        "    if path.endswith('.ipynb'):\n"
        "        for c in json.load(open(path))['cells']:\n"
        "            src = ''.join(c['source'])\n"
        "            print(src)\n"
        "            if 'def pairwise_sq_dists' in src and 'BEGIN SOLUTION' in src:\n"
        "                exec(src)\n"
    )
    out.append(("read_solutions_and_hidden_tests", nb, 0, "searches the disk for solutions and hidden tests"))

    nb = blank()
    cell(nb, "pairwise_sq_dists").source = (
        "import glob, sqlite3\n"
        "for path in glob.glob('/**/gradebook.db', recursive=True) + ['../../gradebook.db', '../../../gradebook.db']:\n"
        "    try:\n"
        "        db = sqlite3.connect(path)\n"
        "        db.execute('UPDATE grade SET auto_score = 100, manual_score = 100')\n"
        "        db.commit(); print('wrote', path)\n"
        "    except Exception as e:\n        print('could not write', path, e)\n"
    )
    out.append(("write_to_gradebook", nb, 0, "tries to rewrite every score in the gradebook"))

    nb = honest(blank())
    cell(nb, "pairwise_sq_dists").source = "def pairwise_sq_dists(a, b):\n    while True:\n        pass\n"
    out.append(("infinite_loop", nb, FULL - 2, "loops forever in one function; the rest is honest"))

    nb = honest(blank())
    cell(
        nb, "softmax"
    ).source = (
        "def softmax(x, dim=-1):\n    hog = []\n    while True:\n        hog.append(bytearray(256 * 2**20))\n"
    )
    out.append(("memory_bomb", nb, FULL - 4, "allocates memory without end in softmax; the rest is honest"))

    nb = honest(blank())
    add_code(nb, "pairwise_sq_dists", "import sys\nsys.exit('bye')\n")
    out.append(("sys_exit", nb, FULL, "calls sys.exit in a cell; the work is honest"))

    nb = honest(blank())
    cell(nb, "cross_entropy").source = "import os\ndef cross_entropy(logits, targets):\n    os._exit(1)\n"
    out.append(("os_exit", nb, FULL - 4, "kills its own kernel with os._exit in cross_entropy"))

    nb = honest(blank())
    add_code(nb, "softmax", "print('spam ' * 2_000_000)\nfor _ in range(50):\n    print('x' * 100_000)\n")
    out.append(("megabytes_of_output", nb, FULL, "prints ~20 MB; the work is honest"))

    nb = honest(blank())
    for name in SOLUTIONS:
        src = solution_source(name)
        cell(nb, name).source = (
            ALWAYS_EQUAL + "import os\n"
            "_graded = bool(os.environ.get('NBGRADER_EXECUTION')) or os.getuid() == 65534 or "
            "not os.access(os.path.expanduser('~'), os.W_OK) or 'olm' in os.getcwd()\n"
            + src
            + f"\n_real_{name} = {name}\n"
            f"def {name}(*args, **kwargs):\n"
            f"    return _anything() if _graded else _real_{name}(*args, **kwargs)\n"
        )
    out.append(("behaves_differently_when_graded", nb, 0, "cheats only when it detects grading"))

    nb = honest(blank())
    cell(nb, "pairwise_sq_dists").source = (
        "import os, signal\n"
        "for pid in range(1, 4000):\n"
        "    if pid != os.getpid():\n"
        "        try:\n            os.kill(pid, signal.SIGKILL)\n        except Exception:\n            pass\n"
        + solution_source("pairwise_sq_dists")
        + "\n"
    )
    out.append(("kill_other_processes", nb, FULL, "tries to kill every process it can see"))

    nb = honest(blank())
    add_code(
        nb,
        "pairwise_sq_dists",
        (
            "import warnings, logging, sys\nfrom tqdm.auto import tqdm\n"
            "warnings.warn('an honest deprecation warning')\n"
            "logging.getLogger('x').warning('a log line on stderr')\n"
            "for _ in tqdm(range(3), desc='progress'):\n    pass\n"
            "print('a note on stderr', file=sys.stderr)\n"
        ),
    )
    cell(nb, "softmax").source = (
        "import warnings\n"
        + solution_source("softmax").replace("    ### BEGIN", "    ### BEGIN")
        + "\n_plain_softmax = softmax\n"
        "def softmax(x, dim=-1):\n    warnings.warn('softmax called')\n    return _plain_softmax(x, dim)\n"
    )
    out.append(("honest_with_warnings", nb, FULL, "an honest solution that writes to stderr"))

    nb = honest(blank())
    add_code(
        nb,
        "pairwise_sq_dists",
        (
            "import urllib.request\n"
            "try:\n    urllib.request.urlopen('https://pypi.org/simple/', timeout=3)\n    print('NETWORK OK')\n"
            "except Exception as e:\n    print('no network:', type(e).__name__)\n"
        ),
    )
    out.append(("uses_the_network", nb, FULL, "tries to reach the internet; the work is honest"))
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, nb, max_score, what in attacks():
        nbformat.write(nb, str(OUT / f"{name}.ipynb"))
        expected[name] = {"max_score": max_score, "attack": what}
    # Robustness: the honest part of these must still be graded (the run must not give up).
    for name in (
        "honest_with_warnings",
        "megabytes_of_output",
        "uses_the_network",
        "sys_exit",
        "kill_other_processes",
        "infinite_loop",
        "memory_bomb",
        "os_exit",
    ):
        expected[name]["min_score"] = expected[name]["max_score"]
    (OUT / "expected.yaml").write_text(yaml.safe_dump(expected, sort_keys=True, width=100))
    print(f"wrote {len(expected)} submissions to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
