"""The wire format between the trusted grader and the sandbox kernel, defined once.

Both sides use this file: the trusted process imports it as ``course_lib.grading.wire``, and the
sandbox kernel receives its *source text* (with :mod:`kernel_runtime`) and runs it in a private
namespace, so it imports nothing but the standard library, ``torch`` and ``numpy`` (``pandas``
only when the value is a DataFrame). What crosses is a tree of plain values that
``torch.load(weights_only=True)`` reads without running code: ``None``, ``bool``, ``int``,
``float``, ``complex``, ``str``, ``bytes``, plain ``torch.Tensor``, ``list`` and ``dict`` with
string keys. Everything richer is a one-key dict whose key is a tag below.

The two sides differ only in two hooks: what :func:`encode` does with an object it cannot send
(the kernel keeps it and sends a handle; the trusted side refuses, or sends a handle it holds),
and what :func:`decode` does with a handle (the kernel looks it up; the trusted side makes a
proxy). :class:`Budget` caps what a decode may allocate, so a tiny file cannot make the grader
build a huge value (a tensor with zero strides, a list of millions of items).

    >>> import torch
    >>> v = {"xs": (1, 2.5, "a"), "t": torch.arange(3), "s": {3}}
    >>> back = decode(encode(v, on_object=refuse), on_handle=refuse)
    >>> back["xs"], back["t"].tolist(), back["s"]
    ((1, 2.5, 'a'), [0, 1, 2], {3})
"""

from __future__ import annotations

import sys

TAG_HANDLE = "__olm_handle__"  # an object kept in the sandbox: [number, type name]
TAG_HANDLE_NAME = "__olm_handle_name__"  # a global of the student's namespace, by name
TAG_NDARRAY = "__olm_np__"  # numpy array (payload: a tensor of the same data)
TAG_TUPLE = "__olm_tuple__"
TAG_DICT = "__olm_dict__"  # [[key, value], ...]: keys of any sendable type
TAG_SET = "__olm_set__"
TAG_FROZENSET = "__olm_frozenset__"
TAG_SLICE = "__olm_slice__"  # [start, stop, step]
TAG_ELLIPSIS = "__olm_ellipsis__"
TAG_SIZE = "__olm_size__"  # torch.Size
TAG_REPR = "__olm_repr__"  # torch.dtype / torch.device, as their str()
TAG_SERIES = "__olm_series__"  # [name, index, values]
TAG_FRAME = "__olm_frame__"  # [columns, index, index_name, [column values, ...]]

TAGS = (
    TAG_HANDLE,
    TAG_HANDLE_NAME,
    TAG_NDARRAY,
    TAG_TUPLE,
    TAG_DICT,
    TAG_SET,
    TAG_FROZENSET,
    TAG_SLICE,
    TAG_ELLIPSIS,
    TAG_SIZE,
    TAG_REPR,
    TAG_SERIES,
    TAG_FRAME,
)

MAX_DEPTH = 20
_SCALARS = (bool, int, float, complex, str, bytes)


class WireError(ValueError):
    """A value that does not follow the wire format, or exceeds the decode budget."""


def refuse(x):
    """Default hook: an object (or handle) that this side will not send (or accept)."""
    raise WireError(f"cannot send a {type(x).__name__}: only plain data crosses the sandbox boundary")


class Budget:
    """Caps one decode: ``max_items`` values in all and ``max_bytes`` of tensor data.

    >>> b = Budget(max_items=2, max_bytes=10)
    >>> b.item(); b.item()
    >>> b.item()
    Traceback (most recent call last):
    ...
    course_lib.grading.wire.WireError: more than 2 values in one answer
    """

    def __init__(self, max_items: int = 2_000_000, max_bytes: int = 256 * 2**20):
        self.items_left, self.bytes_left = max_items, max_bytes
        self.max_items, self.max_bytes = max_items, max_bytes

    def item(self) -> None:
        self.items_left -= 1
        if self.items_left < 0:
            raise WireError(f"more than {self.max_items} values in one answer")

    def tensor(self, t) -> None:
        self.item()
        nbytes = int(t.numel()) * int(t.element_size())  # the *logical* size: what using it costs
        self.bytes_left -= nbytes
        if self.bytes_left < 0:
            raise WireError(
                f"tensors of more than {self.max_bytes // 2**20} MB in one answer "
                f"(one of shape {tuple(t.shape)} alone is {nbytes / 2**20:.0f} MB)"
            )


