"""Model cards (Mitchell et al. 2019) written with the Hugging Face Hub's own ``ModelCard``.

A model card is the README of a shared model: what it is for, what it was trained on, how well
it works *with uncertainty*, what bias checks found, and what it must not be used for. The Hub
reads its YAML header (licence, datasets, base model, task) to index and filter models, and
shows the markdown body on the model page. ``model_card`` builds both from plain Python values
and refuses cards that would mislead (an estimate outside its own CI, no limitations, no licence).

Example
-------
>>> card = model_card("demo", "A demo.", license="mit", intended_use="Teaching.",
...                   training_data="None.", metrics={"accuracy": (0.8, 0.75, 0.85)},
...                   limitations=["Toy model."])
>>> card.data.license
'mit'
>>> "0.800 (95% CI 0.750 to 0.850)" in card.content
True
"""

from __future__ import annotations

__all__ = ["format_estimate", "model_card"]

REQUIRED_SECTIONS = (
    "Intended use",
    "Out-of-scope use",
    "Training data",
    "Evaluation",
    "Bias evaluation",
    "Limitations",
    "Licence",
)


def format_estimate(
    value: float, ci_low: float, ci_high: float, confidence: float = 0.95, digits: int = 3
) -> str:
    """``"0.832 (95% CI 0.812 to 0.851)"``; raises ValueError if value is outside its CI.

    Examples
    --------
    >>> format_estimate(0.5, 0.4, 0.6)
    '0.500 (95% CI 0.400 to 0.600)'
    """
    try:
        value, ci_low, ci_high = float(value), float(ci_low), float(ci_high)
    except (TypeError, ValueError):
        raise TypeError(
            f"value, ci_low and ci_high must be numbers, got {value!r}, {ci_low!r}, {ci_high!r}"
        ) from None
    if not ci_low <= value <= ci_high:
        raise ValueError(
            f"the estimate {value} lies outside its CI [{ci_low}, {ci_high}]: check "
            "the order (value, ci_low, ci_high)"
        )
    return f"{value:.{digits}f} ({confidence:.0%} CI {ci_low:.{digits}f} to {ci_high:.{digits}f})"


def _estimates(items, arg: str, confidence: float, digits: int = 3) -> list[str]:
    if not isinstance(items, dict):
        raise TypeError(f"{arg} must be a dict name -> (value, ci_low, ci_high), got {type(items).__name__}")
    lines = []
    for name, est in items.items():
        if isinstance(est, str):  # a result stated in words
            lines.append(f"| {name} | {est} |")
            continue
        if not isinstance(est, (tuple, list)) or len(est) != 3:
            raise ValueError(f"{arg}[{name!r}] must be (value, ci_low, ci_high) or a str, got {est!r}")
        lines.append(f"| {name} | {format_estimate(*est, confidence=confidence, digits=digits)} |")
    return lines


def model_card(
    model_name: str,
    summary: str,
    license: str,
    intended_use: str,
    training_data: str,
    metrics: dict,
    limitations,
    bias_results: dict | None = None,
    out_of_scope: str = "Any decision about people (hiring, lending, moderation, "
    "health) and any language other than English.",
    base_model: str | None = None,
    datasets=None,
    language: str = "en",
    pipeline_tag: str | None = None,
    tags=(),
    compute: str | None = None,
    how_to_load: str | None = None,
    confidence: float = 0.95,
    digits: int = 3,
):
    """A ``huggingface_hub.ModelCard``: YAML metadata plus a markdown body with every section.

    Parameters
    ----------
    model_name, summary : title and one-paragraph description
    license : SPDX-style id used by the Hub ("apache-2.0", "mit", "openrail", "llama3", ...)
    intended_use, out_of_scope, training_data : prose
    metrics : dict name -> (value, ci_low, ci_high) (or a str), e.g. test accuracy
    bias_results : dict name -> (value, ci_low, ci_high) (or a str) from the bias checks
    limitations : non-empty list of str
    base_model, datasets, language, pipeline_tag, tags : Hub metadata
    compute : str, training compute/energy estimate
    how_to_load : str, a code snippet
    confidence : the CIs' level (for the labels only)
    digits : decimals shown for every estimate (use more for small gaps)

    Returns
    -------
    huggingface_hub.ModelCard (``.content`` is the text, ``.save(path)`` writes README.md)
    """
    from huggingface_hub import ModelCard, ModelCardData

    for arg, val in (
        ("model_name", model_name),
        ("summary", summary),
        ("license", license),
        ("intended_use", intended_use),
        ("training_data", training_data),
    ):
        if not isinstance(val, str) or not val.strip():
            raise ValueError(f"{arg} must be a non-empty str, got {val!r}")
    if isinstance(limitations, str) or not limitations:
        raise ValueError(
            "limitations must be a non-empty list of str: every model has some, "
            f"and a card without them misleads; got {limitations!r}"
        )
    if not metrics:
        raise ValueError("metrics is empty: report at least one evaluation result with its CI")
    data = ModelCardData(
        license=license.strip(),
        language=language,
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        datasets=list(datasets) if datasets else None,
        tags=list(tags) if tags else None,
        model_name=model_name,
    )
    level = f"{confidence:.0%}"
    body = [f"# {model_name}", "", summary.strip(), ""]
    if base_model:
        body += [f"Fine-tuned from `{base_model}`.", ""]
    body += [
        "## Intended use",
        "",
        intended_use.strip(),
        "",
        "## Out-of-scope use",
        "",
        out_of_scope.strip(),
        "",
        "## Training data",
        "",
        training_data.strip(),
        "",
        "## Evaluation",
        "",
        f"Estimates with {level} confidence intervals.",
        "",
        "| metric | estimate |",
        "|---|---|",
        *_estimates(metrics, "metrics", confidence, digits),
        "",
    ]
    body += ["## Bias evaluation", ""]
    if bias_results:
        body += [
            "| probe | estimate |",
            "|---|---|",
            *_estimates(bias_results, "bias_results", confidence, digits),
            "",
            "A CI that includes 0 means the probe could not detect a gap of that size with "
            "this many examples; it does not show that the model is fair.",
            "",
        ]
    else:
        body += ["No bias evaluation was run. Treat the model as unaudited.", ""]
    body += ["## Limitations", "", *[f"- {str(x).strip()}" for x in limitations], ""]
    if compute:
        body += ["## Compute and environmental cost", "", compute.strip(), ""]
    if how_to_load:
        body += ["## How to load", "", "```python", how_to_load.strip(), "```", ""]
    body += ["## Licence", "", f"`{license.strip()}`: check what it permits before reuse.", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
