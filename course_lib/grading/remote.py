"""Call student code in a sandboxed kernel from a trusted process, exchanging plain data only.

The grader never runs test code next to student code. The tests run in a trusted process;
the names a solution cell defines (``softmax``, ``cross_entropy``...) are bound there to
:class:`Remote` proxies. Calling one sends the arguments to the sandbox as plain data
(:mod:`.wire`), the student's function runs there (:mod:`.kernel_runtime`), and the result
comes back as plain data, read with ``torch.load(weights_only=True)`` (which cannot run code)
and decoded under a size budget. Anything else comes back as a handle, another
:class:`Remote`. So:

* an object whose ``__eq__`` always says True never reaches the test: only its data does;
* patching ``numpy.testing``, ``torch.allclose`` or the course's helpers, or installing an
  IPython AST transformer, changes the sandbox process only, not the process that asserts;
* hidden tests never enter the sandbox, so student code cannot read or print them;
* a function that changes its arguments in place changes the caller's objects too, as it
  would in the student's own kernel (the kernel reports the change; it is applied here).

Gradients flow through a remote call (``loss.backward()`` in a test works): the forward pass
runs in the sandbox and keeps its graph; ``backward`` asks the sandbox for the input
gradients. Requests and answers travel as files in the kernel's work folder, which student
code can write: they are created and read through :mod:`.files` (no links, no FIFOs, capped).
"""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path

import torch

from . import wire
from .files import UnsafeFile, open_dir, read_regular, write_new
from .limits import MAX_ANSWER_BYTES, MAX_ANSWER_ITEMS

__all__ = [
    "Remote",
    "StudentCodeError",
    "Unsendable",
    "RemoteSession",
    "kernel_runtime_source",
    "student_error",
]


class StudentCodeError(Exception):
    """Student code raised, timed out, or its kernel died during a remote call."""


_ERROR_TYPES: dict[str, type] = {}


def student_error(ename, evalue) -> StudentCodeError:
    """The exception to raise for an error student code raised in the sandbox.

    For a built-in exception type (``ValueError``, ``KeyError``...) it is an instance of a
    subclass of both :class:`StudentCodeError` and that type, so a test written as
    ``try: f(bad_input) except ValueError: pass`` works as it would in the student's kernel.
    Only the type's *name* crosses the boundary: no student object is ever raised here.

    >>> e = student_error("ValueError", "x must be >= 0")
    >>> isinstance(e, ValueError), isinstance(e, StudentCodeError), str(e)
    (True, True, 'x must be >= 0')
    """
    import builtins

    name, msg = str(ename or "Error")[:100], str(evalue or "")[:2000]
    base = getattr(builtins, name, None)
    if (
        isinstance(base, type)
        and issubclass(base, Exception)
        and base is not StopIteration
        and not issubclass(base, (Warning, StopAsyncIteration))
    ):
        cls = _ERROR_TYPES.get(name)
        if cls is None:
            cls = _ERROR_TYPES[name] = type(name, (StudentCodeError, base), {"__module__": "student_code"})
        try:
            return cls(msg)
        except TypeError:  # a type whose constructor wants more (UnicodeDecodeError...)
            pass
    return StudentCodeError(f"{name}: {msg}")


class Unsendable(TypeError):
    """A test tried to hand student code something that is not plain data (a function, a
    model...). Tests must pass plain data; such a test fails with this message."""


def kernel_runtime_source() -> str:
    """The code installed once in each sandbox kernel: the wire format's and the kernel
    runtime's source text, run in private namespaces; defines ``__olm_run`` there."""
    here = Path(__file__).resolve().parent
    wire_src = (here / "wire.py").read_text(encoding="utf-8")
    runtime_src = (here / "kernel_runtime.py").read_text(encoding="utf-8")
    return (
        "def __olm_boot(wire_src, runtime_src):\n"
        "    wire_ns = {'__name__': 'olm_wire'}\n"
        "    exec(compile(wire_src, '<olm wire>', 'exec'), wire_ns)\n"
        "    runtime_ns = {'__name__': 'olm_kernel_runtime'}\n"
        "    exec(compile(runtime_src, '<olm kernel runtime>', 'exec'), runtime_ns)\n"
        "    return runtime_ns['make_runner'](wire_ns, globals())\n"
        f"__olm_run = __olm_boot({wire_src!r}, {runtime_src!r})\n"
        "del __olm_boot\n"
    )


def _encode(x):
    """Trusted-side encoding of call arguments: plain data, and handles this side holds."""

    def on_object(obj):
        if isinstance(obj, Remote):
            if obj._handle is None:
                return {wire.TAG_HANDLE_NAME: obj._name}
            return {wire.TAG_HANDLE: [obj._handle, obj._type_name]}
        raise Unsendable(
            f"cannot send a {type(obj).__name__} to student code in the sandbox; "
            "tests must pass plain data (tensors, arrays, numbers, strings, containers)"
        )

    return wire.encode(x, on_object=on_object)