def encode(x, on_object=refuse, depth: int = 0):
    """``x`` as a tree of plain values; ``on_object(x)`` encodes anything else (or raises)."""
    import numpy as np
    import torch

    if depth > MAX_DEPTH:
        raise WireError(f"value nested more than {MAX_DEPTH} levels deep")
    if x is None or type(x) in _SCALARS:
        return x
    for plain in _SCALARS:  # subclasses (numpy.float64, IntEnum, str subclasses): the plain value
        if isinstance(x, plain):
            return plain(x)
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if type(t) is not torch.Tensor:
            t = t.as_subclass(torch.Tensor)
        return t.to("cpu").clone().contiguous()
    if isinstance(x, np.ndarray) and x.dtype != object:
        return {TAG_NDARRAY: torch.from_numpy(np.ascontiguousarray(x).copy())}
    if isinstance(x, np.generic):
        return encode(x.item(), on_object, depth + 1)
    if isinstance(x, torch.Size):
        return {TAG_SIZE: [int(v) for v in x]}
    if isinstance(x, (torch.dtype, torch.device)):
        return {TAG_REPR: str(x)}
    if isinstance(x, slice):
        return {TAG_SLICE: [encode(v, on_object, depth + 1) for v in (x.start, x.stop, x.step)]}
    if x is Ellipsis:
        return {TAG_ELLIPSIS: True}
    pd = sys.modules.get("pandas")  # only if some code here already imported it
    if pd is not None and isinstance(x, (pd.DataFrame, pd.Series)):
        return _encode_pandas(x, on_object, depth, pd, np)
    if isinstance(x, list):
        return [encode(v, on_object, depth + 1) for v in list(x)]
    if isinstance(x, tuple):
        return {TAG_TUPLE: [encode(v, on_object, depth + 1) for v in tuple.__iter__(x)]}
    if isinstance(x, dict):
        return {
            TAG_DICT: [
                [encode(k, on_object, depth + 1), encode(v, on_object, depth + 1)]
                for k, v in list(dict.items(x))
            ]
        }
    if isinstance(x, (set, frozenset)):
        tag = TAG_FROZENSET if isinstance(x, frozenset) else TAG_SET
        return {tag: [encode(v, on_object, depth + 1) for v in list(x)]}
    return on_object(x)


def _encode_pandas(x, on_object, depth, pd, np):
    def column(values):
        arr = np.asarray(values)
        if arr.dtype.kind in "biuf":
            return encode(arr, on_object, depth + 1)
        return [encode(v, on_object, depth + 1) for v in list(values)]

    if isinstance(x, pd.Series):
        return {TAG_SERIES: [encode(x.name, on_object, depth + 1), column(x.index), column(x.values)]}
    return {
        TAG_FRAME: [
            [encode(c, on_object, depth + 1) for c in x.columns],
            column(x.index),
            encode(x.index.name, on_object, depth + 1),
            [column(x.iloc[:, i].values) for i in range(x.shape[1])],
        ]
    }


