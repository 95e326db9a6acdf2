"""The boundary between the trusted grader and student code, without a real kernel.

The kernel side (the wire format's and the kernel runtime's source text, exactly what a sandbox
kernel runs) is installed in a private namespace here, behind a fake kernel whose ``execute``
runs code in that namespace. So every tag of the wire format makes the full round trip in both
directions (trusted encode -> kernel decode -> student code -> kernel encode -> trusted decode),
and a malicious kernel (one that writes its own answers, plants links or FIFOs where the
grader reads and writes) can be simulated precisely.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib.grading import wire
from course_lib.grading.remote import Remote, RemoteSession, StudentCodeError, Unsendable

STUDENT_CODE = """
import torch
def echo(x):
    return x
def double(x):
    return 2 * x
def apply(f, x):
    return f(x)
class Box:
    def __init__(self, v):
        self.v = v
def make_box(v):
    return Box(v)
def unbox(b):
    return b.v
def mutate(t, xs, d, arr):
    t.add_(1)
    xs.append(5)
    d["new"] = 1
    arr[0] = 42
def pure(t, xs):
    return t.sum() + len(xs)
"""


class FakeKernel:
    """Runs code in one namespace, like a kernel's user namespace; ``before`` runs first on
    every call (a way to play a malicious student between requests)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.ns: dict = {"__name__": "__main__"}
        self.before = None

    def execute(self, code, timeout=None):
        if self.before is not None and "__olm_run(" in code:
            self.before(self)
        try:
            exec(compile(code, "<cell>", "exec"), self.ns)  # noqa: S102 - the test's own code
        except Exception as e:  # noqa: BLE001 - reported like a kernel reports it
            return {"status": "error", "outputs": [], "ename": type(e).__name__, "evalue": str(e)}
        return {"status": "ok", "outputs": [], "ename": None, "evalue": None}


@pytest.fixture
def kernel(tmp_path):
    k = FakeKernel(tmp_path)
    assert k.execute(STUDENT_CODE)["status"] == "ok"
    session = RemoteSession(k, 30)
    session.install()
    yield k, session
    session.close()


def remote(session, name):
    return Remote(session, name=name)


VALUES = {
    "none": None,
    "bool": True,
    "int": 7,
    "float": 2.5,
    "complex": 1 + 2j,
    "str": "héllo",
    "bytes": b"\x00\x01",
    "list": [1, [2, 3]],
    "tuple": (1, ("a", 2.0)),
    "dict": {"a": 1, 2: "b", (1, 2): [3]},
    "set": {1, 2, 3},
    "frozenset": frozenset({"x"}),
    "slice": slice(1, None, 2),
    "ellipsis": Ellipsis,
    "size": torch.Size([2, 3]),
    "dtype": torch.float16,
    "device": torch.device("cpu"),
    "tensor": torch.arange(6).reshape(2, 3),
    "ndarray": np.arange(4.0).reshape(2, 2),
    "np_scalar": np.float64(1.5),
    "series": pd.Series([1.0, 2.0], index=["a", "b"], name="s"),
    "frame": pd.DataFrame({"w": ["x", "y"], "v": [0.5, 1.5]}, index=[10, 20]),
}


def _tags_in(x, found):
    if isinstance(x, dict):
        for k, v in x.items():
            found.add(k)
            _tags_in(v, found)
    elif isinstance(x, list):
        for v in x:
            _tags_in(v, found)
    return found


def test_every_tag_is_exercised_by_the_round_trip_values():
    found = set()
    for v in VALUES.values():
        _tags_in(wire.encode(v), found)
    handles = {wire.TAG_HANDLE, wire.TAG_HANDLE_NAME}  # exercised in the tests below
    assert set(wire.TAGS) - handles <= found, set(wire.TAGS) - handles - found


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
        return True
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
        return True
    return type(a) is type(b) and a == b or (isinstance(a, np.generic) and a == b)


@pytest.mark.parametrize("name", sorted(VALUES))
def test_round_trip_both_directions(kernel, name):
    _, session = kernel
    value = VALUES[name]
    back = remote(session, "echo")(value)
    assert _same(value, back), (name, value, back)


def test_handles_cross_both_ways(kernel):
    """A student function passed to another student function arrives as that function (the
    handle-name tag), and an object student code made comes back as a handle that can be passed
    back in (the handle tag)."""
    _, session = kernel
    assert remote(session, "apply")(remote(session, "double"), 21) == 42
    box = remote(session, "make_box")([1, 2])
    assert isinstance(box, Remote)
    assert remote(session, "unbox")(box) == [1, 2]
    assert remote(session, "unbox")(remote(session, "echo")(box)) == [1, 2]


def test_in_place_changes_reach_the_caller(kernel):
    """As in the student's own kernel: a function that changes its arguments in place changes
    the test's objects (so a test can check that the input was left alone)."""
    _, session = kernel
    t, xs, d, arr = torch.zeros(3), [1], {"a": 0}, np.zeros(2)
    assert remote(session, "mutate")(t, xs, d, arr) is None
    assert torch.equal(t, torch.ones(3)) and xs == [1, 5] and d == {"a": 0, "new": 1}
    assert arr.tolist() == [42.0, 0.0]
    t2, xs2 = torch.ones(2), [1, 2]
    assert float(remote(session, "pure")(t2, xs2)) == 4.0
    assert torch.equal(t2, torch.ones(2)) and xs2 == [1, 2]


