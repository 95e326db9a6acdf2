"""Input checks shared by every ``course_lib`` module: one name per idea, one message style.

In the scikit-learn style, each check takes the argument's **name first**, then its value, and
either returns the (normalised) value or raises with a message of the form
``"<name> must be <what>, got <what it was>"`` plus, where it helps, what to do. A wrong type
raises ``TypeError``; a value of the right type out of range raises ``ValueError``.

    >>> check_positive_int("n_heads", 4)
    4
    >>> check_positive_int("n_heads", 0)
    Traceback (most recent call last):
    ...
    ValueError: n_heads must be an int >= 1, got 0
    >>> check_int("max_length", 600, minimum=8, maximum=512)
    Traceback (most recent call last):
    ...
    ValueError: max_length must be an int between 8 and 512, got 600
    >>> check_texts("texts", "one review")
    Traceback (most recent call last):
    ...
    TypeError: texts must be a list of str (one per text), got a single str; wrap it in a list: ['one review']
    >>> check_texts("texts", "one review", allow_str=True)
    ['one review']
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["check_int", "check_positive_int", "check_str", "check_texts", "check_tensor", "check_choice"]


def _is_int(value) -> bool:
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python ``int`` if it is an integer (``int`` or NumPy integer, not ``bool``)
    within ``[minimum, maximum]`` (either bound optional); ``TypeError``/``ValueError`` otherwise.

    >>> check_int("seed", 3, minimum=0)
    3
    >>> check_int("n", -1, minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: n must be an int >= 0, got -1
    """
    if minimum is not None and maximum is not None:
        what = f"an int between {minimum} and {maximum}"
    elif minimum is not None:
        what = f"an int >= {minimum}"
    elif maximum is not None:
        what = f"an int <= {maximum}"
    else:
        what = "an int"
    if not _is_int(value):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value) -> int:
    """``check_int(name, value, minimum=1)``: counts, sizes and lengths.

    >>> check_positive_int("batch_size", True)
    Traceback (most recent call last):
    ...
    TypeError: batch_size must be an int >= 1, got True (bool)
    """
    return check_int(name, value, minimum=1)


def check_str(name: str, value) -> str:
    """``value`` if it is a ``str``; ``TypeError`` otherwise (bytes get a hint to decode them).

    >>> check_str("text", b"abc")
    Traceback (most recent call last):
    ...
    TypeError: text must be a str, got bytes; decode it first: value.decode('utf-8')
    """
    if not isinstance(value, str):
        hint = "; decode it first: value.decode('utf-8')" if isinstance(value, (bytes, bytearray)) else ""
        raise TypeError(f"{name} must be a str, got {type(value).__name__}{hint}")
    return value


def check_texts(
    name: str, texts, *, allow_str: bool = False, allow_empty: bool = True, allow_blank: bool = True
) -> list[str]:
    """``texts`` as a ``list[str]`` (any iterable of ``str`` is accepted).

    ``allow_str`` turns a single ``str`` into a one-element list (otherwise it is an error, since
    iterating a str gives characters); ``allow_empty=False`` rejects an empty collection and
    ``allow_blank=False`` rejects a text that is only whitespace.

    >>> check_texts("docs", ("a", "b"))
    ['a', 'b']
    >>> check_texts("docs", ["a", 3])
    Traceback (most recent call last):
    ...
    TypeError: docs[1] must be a str, got int
    >>> check_texts("docs", [], allow_empty=False)
    Traceback (most recent call last):
    ...
    ValueError: docs must hold at least one text, got an empty collection
    """
    if isinstance(texts, str):
        if allow_str:
            texts = [texts]
        else:
            raise TypeError(
                f"{name} must be a list of str (one per text), got a single str; "
                f"wrap it in a list: [{texts[:30]!r}]"
            )
    elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a list of str (one per text), got {type(texts).__name__}")
    texts = list(texts)
    if not texts and not allow_empty:
        raise ValueError(f"{name} must hold at least one text, got an empty collection")
    for i, t in enumerate(texts):
        check_str(f"{name}[{i}]", t)
        if not allow_blank and not t.strip():
            raise ValueError(f"{name}[{i}] must not be empty or blank, got {t!r}; drop it first")
    return texts


def check_tensor(name: str, x, *, ndim: int | None = None, floating: bool = False):
    """``x`` if it is a ``torch.Tensor`` (with ``ndim`` dimensions and a floating dtype when
    asked); ``TypeError``/``ValueError`` otherwise.

    >>> import torch
    >>> check_tensor("x", torch.zeros(2, 3), ndim=3)
    Traceback (most recent call last):
    ...
    ValueError: x must have 3 dimensions, got shape (2, 3)
    """
    import torch

    if not isinstance(x, torch.Tensor):
        hint = (
            "; convert it with torch.as_tensor(x)" if hasattr(x, "__array__") or isinstance(x, list) else ""
        )
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}{hint}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}; use x.float()")
    return x


def check_choice(name: str, value, choices) -> object:
    """``value`` if it is one of ``choices``; ``ValueError`` naming them otherwise.

    >>> check_choice("alternative", "less", ("two-sided", "greater", "less"))
    'less'
    >>> check_choice("alternative", "both", ("two-sided", "greater", "less"))
    Traceback (most recent call last):
    ...
    ValueError: alternative must be one of 'two-sided', 'greater', 'less', got 'both'
    """
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