def decode(x, on_handle=refuse, budget: Budget | None = None, depth: int = 0):
    """The value that :func:`encode` made ``x`` from; ``on_handle(tag, payload)`` resolves
    handles. Raises :class:`WireError` for anything malformed or over ``budget``."""
    import torch

    budget = budget if budget is not None else Budget()
    if depth > MAX_DEPTH + 2:
        raise WireError(f"value nested more than {MAX_DEPTH} levels deep")
    if x is None or type(x) in _SCALARS:
        budget.item()
        if type(x) in (str, bytes):
            budget.bytes_left -= len(x)
        return x
    if type(x) is torch.Tensor:
        budget.tensor(x)
        return x
    if type(x) is list:
        budget.item()
        return [decode(v, on_handle, budget, depth + 1) for v in x]
    if type(x) is not dict or len(x) != 1:
        raise WireError(f"malformed value: a {type(x).__name__} that is not a tagged one-key dict")
    budget.item()
    ((tag, payload),) = x.items()

    def sub(v):
        return decode(v, on_handle, budget, depth + 1)

    def items(v, n=None):
        if type(v) is not list or (n is not None and len(v) != n):
            raise WireError(f"malformed {tag} payload")
        return v

    if tag == TAG_HANDLE:
        if (
            type(payload) is not list
            or len(payload) != 2
            or type(payload[0]) is not int
            or type(payload[1]) is not str
        ):
            raise WireError(f"malformed {tag} payload")
        return on_handle(tag, payload)
    if tag == TAG_HANDLE_NAME:
        if type(payload) is not str:
            raise WireError(f"malformed {tag} payload")
        return on_handle(tag, payload)
    if tag == TAG_NDARRAY:
        if type(payload) is not torch.Tensor:
            raise WireError("malformed array payload")
        budget.tensor(payload)
        try:
            return payload.numpy()
        except (TypeError, RuntimeError) as e:
            raise WireError(f"array of an unsupported dtype: {e}") from None
    if tag == TAG_TUPLE:
        return tuple(sub(v) for v in items(payload))
    if tag == TAG_DICT:
        out = {}
        for pair in items(payload):
            k, v = items(pair, 2)
            key = sub(k)
            try:
                hash(key)
            except TypeError:
                raise WireError(f"unhashable dict key of type {type(key).__name__}") from None
            out[key] = sub(v)
        return out
    if tag in (TAG_SET, TAG_FROZENSET):
        values = [sub(v) for v in items(payload)]
        try:
            return set(values) if tag == TAG_SET else frozenset(values)
        except TypeError:
            raise WireError("a set of unhashable values") from None
    if tag == TAG_SLICE:
        return slice(*[sub(v) for v in items(payload, 3)])
    if tag == TAG_ELLIPSIS:
        return Ellipsis
    if tag == TAG_SIZE:
        dims = items(payload)
        if not all(type(d) is int and d >= 0 for d in dims):
            raise WireError("malformed torch.Size")
        return torch.Size(dims)
    if tag == TAG_REPR:
        if type(payload) is not str:
            raise WireError("malformed dtype/device")
        return _dtype_or_device(payload)
    if tag in (TAG_SERIES, TAG_FRAME):
        return _decode_pandas(tag, payload, sub, items)
    raise WireError(f"unknown tag {tag!r}")


def _dtype_or_device(text: str):
    import torch

    if text.startswith("torch."):
        dtype = getattr(torch, text[len("torch.") :], None)
        if isinstance(dtype, torch.dtype):
            return dtype
    try:
        return torch.device(text)
    except (RuntimeError, TypeError):
        return text


def _decode_pandas(tag, payload, sub, items):
    import pandas as pd

    try:
        if tag == TAG_SERIES:
            name, index, values = items(payload, 3)
            return pd.Series(sub(values), index=sub(index), name=sub(name))
        columns, index, index_name, data = items(payload, 4)
        cols = [sub(c) for c in items(columns)]
        frame = pd.DataFrame({i: sub(v) for i, v in enumerate(items(data))}, index=sub(index))
        frame.columns = cols
        frame.index.name = sub(index_name)
        return frame
    except WireError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed columns are a malformed value
        raise WireError(f"malformed DataFrame: {type(e).__name__}: {e}") from None
