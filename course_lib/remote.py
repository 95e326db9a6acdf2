"""Call student code in a sandboxed kernel from a trusted process, exchanging plain data only.

The grader never runs test code next to student code. The tests run in a trusted process;
the names a solution cell defines (``softmax``, ``cross_entropy``...) are bound there to
:class:`Remote` proxies. Calling one sends the arguments to the sandbox as plain data, the
student's function runs there, and the result comes back as plain data: tensors, numbers,
strings, lists, tuples, dicts (loaded with ``torch.load(weights_only=True)``, which cannot run
code). Anything else comes back as a handle, another :class:`Remote`. So:

* an object whose ``__eq__`` always says True never reaches the test: only its data does;
* patching ``numpy.testing``, ``torch.allclose`` or the course's helpers, or installing an
  IPython AST transformer, changes the sandbox process only, not the process that asserts;
* hidden tests never enter the sandbox, so student code cannot read or print them.

Gradients flow through a remote call (``loss.backward()`` in a test works): the forward pass
runs in the sandbox and keeps its graph; ``backward`` asks the sandbox for the input
gradients.
"""
from __future__ import annotations

import io
import itertools
import os
from pathlib import Path

import torch

__all__ = ["Remote", "StudentCodeError", "Unsendable", "RemoteSession", "KERNEL_RUNTIME", "student_error"]

MAX_PAYLOAD_BYTES = 256 * 2**20


class StudentCodeError(Exception):
    """Student code raised, timed out, or its kernel died during a remote call."""


_ERROR_TYPES: dict[str, type] = {}


