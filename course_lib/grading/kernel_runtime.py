"""The sandbox kernel's side of a remote call (sent as source text; imports nothing of course_lib).

:func:`make_runner` is called once inside the student's kernel with the namespace in which
:mod:`wire`'s source ran and the student's globals; it returns ``run(req_path, resp_path)``,
which reads one request, does it, and writes one response. Student code can overwrite any of
it: that can only change the data it sends back, never how the trusted side judges it.

Requests: ``{"op", "name" | "handle", ...}`` with ``op`` one of ``call``, ``call_grad``,
``backward``, ``getattr``, ``getitem``, ``len``, ``list``, ``repr``, ``get``, ``defined``;
arguments are encoded with the wire format. Responses: ``{"ok": True, "value": <wire value>}``
or ``{"ok": False, "ename", "evalue", "where"}``. A ``call`` also reports ``mutated``: the
positions of tensor, array, list and dict arguments that the student's function changed in
place, with their new values, so the trusted side can apply the change to the caller's objects
(in-place semantics are then the same as in the student's own kernel).
"""


def make_runner(wire: dict, user_ns: dict):
    import io
    import itertools
    import traceback

    import numpy as _np
    import torch as _torch

    encode, decode = wire["encode"], wire["decode"]
    TAG_HANDLE = wire["TAG_HANDLE"]
    handles, calls = {}, {}
    counter = itertools.count(1)

    def keep(obj):
        hid = next(counter)
        handles[hid] = obj
        return {TAG_HANDLE: [hid, type(obj).__name__[:100]]}

    def enc(x):
        return encode(x, on_object=keep)

    def resolve(tag, payload):
        if tag == TAG_HANDLE:
            return handles[payload[0]]
        return user_ns[payload]

    def dec(x):
        return decode(x, on_handle=resolve, budget=wire["Budget"](max_items=10**8, max_bytes=2**40))

    def target_of(req):
        return user_ns[req["name"]] if req.get("name") else handles[req["handle"]]

    def snapshot(args, kwargs):
        """Copies of the mutable arguments, to detect in-place changes after the call."""

        def copy(v):
            if isinstance(v, _torch.Tensor):
                return v.detach().clone()
            if isinstance(v, _np.ndarray):
                return v.copy()
            if isinstance(v, list):
                return enc(v)
            if isinstance(v, dict):
                return enc(v)
            return None

        slots = [(i, a) for i, a in enumerate(args)] + [(k, v) for k, v in kwargs.items()]
        return [(slot, value, copy(value)) for slot, value in slots]

    def changed(value, before):
        if before is None:
            return False
        if isinstance(value, _torch.Tensor):
            v = value.detach()
            return (
                v.shape != before.shape
                or v.dtype != before.dtype
                or not _torch.equal(v.to(before.device), before)
            )
        if isinstance(value, _np.ndarray):
            return (
                value.shape != before.shape
                or value.dtype != before.dtype
                or not _np.array_equal(value, before, equal_nan=True)
            )
        try:
            now = enc(value)
        except Exception:  # noqa: BLE001 - unsendable now: report nothing
            return False
        return _differs(now, before)

    def _differs(a, b):
        if type(a) is not type(b):
            return True
        if isinstance(a, _torch.Tensor):
            return a.shape != b.shape or a.dtype != b.dtype or not _torch.equal(a, b)
        if isinstance(a, list):
            return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
        if isinstance(a, dict):
            return a.keys() != b.keys() or any(_differs(a[k], b[k]) for k in a)
        return a != b

    def respond(path, payload):
        buf = io.BytesIO()
        _torch.save(payload, buf)
        with open(path, "wb") as f:
            f.write(buf.getvalue())

    def run(req_path, resp_path):
        try:
            req = _torch.load(req_path, weights_only=True)
            op = req["op"]
            extra = {}
            if op in ("call", "call_grad"):
                target = target_of(req)
                args = [dec(a) for a in req["args"]]
                kwargs = {k: dec(v) for k, v in req["kwargs"]}
                if op == "call_grad":
                    grad_pos = req["grad_pos"]
                    for i in grad_pos:
                        args[i] = args[i].detach().requires_grad_(True)
                    with _torch.enable_grad():
                        out = target(*args, **kwargs)
                    outs = out if isinstance(out, (tuple, list)) else (out,)
                    if not all(isinstance(o, _torch.Tensor) for o in outs):
                        raise TypeError(
                            "a differentiable function must return tensors, got "
                            + ", ".join(type(o).__name__ for o in outs)
                        )
                    cid = next(counter)
                    calls[cid] = ([args[i] for i in grad_pos], list(outs))
                    value = enc({"call_id": cid, "tuple": isinstance(out, (tuple, list)), "outs": list(outs)})
                else:
                    before = snapshot(args, kwargs)
                    value = enc(target(*args, **kwargs))
                    extra["mutated"] = [[slot, enc(v)] for slot, v, b in before if changed(v, b)]
            elif op == "backward":
                inputs, outs = calls.pop(req["call_id"])
                grads_in = [dec(g) for g in req["grads"]]
                pairs = [(o, g) for o, g in zip(outs, grads_in) if g is not None and o.requires_grad]
                if pairs:
                    grads = _torch.autograd.grad(
                        [o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True
                    )
                else:
                    grads = [None] * len(inputs)
                value = enc(list(grads))
            elif op == "getattr":
                value = enc(getattr(target_of(req), req["attr"]))
            elif op == "getitem":
                value = enc(target_of(req)[dec(req["key"])])
            elif op == "len":
                value = int(len(target_of(req)))
            elif op == "list":
                value = enc(list(target_of(req)))
            elif op == "repr":
                value = repr(target_of(req))[:2000]
            elif op == "get":
                value = enc(user_ns[req["name"]])
            elif op == "defined":
                value = req["name"] in user_ns
            else:
                raise ValueError(f"unknown op {op!r}")
            respond(resp_path, {"ok": True, "value": value, **extra})
        except BaseException as e:  # noqa: BLE001 - report every failure, including SystemExit
            tb = traceback.extract_tb(e.__traceback__)
            respond(
                resp_path,
                {
                    "ok": False,
                    "ename": type(e).__name__,
                    "evalue": str(e)[:2000],
                    "where": [f"{fr.name}:{fr.lineno}" for fr in tb[-3:]],
                },
            )

    return run
