"""Score the course's prompts with EleutherAI's lm-evaluation-harness, offline, to check our scorer.

:mod:`course_lib.llm_eval` re-implements the harness's multiple-choice scoring so that a learner
can read every step. This module runs the **real** harness (``lm_eval``) on the very same
:class:`~course_lib.llm_eval.Prompt` objects, so the two can be compared item by item: same
contexts, same choices, same gold indices, same model object.

How: :func:`write_task` turns the prompts into a local lm-eval task, i.e. a JSONL file (one doc
per prompt: ``context``, ``choices``, ``gold``, ``index``, ``task``) and a YAML task config that
reads it through ``datasets``' json builder (``dataset_path: json``, ``dataset_kwargs:
data_files:``); no hub, no network. :func:`run_lm_eval` wraps the already-loaded model and
tokenizer in lm-eval's ``HFLM``, runs ``lm_eval.simple_evaluate`` on that task with
``log_samples=True`` and reads each choice's log-likelihood back from the logged samples.

The task file says what the harness does with a doc::

    output_type: multiple_choice      one loglikelihood request per choice
    doc_to_text: "{{context}}"        the context, verbatim
    doc_to_choice: "{{choices}}"      the answer strings
    doc_to_target: "{{gold}}"         index of the correct one
    target_delimiter: " "             each request is (context, " " + choice)
    metric_list: acc, acc_norm, acc_bytes (mean over docs, higher is better)

which is exactly how :func:`~course_lib.llm_eval.score_multiple_choice` builds its requests.

Example (prose, since a harness run takes a few seconds)::

    from course_lib import llm_eval
    from course_lib.data import load_smollm2
    tok, model = load_smollm2()
    prompts = llm_eval.build_prompts(llm_eval.load_benchmark("piqa", n=20))
    ref = run_lm_eval(model, tok, prompts)          # the harness
    ours = llm_eval.score_multiple_choice(model, tok, prompts)
    max(abs(a - b) for x, y in zip(ref["lls"], ours["lls"]) for a, b in zip(x, y))  # ~1e-6 nats

Writing a task is quick and shows what lands on disk:

>>> import tempfile
>>> from course_lib.llm_eval import Prompt
>>> p = [Prompt("piqa", 7, "Question: How do I open a jar?\\nAnswer:", ("twist the lid", "shake it"), 0)]
>>> with tempfile.TemporaryDirectory() as d:
...     cfg = write_task(p, d, "tiny_piqa")
...     docs = read_task_docs(cfg)
>>> cfg.name, docs[0]["choices"], docs[0]["gold"]
('tiny_piqa.yaml', ['twist the lid', 'shake it'], 0)
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ._validation import check_int, check_positive_int, check_str
from .llm_eval import Prompt

__all__ = ["TASK_METRICS", "write_task", "read_task_docs", "run_lm_eval"]

TASK_METRICS = ("acc", "acc_norm", "acc_bytes")
_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _check_prompts(prompts) -> list[Prompt]:
    if isinstance(prompts, Prompt):
        raise TypeError(
            "prompts must be a list of Prompt (from llm_eval.build_prompts); wrap one Prompt in a list"
        )
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(
            f"prompts must be a list of Prompt (from llm_eval.build_prompts), got {type(prompts).__name__}"
        )
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must hold at least one Prompt, got an empty list")
    for i, p in enumerate(prompts):
        if not isinstance(p, Prompt):
            raise TypeError(
                f"prompts[{i}] must be a Prompt (from llm_eval.build_prompts), got {type(p).__name__}"
            )
        if not isinstance(p.context, str) or not all(isinstance(c, str) for c in p.choices):
            raise TypeError(f"prompts[{i}] must have a str context and str choices, got {p!r}")
        gold = check_int(f"prompts[{i}].gold", p.gold)
        if len(p.choices) < 2 or not all(p.choices) or gold not in range(len(p.choices)):
            raise ValueError(
                f"prompts[{i}] must have >= 2 non-empty choices and gold in 0..{len(p.choices) - 1}, "
                f"got choices {p.choices!r} and gold={p.gold!r}"
            )
    return prompts


def _check_task_name(task_name) -> str:
    check_str("task_name", task_name)
    if not _TASK_NAME.match(task_name):
        raise ValueError(
            f"task_name must be letters, digits and '_' starting with a letter (it names files and "
            f"the lm-eval task), got {task_name!r}"
        )
    return task_name


def write_task(prompts: Sequence[Prompt], folder, task_name: str = "course_task") -> Path:
    """Write ``prompts`` as a local lm-evaluation-harness task; return the YAML config's path.

    Parameters
    ----------
    prompts : list of :class:`~course_lib.llm_eval.Prompt` (N >= 1), in the order to score them
    folder : str or Path, created if missing; gets ``<task_name>.yaml`` and ``<task_name>.jsonl``
    task_name : str, letters/digits/underscores: the name to pass to ``lm_eval`` (``tasks=[...]``)

    Returns
    -------
    Path of ``<folder>/<task_name>.yaml``. The JSONL beside it holds one doc per prompt, in order
    (lm-eval's ``doc_id`` = position in the list): ``{"task", "index", "context", "choices",
    "gold"}``. The YAML names the JSONL by absolute path and keeps the ``datasets`` cache in
    ``<folder>/hf_datasets_cache``, so nothing is read from or written to the hub or
    ``~/.cache/huggingface``.
    """
    import yaml

    prompts = _check_prompts(prompts)
    task_name = _check_task_name(task_name)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data_path = folder / f"{task_name}.jsonl"
    with open(data_path, "w", encoding="utf-8") as f:
        for p in prompts:
            doc = {
                "task": p.task,
                "index": int(p.index),
                "context": p.context,
                "choices": list(p.choices),
                "gold": int(p.gold),
            }
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    config = {
        "task": task_name,
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {"test": str(data_path)},
            "cache_dir": str(folder / "hf_datasets_cache"),
        },
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": " ",
        "num_fewshot": 0,
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in TASK_METRICS],
        "metadata": {"version": 1.0, "written_by": "course_lib.lm_eval_tasks.write_task"},
    }
    yaml_path = folder / f"{task_name}.yaml"
    yaml_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return yaml_path


def read_task_docs(yaml_path) -> list[dict]:
    """The docs a task written by :func:`write_task` holds, in order (one dict per prompt)."""
    import yaml

    config = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8"))
    data_path = Path(config["dataset_kwargs"]["data_files"][config["test_split"]])
    with open(data_path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@contextlib.contextmanager
def _quiet():
    """lm-eval, datasets and transformers log a page per run; keep errors only, then restore.

    lm-eval also draws an unconditional tqdm bar while it builds the requests
    (``lm_eval.api.task.tqdm``); it is swapped for a disabled one for the duration."""
    import functools

    import datasets
    import lm_eval.api.task as lm_eval_task

    names = ("lm_eval", "datasets", "transformers", "accelerate")
    levels = {n: logging.getLogger(n).level for n in names}
    bars = datasets.utils.logging.is_progress_bar_enabled()
    task_tqdm = lm_eval_task.tqdm
    datasets.utils.logging.disable_progress_bar()
    lm_eval_task.tqdm = functools.partial(task_tqdm, disable=True)
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        lm_eval_task.tqdm = task_tqdm
        if bars:
            datasets.utils.logging.enable_progress_bar()


def run_lm_eval(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    task_name: str = "course_task",
    batch_size: int = 16,
    folder=None,
    progress: bool = False,
) -> dict:
    """Score ``prompts`` with lm-evaluation-harness (``HFLM`` + ``simple_evaluate``), offline.

    Parameters
    ----------
    model : a transformers ``*ForCausalLM`` already loaded (any device; left in the train/eval
        mode it was in; the global random generators are not touched)
    tokenizer : its transformers tokenizer (needs a pad token, or lm-eval adds one to it)
    prompts : list of :class:`~course_lib.llm_eval.Prompt` (N >= 1)
    task_name : str, name of the temporary lm-eval task
    batch_size : int, sequences per forward pass (lm-eval's own batching)
    folder : where to write the task (see :func:`write_task`); None: a temporary folder, removed
    progress : bool, show lm-eval's tqdm bar over requests

    Returns
    -------
    dict with
      ``lls``: list of N lists of floats, each choice's summed log-likelihood in nats, in the
      prompts' order (choices in their order);
      ``acc``, ``acc_norm``, ``acc_bytes``: float, lm-eval's means over the N items;
      ``per_item``: pandas.DataFrame, N rows: task, index, gold; pred, pred_norm, pred_bytes
      (argmax of the lls, of lls per character, per byte: lm-eval's rules, which it does not
      log); acc, acc_norm, acc_bytes (0/1, as lm-eval scored them);
      ``seconds``: float, wall time of ``simple_evaluate`` (task loading included);
      ``lm_eval_version``: str.
    """
    import lm_eval
    import numpy as np
    import pandas as pd
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    prompts = _check_prompts(prompts)
    task_name = _check_task_name(task_name)
    batch_size = check_positive_int("batch_size", batch_size)
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"model must be a transformers PreTrainedModel (lm-eval's HFLM wraps one), got {type(model).__name__}"
        )
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")

    class _HFLM(HFLM):  # lm-eval's model, with its progress bar under our control
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not progress)

    was_training = getattr(model, "training", False)
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="lm_eval_task_"))
        write_task(prompts, folder, task_name)
        stack.enter_context(_quiet())
        try:
            lm = _HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            t0 = time.perf_counter()
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[task_name],
                task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                log_samples=True,
                bootstrap_iters=0,  # no stderr: intervals are llm_eval.accuracy_with_ci's job
                num_fewshot=None,  # the task's own 0: few-shot examples are already in the contexts
                # zero-shot log-likelihoods use no randomness: leave the caller's global RNGs alone
                random_seed=None,
                numpy_random_seed=None,
                torch_random_seed=None,
            )
            seconds = time.perf_counter() - t0
        finally:
            model.train(was_training)

    samples = sorted(out["samples"][task_name], key=lambda s: s["doc_id"])
    if [s["doc_id"] for s in samples] != list(range(len(prompts))):
        raise RuntimeError(f"lm-eval returned {len(samples)} samples for {len(prompts)} prompts")
    lls, rows = [], []
    for p, s in zip(prompts, samples):
        if s["doc"]["context"] != p.context or list(s["doc"]["choices"]) != list(p.choices):
            raise RuntimeError(
                f"lm-eval's doc {s['doc_id']} is not prompt {s['doc_id']} (task file out of date?)"
            )
        item = np.array([float(ll) for ll, _greedy in s["filtered_resps"]])
        lls.append(item.tolist())
        # lm-eval logs acc/acc_norm/acc_bytes but not the argmaxes: recompute them with its rule
        # (api/task.py process_results: ll / len(choice) in characters, resp. UTF-8 bytes)
        chars = np.array([len(c) for c in p.choices], dtype=np.float64)
        nbytes = np.array([len(c.encode("utf-8")) for c in p.choices], dtype=np.float64)
        rows.append(
            {
                "task": p.task,
                "index": p.index,
                "gold": p.gold,
                "pred": int(np.argmax(item)),
                "pred_norm": int(np.argmax(item / chars)),
                "pred_bytes": int(np.argmax(item / nbytes)),
                **{m: int(s[m]) for m in TASK_METRICS},
            }
        )
    res = out["results"][task_name]
    return {
        "lls": lls,
        **{m: float(res[f"{m},none"]) for m in TASK_METRICS},
        "per_item": pd.DataFrame(rows),
        "seconds": seconds,
        "lm_eval_version": lm_eval.__version__,
    }