def student_error(ename, evalue) -> StudentCodeError:
    """The exception to raise for an error student code raised in the sandbox.

    For a built-in exception type (``ValueError``, ``KeyError``...) it is an instance of a
    subclass of both :class:`StudentCodeError` and that type, so a test written as
    ``try: f(bad_input) except ValueError: pass`` works as it would in the student's kernel.
    Only the type's *name* crosses the boundary: no student object is ever raised here.
    """
    import builtins

    name, msg = str(ename or "Error"), str(evalue or "")
    base = getattr(builtins, name, None)
    if (isinstance(base, type) and issubclass(base, Exception) and base is not StopIteration
            and not issubclass(base, (Warning, StopAsyncIteration))):
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
    model...). The grader then runs that test inside the sandbox instead."""


# Executed once in the sandbox kernel. Student code can overwrite any of it; that can only
# change the data it sends back, never how the trusted side judges it.
KERNEL_RUNTIME = r'''
def __olm_setup():
    import io, itertools, sys, traceback
    import numpy as _np
    import torch as _torch

    handles, calls = {}, {}
    counter = itertools.count(1)

    def encode(x, depth=0):
        if depth > 20:
            raise ValueError("value nested too deeply")
        if x is None or type(x) in (bool, int, float, str, bytes, complex):
            return x
        if isinstance(x, bool):
            return bool(x)
        if isinstance(x, int):
            return int(x)
        if isinstance(x, float):
            return float(x)
        if isinstance(x, str):
            return str(x)
        if isinstance(x, _torch.Tensor):
            t = x.detach()
            if type(t) is not _torch.Tensor:
                t = t.as_subclass(_torch.Tensor)
            return t.to("cpu").clone().contiguous()
        if isinstance(x, _np.ndarray) and x.dtype != object:
            return {"__olm_np__": _torch.from_numpy(_np.ascontiguousarray(x).copy())}
        if isinstance(x, (_np.generic,)):
            return encode(x.item(), depth + 1)
        if isinstance(x, _torch.Size):
            return {"__olm_size__": [int(v) for v in x]}
        if isinstance(x, (_torch.dtype, _torch.device)):
            return {"__olm_repr__": str(x)}
        pd = sys.modules.get("pandas")  # only if student code imported it
        if pd is not None and isinstance(x, (pd.DataFrame, pd.Series)):
            def column(values):
                arr = _np.asarray(values)
                if arr.dtype.kind in "biuf":
                    return encode(arr, depth + 1)
                return [encode(v, depth + 1) for v in list(values)]

            if isinstance(x, pd.Series):
                return {"__olm_series__": [encode(x.name, depth + 1), column(x.index), column(x.values)]}
            return {"__olm_frame__": [[encode(c, depth + 1) for c in x.columns], column(x.index),
                                      encode(x.index.name, depth + 1),
                                      [column(x.iloc[:, i].values) for i in range(x.shape[1])]]}
        if isinstance(x, (list, tuple)):
            items = [encode(v, depth + 1) for v in list(x)]
            return items if isinstance(x, list) else {"__olm_tuple__": items}
        if isinstance(x, dict):
            return {"__olm_dict__": [[encode(k, depth + 1), encode(v, depth + 1)]
                                     for k, v in list(dict.items(x))]}
        if isinstance(x, (set, frozenset)):
            return {"__olm_set__": [encode(v, depth + 1) for v in list(x)]}
        hid = next(counter)
        handles[hid] = x
        return {"__olm_handle__": hid, "type": type(x).__name__}

    def decode(x):
        if isinstance(x, dict):
            if "__olm_handle__" in x:
                return handles[x["__olm_handle__"]]
            if "__olm_np__" in x:
                return x["__olm_np__"].numpy()
            if "__olm_tuple__" in x:
                return tuple(decode(v) for v in x["__olm_tuple__"])
            if "__olm_dict__" in x:
                return {decode(k): decode(v) for k, v in x["__olm_dict__"]}
            if "__olm_set__" in x:
                return set(decode(v) for v in x["__olm_set__"])
            if "__olm_slice__" in x:
                return slice(*[decode(v) for v in x["__olm_slice__"]])
            if "__olm_ellipsis__" in x:
                return Ellipsis
            if "__olm_size__" in x:
                return _torch.Size(x["__olm_size__"])
        if isinstance(x, list):
            return [decode(v) for v in x]
        return x

    def respond(path, payload):
        buf = io.BytesIO()
        _torch.save(payload, buf)
        with open(path, "wb") as f:
            f.write(buf.getvalue())

    def run(req_path, resp_path):
        try:
            req = _torch.load(req_path, weights_only=True)
            op = req["op"]
            if op == "call" or op == "call_grad":
                target = globals()[req["name"]] if req.get("name") else handles[req["handle"]]
                args = [decode(a) for a in req["args"]]
                kwargs = {k: decode(v) for k, v in req["kwargs"]}
                if op == "call_grad":
                    grad_pos = req["grad_pos"]
                    for i in grad_pos:
                        args[i] = args[i].detach().requires_grad_(True)
                    with _torch.enable_grad():
                        out = target(*args, **kwargs)
                    outs = out if isinstance(out, (tuple, list)) else (out,)
                    if not all(isinstance(o, _torch.Tensor) for o in outs):
                        raise TypeError("a differentiable function must return tensors, got "
                                        + ", ".join(type(o).__name__ for o in outs))
                    cid = next(counter)
                    calls[cid] = ([args[i] for i in grad_pos], list(outs))
                    value = {"call_id": cid, "tuple": isinstance(out, (tuple, list)),
                             "outs": [encode(o) for o in outs]}
                else:
                    value = encode(target(*args, **kwargs))
            elif op == "backward":
                inputs, outs = calls.pop(req["call_id"])
                pairs = [(o, g) for o, g in zip(outs, req["grads"]) if g is not None and o.requires_grad]
                if pairs:
                    grads = _torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs],
                                                 allow_unused=True)
                else:
                    grads = [None] * len(inputs)
                value = [None if g is None else encode(g) for g in grads]
            elif op == "getattr":
                value = encode(getattr(handles[req["handle"]] if req.get("handle") else
                                       globals()[req["name"]], req["attr"]))
            elif op == "getitem":
                obj = handles[req["handle"]] if req.get("handle") else globals()[req["name"]]
                value = encode(obj[decode(req["key"])])
            elif op == "len":
                obj = handles[req["handle"]] if req.get("handle") else globals()[req["name"]]
                value = int(len(obj))
            elif op == "list":
                obj = handles[req["handle"]] if req.get("handle") else globals()[req["name"]]
                value = [encode(v) for v in list(obj)]
            elif op == "repr":
                obj = handles[req["handle"]] if req.get("handle") else globals()[req["name"]]
                value = repr(obj)[:2000]
            elif op == "get":
                value = encode(globals()[req["name"]])
            elif op == "defined":
                value = req["name"] in globals()
            else:
                raise ValueError(f"unknown op {op!r}")
            respond(resp_path, {"ok": True, "value": value})
        except BaseException as e:  # report every failure, including SystemExit
            tb = traceback.extract_tb(e.__traceback__)
            respond(resp_path, {"ok": False, "ename": type(e).__name__, "evalue": str(e)[:2000],
                                "where": [f"{fr.name}:{fr.lineno}" for fr in tb[-3:]]})

    return run

__olm_run = __olm_setup()
del __olm_setup
'''


def _encode(x, depth: int = 0):
    """Trusted-side encoding of call arguments (plain data and handles only)."""
    if depth > 20:
        raise ValueError("argument nested too deeply")
    if isinstance(x, Remote):
        if x._handle is None:
            return {"__olm_handle_name__": x._name}
        return {"__olm_handle__": x._handle}
    if x is None or type(x) in (bool, int, float, str, bytes, complex):
        return x
    for plain in (bool, int, float, str, bytes, complex):  # numpy.float64 is a float subclass:
        if isinstance(x, plain):                          # send the plain value, not a numpy type
            return plain(x)
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().clone()
    import numpy as np

    if isinstance(x, np.ndarray):
        return {"__olm_np__": torch.from_numpy(np.ascontiguousarray(x).copy())}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, torch.Size):
        return {"__olm_size__": list(x)}
    if isinstance(x, slice):
        return {"__olm_slice__": [_encode(x.start), _encode(x.stop), _encode(x.step)]}
    if x is Ellipsis:
        return {"__olm_ellipsis__": True}
    if isinstance(x, list):
        return [_encode(v, depth + 1) for v in x]
    if isinstance(x, tuple):
        return {"__olm_tuple__": [_encode(v, depth + 1) for v in x]}
    if isinstance(x, dict):
        return {"__olm_dict__": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in x.items()]}
    if isinstance(x, (set, frozenset)):
        return {"__olm_set__": [_encode(v, depth + 1) for v in x]}
    raise Unsendable(f"cannot send a {type(x).__name__} to student code in the sandbox; "
                    "tests must pass plain data (tensors, arrays, numbers, strings, containers)")


class RemoteSession:
    """The trusted side's channel to one sandbox kernel (a :class:`~course_lib.sandbox.SandboxKernel`)."""

    def __init__(self, kernel, call_timeout_s: float | None = None):
        self.kernel = kernel
        self.call_timeout_s = call_timeout_s
        self._ids = itertools.count(1)
        self.dead_reason: str | None = None

    def install(self) -> None:
        r = self.kernel.execute(KERNEL_RUNTIME, timeout=60)
        if r["status"] != "ok":
            raise RuntimeError(f"could not install the sandbox runtime: {r.get('ename')}: {r.get('evalue')}")

    def request(self, req: dict):
        from .sandbox import KernelDied

        if self.dead_reason:
            raise StudentCodeError(f"student code cannot run: {self.dead_reason}")
        n = next(self._ids)
        work = Path(self.kernel.workdir)
        req_path, resp_path = work / f"req-{n}.pt", work / f"resp-{n}.pt"
        buf = io.BytesIO()
        torch.save(req, buf)
        req_path.write_bytes(buf.getvalue())
        os.chmod(req_path, 0o644)
        try:
            r = self.kernel.execute(f"__olm_run({str(req_path)!r}, {str(resp_path)!r})",
                                    timeout=self.call_timeout_s)
        except KernelDied as e:
            self.dead_reason = f"the kernel died ({e})"
            raise StudentCodeError(self.dead_reason) from None
        finally:
            req_path.unlink(missing_ok=True)
        if r["status"] != "ok":
            resp_path.unlink(missing_ok=True)
            raise student_error(r.get("ename"), r.get("evalue"))
        try:
            if not resp_path.exists():
                raise StudentCodeError("student code sent no answer (the sandbox runtime was "
                                       "replaced or removed)")
            if resp_path.stat().st_size > MAX_PAYLOAD_BYTES:
                raise StudentCodeError("student code returned more than 256 MB")
            resp = torch.load(resp_path, weights_only=True)
        except StudentCodeError:
            raise
        except Exception as e:  # noqa: BLE001 - any malformed answer is the student's failure
            raise StudentCodeError(f"unreadable answer from student code: {type(e).__name__}: {e}") from None
        finally:
            resp_path.unlink(missing_ok=True)
        if not isinstance(resp, dict) or "ok" not in resp:
            raise StudentCodeError("malformed answer from student code")
        if not resp["ok"]:
            raise student_error(resp.get("ename"), resp.get("evalue"))
        return self.decode(resp.get("value"))

    def decode(self, x):
        if isinstance(x, dict):
            if "__olm_handle__" in x:
                return Remote(self, handle=int(x["__olm_handle__"]), type_name=str(x.get("type")))
            if "__olm_np__" in x:
                return x["__olm_np__"].numpy()
            if "__olm_tuple__" in x:
                return tuple(self.decode(v) for v in x["__olm_tuple__"])
            if "__olm_dict__" in x:
                out = {}
                for k, v in x["__olm_dict__"]:
                    key = self.decode(k)
                    if isinstance(key, (list, dict, set, Remote)):
                        raise StudentCodeError("unhashable dict key from student code")
                    out[key] = self.decode(v)
                return out
            if "__olm_set__" in x:
                return {self.decode(v) for v in x["__olm_set__"]}
            if "__olm_size__" in x:
                return torch.Size([int(v) for v in x["__olm_size__"]])
            if "__olm_repr__" in x:
                return str(x["__olm_repr__"])
            if "__olm_series__" in x or "__olm_frame__" in x:
                return self._decode_pandas(x)
            if "call_id" in x:
                return x
            raise StudentCodeError("malformed value from student code")
        if isinstance(x, list):
            return [self.decode(v) for v in x]
        if x is None or isinstance(x, (bool, int, float, str, bytes, complex, torch.Tensor)):
            return x
        raise StudentCodeError(f"unexpected {type(x).__name__} from student code")


    def _decode_pandas(self, x):
        """A DataFrame or Series rebuilt here from plain columns (values, index, names)."""
        import pandas as pd

        def column(v):
            v = self.decode(v)
            if isinstance(v, list) and any(isinstance(e, Remote) for e in v):
                raise StudentCodeError("a DataFrame column holds objects that are not plain data")
            return v

        try:
            if "__olm_series__" in x:
                name, index, values = x["__olm_series__"]
                return pd.Series(column(values), index=column(index), name=self.decode(name))
            columns, index, index_name, data = x["__olm_frame__"]
            cols = [self.decode(c) for c in columns]
            frame = pd.DataFrame({i: column(v) for i, v in enumerate(data)}, index=column(index))
            frame.columns = cols
            frame.index.name = self.decode(index_name)
            return frame
        except StudentCodeError:
            raise
        except Exception as e:  # noqa: BLE001 - malformed data is the student's failure
            raise StudentCodeError(f"malformed DataFrame from student code: {type(e).__name__}: {e}") from None


