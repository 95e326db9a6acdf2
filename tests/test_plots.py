"""Unit tests of course_lib.plots: what is drawn, and clear errors on bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_lib import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_use_course_style_sets_palette():
    plots.use_course_style()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    assert colors[0].lower() == plots.COLORS[0].lower()
    assert matplotlib.rcParams["axes.spines.top"] is False


def test_bar_draws_one_bar_per_label_with_units():
    ax = plots.bar(["a", "b", "c"], [1, 2.5, 3], xlabel="x [unit]", ylabel="y [s]", title="t")
    assert [p.get_height() for p in ax.patches] == [1.0, 2.5, 3.0]
    assert ax.get_xlabel() == "x [unit]" and ax.get_ylabel() == "y [s]" and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]


def test_bar_accepts_tensors_arrays_and_numpy_scalars():
    ax = plots.bar(["a", "b"], torch.tensor([0.25, 0.75]), xlabel="x", ylabel="p")
    assert [round(p.get_height(), 2) for p in ax.patches] == [0.25, 0.75]
    ax = plots.bar(["a", "b"], [np.int64(3), torch.tensor(4.0)], xlabel="x", ylabel="n")
    assert [p.get_height() for p in ax.patches] == [3.0, 4.0]
    ax = plots.bar(["a", "b"], np.array([1.0, 2.0]), xlabel="x", ylabel="n")
    assert len(ax.patches) == 2


def test_bar_horizontal_puts_first_label_on_top_and_log_scale():
    ax = plots.bar(
        ["first", "second"], [10, 1000], xlabel="bytes [B]", ylabel="format", horizontal=True, log=True
    )
    y_of = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert y_of["first"] > y_of["second"]  # read top to bottom
    assert ax.get_xscale() == "log"
    assert sorted(p.get_width() for p in ax.patches) == [10.0, 1000.0]


def test_bar_draws_into_given_axes():
    fig, (a1, a2) = plt.subplots(1, 2)
    out = plots.bar(["a"], [1], xlabel="x", ylabel="y", ax=a2)
    assert out is a2 and len(a1.patches) == 0


def test_grouped_bar_one_colour_per_series_and_legend():
    ax = plots.grouped_bar(
        ["s1", "s2", "s3"], {"A": [1, 2, 3], "B": [4, 5, 6]}, xlabel="sentence", ylabel="tokens"
    )
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    a_colors = {p.get_facecolor() for p in ax.patches[:3]}
    b_colors = {p.get_facecolor() for p in ax.patches[3:]}
    assert len(a_colors) == 1 and len(b_colors) == 1 and a_colors != b_colors


def test_line_single_and_named_curves():
    ax = plots.line([1, 2, 3], [3, 2, 1], xlabel="step", ylabel="loss [nats]")
    assert len(ax.lines) == 1 and ax.get_legend() is None
    ax = plots.line(
        [1, 10, 100],
        {"train": [3, 2, 1], "val": [3, 2.5, 2]},
        xlabel="step",
        ylabel="loss [nats]",
        logx=True,
        logy=True,
        marker="o",
    )
    assert len(ax.lines) == 2 and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert list(ax.lines[1].get_ydata()) == [3, 2.5, 2]


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: plots.bar(["a", "b"], [1], xlabel="x", ylabel="y"), ValueError, "values has 1"),
        (lambda: plots.bar(["a"], [1], xlabel="", ylabel="y"), TypeError, "xlabel"),
        (lambda: plots.bar(["a"], [1], xlabel="x", ylabel=None), TypeError, "ylabel"),
        (lambda: plots.bar(["a"], ["1"], xlabel="x", ylabel="y"), TypeError, "values[0]"),
        (lambda: plots.bar(["a"], [True], xlabel="x", ylabel="y"), TypeError, "values[0]"),
        (lambda: plots.bar("ab", [1, 2], xlabel="x", ylabel="y"), TypeError, "labels"),
        (lambda: plots.bar([], [], xlabel="x", ylabel="y"), TypeError, "labels"),
        (lambda: plots.bar(["a"], 3, xlabel="x", ylabel="y"), TypeError, "values must be a sequence"),
        (lambda: plots.bar(["a", "b"], [0, 1], xlabel="x", ylabel="y", log=True), ValueError, "positive"),
        (lambda: plots.grouped_bar(["a"], {}, xlabel="x", ylabel="y"), TypeError, "series"),
        (lambda: plots.grouped_bar(["a"], [[1]], xlabel="x", ylabel="y"), TypeError, "series"),
        (
            lambda: plots.grouped_bar(["a", "b"], {"A": [1]}, xlabel="x", ylabel="y"),
            ValueError,
            "series['A']",
        ),
        (lambda: plots.line([1, 2], [1], xlabel="x", ylabel="y"), ValueError, "ys has 1"),
        (lambda: plots.line([], [], xlabel="x", ylabel="y"), ValueError, "x is empty"),
        (lambda: plots.line([1], {}, xlabel="x", ylabel="y"), ValueError, "empty dict"),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_bar_value_labels_are_readable():
    ax = plots.bar(["a", "b", "c", "d"], [0.5, 1620.0, 0.001, 3e7], xlabel="x", ylabel="y", log=True)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.5", "1,620", "0.001", "3e+07"]