class RemoteSession:
    """The trusted side's channel to one sandbox kernel (a :class:`~.sandbox.SandboxKernel`)."""

    def __init__(self, kernel, call_timeout_s: float | None = None):
        self.kernel = kernel
        self.call_timeout_s = call_timeout_s
        self._ids = itertools.count(1)
        self.dead_reason: str | None = None
        self._dir_fd: int | None = None

    def attach(self, kernel) -> None:
        """Talk to ``kernel`` from now on (a restarted kernel after a crash): the proxies bound
        to this session keep working; handles to objects of the old kernel do not."""
        self.close()
        self.kernel = kernel
        self.dead_reason = None

    def install(self) -> None:
        # The work folder is opened once, before any student code runs: later requests use
        # this descriptor, so replacing the folder (or a path inside it) by a link changes nothing.
        self.close()
        self._dir_fd = open_dir(self.kernel.workdir)
        r = self.kernel.execute(kernel_runtime_source(), timeout=60)
        if r["status"] != "ok":
            raise RuntimeError(f"could not install the sandbox runtime: {r.get('ename')}: {r.get('evalue')}")

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def request(self, req: dict, with_mutations: bool = False):
        """Send one request; the decoded value (and, with ``with_mutations``, the list of
        in-place changes to the arguments that the kernel reported, raw)."""
        from .sandbox import KernelDied

        if self.dead_reason:
            raise StudentCodeError(f"student code cannot run: {self.dead_reason}")
        if self._dir_fd is None:
            raise RuntimeError("RemoteSession.install() was not called")
        n = next(self._ids)
        work = Path(self.kernel.workdir)
        req_name, resp_name = f"req-{n}.pt", f"resp-{n}.pt"
        buf = io.BytesIO()
        torch.save(req, buf)
        try:
            write_new(self._dir_fd, req_name, buf.getvalue())
        except UnsafeFile as e:
            raise StudentCodeError(f"the sandbox's work folder was tampered with: {e}") from None
        try:
            r = self.kernel.execute(
                f"__olm_run({str(work / req_name)!r}, {str(work / resp_name)!r})", timeout=self.call_timeout_s
            )
        except KernelDied as e:
            self.dead_reason = f"the kernel died ({e})"
            raise StudentCodeError(self.dead_reason) from None
        finally:
            self._unlink(req_name)
        try:
            if r["status"] != "ok":
                raise student_error(r.get("ename"), r.get("evalue"))
            resp = self._read_answer(resp_name)
        finally:
            self._unlink(resp_name)
        if not resp["ok"]:
            raise student_error(resp.get("ename"), resp.get("evalue"))
        value = self.decode(resp.get("value"))
        return (value, resp.get("mutated", [])) if with_mutations else value

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self._dir_fd)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            pass
        except OSError:
            pass

    def _read_answer(self, name: str) -> dict:
        try:
            data = read_regular(self._dir_fd, name, MAX_ANSWER_BYTES)
        except FileNotFoundError:
            raise StudentCodeError(
                "student code sent no answer (the sandbox runtime was replaced or removed)"
            ) from None
        except UnsafeFile as e:
            raise StudentCodeError(f"student code's answer was refused: {e}") from None
        try:
            resp = torch.load(io.BytesIO(data), weights_only=True)
        except Exception as e:  # noqa: BLE001 - any malformed answer is the student's failure
            raise StudentCodeError(
                f"unreadable answer from student code: {type(e).__name__}: {str(e)[:300]}"
            ) from None
        if type(resp) is not dict or type(resp.get("ok")) is not bool:
            raise StudentCodeError("malformed answer from student code")
        return resp

    def decode(self, x):
        """A wire value from the sandbox as a value here (handles become :class:`Remote`)."""

        def on_handle(tag, payload):
            if tag != wire.TAG_HANDLE:
                raise wire.WireError("the sandbox sent a name where a value was expected")
            return Remote(self, handle=payload[0], type_name=payload[1])

        try:
            return wire.decode(x, on_handle=on_handle, budget=wire.Budget(MAX_ANSWER_ITEMS, MAX_ANSWER_BYTES))
        except wire.WireError as e:
            raise StudentCodeError(f"student code returned a value the grader refuses: {e}") from None
        except RecursionError:
            raise StudentCodeError("student code returned a value nested too deeply") from None