class _RemoteGrad(torch.autograd.Function):
    """Forward in the sandbox, backward in the sandbox, gradients as plain tensors."""

    @staticmethod
    def forward(ctx, remote, spec, *tensors):
        args, kwargs, grad_pos = spec
        args = list(args)
        for slot, t in zip(grad_pos, tensors):
            args[slot] = t.detach()
        ans = remote._session.request({
            "op": "call_grad", **remote._target(), "grad_pos": list(grad_pos),
            "args": [_encode(a) for a in args], "kwargs": [[k, _encode(v)] for k, v in kwargs.items()]})
        outs = [o if isinstance(o, torch.Tensor) else torch.as_tensor(o) for o in ans["outs"]]
        ctx.remote, ctx.call_id, ctx.n_in = remote, ans["call_id"], len(tensors)
        ctx.is_tuple = ans["tuple"]
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grad_outs):
        grads = ctx.remote._session.request({"op": "backward", "call_id": ctx.call_id,
                                             "grads": [None if g is None else g.detach().clone()
                                                       for g in grad_outs]})
        if not isinstance(grads, list) or len(grads) != ctx.n_in:
            raise StudentCodeError("malformed gradients from student code")
        return (None, None, *[g if g is None else torch.as_tensor(g) for g in grads])


class Remote:
    """A name (or object) that lives in the sandbox; every use is a round trip of plain data."""

    def __init__(self, session: RemoteSession, name: str | None = None, handle: int | None = None,
                 type_name: str = "object"):
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
        return self._session.request({"op": "call", **self._target(),
                                      "args": [_encode(a) for a in args],
                                      "kwargs": [[k, _encode(v)] for k, v in kwargs.items()]})

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return self._session.request({"op": "getattr", **self._target(), "attr": attr})

    def __getitem__(self, key):
        return self._session.request({"op": "getitem", **self._target(), "key": _encode(key)})

    def __len__(self):
        return int(self._session.request({"op": "len", **self._target()}))

    def __iter__(self):
        return iter(self._session.request({"op": "list", **self._target()}))

    def __repr__(self):
        try:
            return f"<sandboxed {self._session.request({'op': 'repr', **self._target()})}>"
        except StudentCodeError as e:
            return f"<sandboxed {self._name or self._type_name}: {e}>"

    def __setattr__(self, attr, value):
        raise TypeError("tests cannot modify objects that live in the student's sandbox")
