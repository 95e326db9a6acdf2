"""course_lib.lm_eval_tasks: the real lm-evaluation-harness agrees with llm_eval's scorer.

Fast: a tiny random LlamaForCausalLM with SmolLM2's tokenizer (from the course cache) on 12
prompts of two tasks (MMLU letters, PIQA cloze); the tiny model's 64-token window also makes
both scorers truncate the longer MMLU prompts from the left.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import yaml

from course_lib import llm_eval
from course_lib.lm_eval_tasks import TASK_METRICS, read_task_docs, run_lm_eval, write_task


@pytest.fixture(scope="module")
def tok():
    from course_lib.data import load_smollm2

    tok, _ = load_smollm2()  # builds the shared course cache on first use (atomic, ~20 s)
    return tok


@pytest.fixture(scope="module")
def prompts():
    mmlu = llm_eval.build_prompts(llm_eval.load_benchmark("mmlu", n=6, seed=1))
    piqa = llm_eval.build_prompts(llm_eval.load_benchmark("piqa", n=6, seed=1))
    return mmlu + piqa


@pytest.fixture(scope="module")
def scored(tok, prompts):
    from course_lib.model import build_model, make_config

    model = build_model(make_config("tiny", vocab_size=len(tok)), seed=0)  # training mode
    ours = llm_eval.score_multiple_choice(model, tok, prompts, batch_size=8, progress=False)
    level = logging.getLogger("lm_eval").level
    ref = run_lm_eval(model, tok, prompts, batch_size=8)
    assert logging.getLogger("lm_eval").level == level  # quiet during the run only
    return model, ours, ref


def test_lm_eval_lls_agree_with_ours(scored, prompts):
    _, ours, ref = scored
    assert [len(x) for x in ref["lls"]] == [len(p.choices) for p in prompts]
    diff = max(abs(a - b) for x, y in zip(ref["lls"], ours["lls"]) for a, b in zip(x, y))
    assert diff < 1e-4, f"lm-eval and llm_eval disagree by {diff:.2e} nats"


def test_lm_eval_predictions_agree_item_by_item(scored, prompts):
    _, ours, ref = scored
    per = ref["per_item"]
    assert list(per["index"]) == [p.index for p in prompts]
    assert list(per["gold"]) == [p.gold for p in prompts]
    for col in ("pred", "pred_norm", "pred_bytes"):
        assert list(per[col]) == list(ours[col]), col
    assert list(per["acc_norm"]) == list((per["pred_norm"] == per["gold"]).astype(int))
    for m in TASK_METRICS:
        assert list(per[m]) == list(ours[m]), m
        assert ref[m] == pytest.approx(ours[m].mean())
    assert ref["seconds"] > 0 and ref["lm_eval_version"].startswith("0.4")


def test_run_lm_eval_leaves_the_model_in_its_mode(scored):
    model, _, _ = scored
    assert model.training  # build_model returns it in training mode; HFLM calls .eval()


def test_run_lm_eval_leaves_the_global_rng_alone(tok, scored):
    model, _, _ = scored
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_lm_eval(model, tok, TRICKY[:1], batch_size=2)
    assert torch.equal(torch.rand(3), expected)


TRICKY = [
    llm_eval.Prompt("t", 0, 'Say "hi" {{ not_a_field }}\nAnswer:', ("it's", 'a "quote"', "back\\slash"), 2),
    llm_eval.Prompt("t", 5, "Café?\nAnswer:", ("naïve", "日本語"), 0),
    llm_eval.Prompt("u", 5, "Two lines\n\nAnswer:", ("A", "B", "C", "D"), 3),
]


def test_write_task_round_trips(tmp_path):
    cfg_path = write_task(TRICKY, tmp_path / "tasks", "tricky_task")
    assert cfg_path == (tmp_path / "tasks" / "tricky_task.yaml").resolve()
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    assert cfg["task"] == "tricky_task" and cfg["output_type"] == "multiple_choice"
    assert cfg["dataset_path"] == "json" and cfg["target_delimiter"] == " "
    assert [m["metric"] for m in cfg["metric_list"]] == list(TASK_METRICS)
    docs = read_task_docs(cfg_path)
    assert [(d["task"], d["index"], d["context"], tuple(d["choices"]), d["gold"]) for d in docs] == [
        (p.task, p.index, p.context, p.choices, p.gold) for p in TRICKY
    ]


def test_lm_eval_reads_the_task_as_written(tmp_path):
    """lm-eval's own view of each doc (Jinja templates, literal_eval of the choices) is the prompt."""
    from lm_eval.tasks import TaskManager

    write_task(TRICKY, tmp_path, "tricky_task")
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)
    task = tm.load(["tricky_task"])["tasks"]["tricky_task"]
    docs = list(task.test_docs())
    assert [task.doc_to_text(d) for d in docs] == [p.context for p in TRICKY]
    assert [task.doc_to_choice(d) for d in docs] == [list(p.choices) for p in TRICKY]
    assert [task.doc_to_target(d) for d in docs] == [p.gold for p in TRICKY]


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        ([], ValueError, "at least one Prompt"),
        (TRICKY[0], TypeError, "wrap one Prompt in a list"),
        ("Answer:", TypeError, "list of Prompt"),
        ([TRICKY[0], ("ctx", ("a", "b"), 0)], TypeError, r"prompts\[1\] must be a Prompt"),
        ([llm_eval.Prompt("t", 0, "c", ("a", "b"), 2)], ValueError, "gold in 0..1"),
        ([llm_eval.Prompt("t", 0, "c", ("a",), 0)], ValueError, ">= 2 non-empty choices"),
        ([llm_eval.Prompt("t", 0, "c", ("a", ""), 0)], ValueError, ">= 2 non-empty choices"),
        ([llm_eval.Prompt("t", 0, "c", ("a", 1), 0)], TypeError, "str choices"),
        ([llm_eval.Prompt("t", 0, "c", ("a", "b"), "0")], TypeError, r"prompts\[0\].gold must be an int"),
    ],
)
def test_bad_prompts(tmp_path, bad, exc, match):
    with pytest.raises(exc, match=match):
        write_task(bad, tmp_path)
    with pytest.raises(exc, match=match):
        run_lm_eval(None, None, bad)  # checked before any model is touched


def test_bad_task_name_and_batch_size(tmp_path):
    with pytest.raises(ValueError, match="task_name must be letters"):
        write_task(TRICKY, tmp_path, "my task")
    with pytest.raises(TypeError, match="task_name must be a str"):
        write_task(TRICKY, tmp_path, 3)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        run_lm_eval(None, None, TRICKY, batch_size=0)
    assert not list(tmp_path.iterdir())  # nothing written for bad input


def test_bad_model_or_tokenizer(tok):
    with pytest.raises(TypeError, match="model must be a transformers PreTrainedModel"):
        run_lm_eval(torch.nn.Linear(2, 2), tok, TRICKY)
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        from course_lib.model import build_model, make_config

        run_lm_eval(build_model(make_config("tiny")), object(), TRICKY)


def test_lls_are_per_choice_numbers(scored):
    _, _, ref = scored
    flat = np.concatenate([np.asarray(x) for x in ref["lls"]])
    assert flat.dtype == np.float64 and (flat < 0).all()