def _apply_mutations(args: list, kwargs: dict, mutated, session: RemoteSession) -> None:
    """Apply the in-place changes the student's function made to its arguments (as reported
    by the kernel) to the caller's objects, as if the function had run here."""
    import numpy as np

    if type(mutated) is not list:
        raise StudentCodeError("malformed answer from student code (mutated arguments)")
    for entry in mutated:
        if type(entry) is not list or len(entry) != 2:
            raise StudentCodeError("malformed answer from student code (mutated arguments)")
        slot, raw = entry
        if type(slot) is int and 0 <= slot < len(args):
            original = args[slot]
        elif type(slot) is str and slot in kwargs:
            original = kwargs[slot]
        else:
            raise StudentCodeError("malformed answer from student code (mutated arguments)")
        new = session.decode(raw)
        try:
            if isinstance(original, torch.Tensor) and isinstance(new, torch.Tensor):
                with torch.no_grad():
                    if original.shape == new.shape and original.dtype == new.dtype:
                        original.copy_(new)
                    else:
                        original.set_(new.clone())
            elif isinstance(original, np.ndarray) and isinstance(new, np.ndarray):
                if original.shape == new.shape:
                    original[...] = new
                else:
                    original.resize(new.shape, refcheck=False)
                    original[...] = new
            elif isinstance(original, list) and isinstance(new, list):
                original[:] = new
            elif isinstance(original, dict) and isinstance(new, dict):
                original.clear()
                original.update(new)
        except (RuntimeError, ValueError, TypeError) as e:
            raise StudentCodeError(
                f"student code changed an argument in a way that cannot be reproduced: {e}"
            ) from None


class _RemoteGrad(torch.autograd.Function):
    """Forward in the sandbox, backward in the sandbox, gradients as plain tensors."""

    @staticmethod
    def forward(ctx, remote, spec, *tensors):
        args, kwargs, grad_pos = spec
        args = list(args)
        for slot, t in zip(grad_pos, tensors):
            args[slot] = t.detach()
        ans = remote._session.request(
            {
                "op": "call_grad",
                **remote._target(),
                "grad_pos": list(grad_pos),
                "args": [_encode(a) for a in args],
                "kwargs": [[k, _encode(v)] for k, v in kwargs.items()],
            }
        )
        if (
            type(ans) is not dict
            or not {"call_id", "tuple", "outs"} <= set(ans)
            or type(ans["outs"]) is not list
        ):
            raise StudentCodeError("malformed answer from student code (a differentiable call)")
        outs = [o if isinstance(o, torch.Tensor) else torch.as_tensor(o) for o in ans["outs"]]
        ctx.remote, ctx.call_id, ctx.n_in = remote, ans["call_id"], len(tensors)
        ctx.is_tuple = ans["tuple"]
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grad_outs):
        grads = ctx.remote._session.request(
            {
                "op": "backward",
                "call_id": ctx.call_id,
                "grads": [_encode(None if g is None else g.detach()) for g in grad_outs],
            }
        )
        if not isinstance(grads, list) or len(grads) != ctx.n_in:
            raise StudentCodeError("malformed gradients from student code")
        return (None, None, *[g if g is None else torch.as_tensor(g) for g in grads])


class Remote:
    """A name (or object) that lives in the sandbox; every use is a round trip of plain data."""

    def __init__(
        self,
        session: RemoteSession,
        name: str | None = None,
        handle: int | None = None,
        type_name: str = "object",
    ):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_type_name", type_name)

    def _target(self) -> dict:
        return {"name": self._name} if self._handle is None else {"handle": self._handle}

    def __call__(self, *args, **kwargs):
        grad_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
        if grad_pos and torch.is_grad_enabled():
            outs = _RemoteGrad.apply(self, (list(args), kwargs, grad_pos), *[args[i] for i in grad_pos])
            return outs[0] if len(outs) == 1 else outs
        value, mutated = self._session.request(
            {
                "op": "call",
                **self._target(),
                "args": [_encode(a) for a in args],
                "kwargs": [[k, _encode(v)] for k, v in kwargs.items()],
            },
            with_mutations=True,
        )
        if mutated:
            _apply_mutations(list(args), kwargs, mutated, self._session)
        return value

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return self._session.request({"op": "getattr", **self._target(), "attr": attr})

    def __getitem__(self, key):
        return self._session.request({"op": "getitem", **self._target(), "key": _encode(key)})

    def __len__(self):
        n = self._session.request({"op": "len", **self._target()})
        if type(n) is not int or n < 0:
            raise StudentCodeError("student code's __len__ did not return a non-negative int")
        return n

    def __iter__(self):
        items = self._session.request({"op": "list", **self._target()})
        if type(items) is not list:
            raise StudentCodeError("malformed answer from student code (iteration)")
        return iter(items)

    def __repr__(self):
        try:
            text = self._session.request({"op": "repr", **self._target()})
            return f"<sandboxed {str(text)[:2000]}>"
        except StudentCodeError as e:
            return f"<sandboxed {self._name or self._type_name}: {e}>"

    def __setattr__(self, attr, value):
        raise TypeError("tests cannot modify objects that live in the student's sandbox")