def test_tests_cannot_send_objects(kernel):
    _, session = kernel
    with pytest.raises(Unsendable, match="plain data"):
        remote(session, "echo")(torch.nn.Linear(2, 2))


def _answer(kernel_obj, name, payload):
    """Make the fake kernel write ``payload`` as the answer to the next request ``name``."""

    def before(k):
        k.before = None
        k.ns["__olm_real_run"] = k.ns.get("__olm_real_run", k.ns["__olm_run"])

        def fake_run(req_path, resp_path):
            torch.save(payload, resp_path)

        k.ns["__olm_run"] = fake_run

    kernel_obj.before = before


def test_zero_stride_tensor_is_refused_without_allocating(kernel):
    """A tensor with zero strides is a few bytes on disk and 8 GB once used: refused on decode."""
    k, session = kernel
    huge = torch.zeros(1).expand(2**31)
    _answer(k, "echo", {"ok": True, "value": huge})
    t0 = time.time()
    with pytest.raises(StudentCodeError, match="MB"):
        remote(session, "echo")(1)
    assert time.time() - t0 < 5


def test_too_many_values_are_refused(kernel):
    k, session = kernel
    _answer(k, "echo", {"ok": True, "value": [0] * 2_500_000})
    with pytest.raises(StudentCodeError, match="values"):
        remote(session, "echo")(1)


@pytest.mark.parametrize(
    "bad",
    [
        {"ok": True, "value": {"__olm_nope__": 1}},
        {"ok": True, "value": {"a": 1, "b": 2}},
        {"ok": "yes"},
        [1, 2],
        {"ok": True, "value": {wire.TAG_HANDLE_NAME: "echo"}},
    ],
)
def test_malformed_answers_are_the_students_failure(kernel, bad):
    k, session = kernel
    _answer(k, "echo", bad)
    with pytest.raises(StudentCodeError):
        remote(session, "echo")(1)


def test_planted_link_where_the_grader_writes_is_refused(kernel, tmp_path_factory):
    """A link planted at the next request's path must not make the grader write through it."""
    k, session = kernel
    victim = tmp_path_factory.mktemp("outside") / "gradebook.db"
    victim.write_bytes(b"precious")
    for n in range(1, 50):
        os.symlink(victim, k.workdir / f"req-{n}.pt")
    with pytest.raises(StudentCodeError, match="tampered"):
        remote(session, "echo")(1)
    assert victim.read_bytes() == b"precious"


def test_link_or_fifo_as_the_answer_is_refused_without_hanging(kernel, tmp_path_factory):
    k, session = kernel
    secret = tmp_path_factory.mktemp("outside") / "secret.pt"
    torch.save({"ok": True, "value": "the grader's secret"}, secret)

    def link_answer(kk):
        kk.before = fifo_answer
        kk.ns["__olm_run"] = lambda req, resp: os.symlink(secret, resp)

    def fifo_answer(kk):
        kk.before = None
        kk.ns["__olm_run"] = lambda req, resp: os.mkfifo(resp)

    k.before = link_answer
    with pytest.raises(StudentCodeError, match="symbolic link"):
        remote(session, "echo")(1)
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("hung on a FIFO")))
    signal.alarm(10)
    try:
        with pytest.raises(StudentCodeError, match="not a regular file"):
            remote(session, "echo")(1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_replacing_the_work_folder_changes_nothing(kernel, tmp_path_factory):
    """The work folder is opened once: renaming it and putting a link in its place does not
    redirect the grader's reads and writes."""
    k, session = kernel
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    moved = k.workdir.with_name(k.workdir.name + "-moved")

    def swap(kk):
        kk.before = None
        os.rename(kk.workdir, moved)
        os.symlink(elsewhere, kk.workdir)
        real = kk.ns["__olm_run"]
        kk.ns["__olm_run"] = lambda req, resp: real(
            req.replace(str(kk.workdir), str(moved)), resp.replace(str(kk.workdir), str(moved))
        )

    k.before = swap
    assert remote(session, "double")(4) == 8
    assert list(elsewhere.iterdir()) == []


def test_call_student_catches_in_place_changes_and_wraps_errors(kernel):
    """grading.checks.call_student behaves the same on a Remote as on a local function."""
    from course_lib.grading.checks import call_student, record_student_cell, reset_student_cells

    k, session = kernel
    reset_student_cells()
    record_student_cell(STUDENT_CODE)
    assert float(call_student(remote(session, "pure"), torch.ones(2), [1])) == 3.0
    with pytest.raises(AssertionError, match=r"mutate changed its argument 1 \(t\) in place.*Hint: copy"):
        call_student(remote(session, "mutate"), torch.zeros(3), [1], {}, np.zeros(2), hint="copy")
    with pytest.raises(AssertionError, match=r"unbox raised AttributeError.*Hint: pass a Box"):
        call_student(remote(session, "unbox"), 3, hint="pass a Box")
    reset_student_cells()
