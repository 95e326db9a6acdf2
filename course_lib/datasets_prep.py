"""Preparing a text corpus for pretraining: clean, deduplicate, scrub, check splits, tokenize, pack.

In the order a pipeline runs them::

    normalize_text(text)                   Unicode NFKC, invisible characters, quotes, whitespace
    exact_duplicate_groups(texts)          identical documents (after normalisation), by hash
    shingles / minhash_signatures          a small fingerprint per document that estimates Jaccard
    near_duplicate_pairs(texts)            MinHash + LSH banding: near-copies without comparing all pairs
    duplicate_clusters / keep_first        turn pairs into groups and keep one document per group
    find_pii / scrub_pii                   e-mail addresses, phone numbers, IPv4 addresses -> placeholders
    ngram_overlap(train, val)              how much of validation is already in train (leakage)
    encode_bytes / pack_blocks             UTF-8 bytes (the course GPT's vocabulary of 256) into blocks
    tokenize_and_pack(dataset, ...)        the two ``Dataset.map`` calls (batched) that do it at scale

All functions are plain Python/NumPy and deterministic (hashes are ``blake2b``, never Python's
salted ``hash``), so a seeded run always drops the same documents.

Example
-------
>>> normalize_text("\\u201cHello,\\u00a0world\\u201d \\u200b")
'"Hello, world"'
>>> scrub_pii("mail me at ann@example.org or 555-867-5309")
'mail me at <EMAIL> or <PHONE>'
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ._validation import check_int, check_positive_int, check_str, check_texts

__all__ = [
    "normalize_text",
    "exact_duplicate_groups",
    "shingles",
    "jaccard",
    "minhash_signatures",
    "minhash_similarity",
    "lsh_candidate_pairs",
    "near_duplicate_pairs",
    "duplicate_clusters",
    "keep_first",
    "PII_PATTERNS",
    "find_pii",
    "scrub_pii",
    "ngram_overlap",
    "encode_bytes",
    "decode_bytes",
    "pack_blocks",
    "tokenize_and_pack",
]


# ----------------------------------------------------------------------------------------------
# Cleaning
# ----------------------------------------------------------------------------------------------

# Typographic punctuation that NFKC leaves alone, mapped to ASCII so "it's" and "it’s" are one word.
_ASCII_PUNCT = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2212": "-",
    }
)
# Zero-width and BOM characters: invisible, but they split words for a tokenizer.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
# Unicode category Cc (C0/C1 controls and DEL) except tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TAG = re.compile(r"<[^>\n]{1,200}>")
_SPACES = re.compile(r"[ \t]{2,}|\t")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(
    text: str, form: str = "NFKC", ascii_punctuation: bool = True, strip_html: bool = True
) -> str:
    """Normalise one document so that text that *looks* the same *is* the same.

    Steps: HTML entities unescaped and tags removed (``strip_html``); Unicode normalisation
    (``form``: NFKC folds full-width letters, ligatures like "ﬁ" and no-break spaces into their
    plain forms; NFC only composes accents); invisible characters (zero-width spaces, BOM, soft
    hyphens) and control characters other than ``\\n``/``\\t`` removed; curly quotes and dashes
    mapped to ASCII (``ascii_punctuation``; the em dash is kept); ``\\r\\n``/``\\r`` become
    ``\\n``; runs of spaces collapse to one, trailing spaces and more than one blank line go.

    Parameters
    ----------
    text : str
    form : {"NFKC", "NFC", "NFKD", "NFD", None}
        Unicode normal form (None skips this step).
    ascii_punctuation, strip_html : bool

    Returns
    -------
    str (stripped of leading/trailing whitespace).

    Examples
    --------
    >>> normalize_text("\\uff2d\\uff41\\uff43\\uff42\\uff45\\uff54\\uff48 &amp; <b>Lady</b>\\r\\n")
    'Macbeth & Lady'
    """
    check_str("text", text)
    if form not in ("NFKC", "NFC", "NFKD", "NFD", None):
        raise ValueError(f"form must be 'NFKC', 'NFC', 'NFKD', 'NFD' or None, got {form!r}")
    if strip_html:
        text = html.unescape(_TAG.sub("", text))
    if form is not None:
        text = unicodedata.normalize(form, text)
    text = text.translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if ascii_punctuation:
        text = text.translate(_ASCII_PUNCT)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


# ----------------------------------------------------------------------------------------------
# Exact and near-duplicate detection
# ----------------------------------------------------------------------------------------------


def exact_duplicate_groups(
    texts: Sequence[str], key: Callable[[str], str] | None = normalize_text
) -> list[list[int]]:
    """Groups of indices whose texts are identical after ``key`` (default :func:`normalize_text`).

    Hashing (sha256) makes this one pass over the corpus, whatever its size.

    Returns
    -------
    list of lists of indices (ascending), only groups with 2+ members, ordered by first index.

    Examples
    --------
    >>> exact_duplicate_groups(["To be.", "to be.", "To  be.", "Not to be."])
    [[0, 2]]
    """
    texts = check_texts("texts", texts)
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable str -> str or None, got {type(key).__name__}")
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        groups[hashlib.sha256((key(t) if key else t).encode("utf-8")).digest()].append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


_WORD = re.compile(r"\w+")


def shingles(text: str, k: int = 5, unit: str = "word") -> set[str]:
    """The set of ``k``-shingles of ``text``: every run of ``k`` consecutive words (or characters).

    Words are lower-cased ``\\w+`` runs, so punctuation and case do not matter. A text shorter
    than ``k`` units gives one shingle (the whole text), an empty text none.

    Examples
    --------
    >>> sorted(shingles("To be, or not to be", k=3))
    ['be or not', 'not to be', 'or not to', 'to be or']
    """
    check_str("text", text)
    check_positive_int("k", k)
    if unit == "word":
        units = _WORD.findall(text.lower())
        joined = [" ".join(units[i : i + k]) for i in range(max(len(units) - k + 1, 1))]
        return set(joined) if units else set()
    if unit == "char":
        return {text[i : i + k] for i in range(max(len(text) - k + 1, 1))} if text else set()
    raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity ``|a & b| / |a | b|`` (1.0 for two empty sets)."""
    if not isinstance(a, (set, frozenset)) or not isinstance(b, (set, frozenset)):
        raise TypeError(f"a and b must be sets, got {type(a).__name__} and {type(b).__name__}")
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


_MERSENNE = np.uint64((1 << 31) - 1)  # a prime: (a x + b) mod p is a universal hash on [0, p)


def _hash32(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=4).digest(), "little")


def minhash_signatures(
    texts: Sequence[str], num_perm: int = 128, k: int = 5, unit: str = "word", seed: int = 0
) -> np.ndarray:
    """MinHash signatures: ``num_perm`` numbers per document whose agreement estimates Jaccard.

    Each of ``num_perm`` random hash functions ``h(x) = (a x + b) mod p`` orders all shingles at
    random; a document's signature keeps the minimum under each. Two documents share that
    minimum with probability exactly their Jaccard similarity (the minimum of the union lands in
    the intersection), so the fraction of equal entries is an unbiased estimate with standard
    error ``sqrt(J (1 - J) / num_perm)``.

    Parameters
    ----------
    texts : list of str
    num_perm : int
        Signature length (more = more precise, slower).
    k, unit : see :func:`shingles`.
    seed : int
        Seeds the hash functions (same seed, same signatures).

    Returns
    -------
    np.ndarray of uint64, shape ``(len(texts), num_perm)``. An empty document's row is all
    ``2**31 - 1`` (it matches only other empty documents).
    """
    texts = check_texts("texts", texts)
    check_positive_int("num_perm", num_perm)
    rng = np.random.default_rng(seed)
    # x, a, b < p = 2**31 - 1 keep a*x + b below 2**63: exact uint64 arithmetic. (a and b must
    # range over all of [0, p): with a small p-to-x ratio, (a x + b) mod p rarely wraps around,
    # every hash function orders shingles almost alike, and unrelated documents look similar.)
    a = rng.integers(1, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    b = rng.integers(0, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    sigs = np.full((len(texts), num_perm), _MERSENNE, dtype=np.uint64)
    for i, t in enumerate(texts):
        sh = shingles(t, k=k, unit=unit)
        if not sh:
            continue
        x = np.fromiter((_hash32(s) for s in sh), dtype=np.uint64, count=len(sh)) % _MERSENNE
        sigs[i] = ((x[:, None] * a[None, :] + b[None, :]) % _MERSENNE).min(axis=0)
    return sigs


def minhash_similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity: the fraction of positions where two signatures agree."""
    sig_a, sig_b = np.asarray(sig_a), np.asarray(sig_b)
    if sig_a.shape != sig_b.shape or sig_a.ndim != 1:
        raise ValueError(
            f"sig_a and sig_b must be 1-D signatures of the same length, got shapes "
            f"{sig_a.shape} and {sig_b.shape}"
        )
    return float(np.mean(sig_a == sig_b))


def lsh_candidate_pairs(signatures: np.ndarray, bands: int) -> set[tuple[int, int]]:
    """Candidate pairs by locality-sensitive hashing: documents that agree on a whole band.

    The signature is cut into ``bands`` bands of ``r = num_perm / bands`` rows. Two documents
    become candidates if *any* band matches exactly, which happens with probability
    ``1 - (1 - J**r)**bands``: an S-curve that is steep around ``J ~ (1/bands)**(1/r)``. Only
    documents in the same bucket are compared, so the cost grows with the corpus, not its square.

    Returns
    -------
    set of ``(i, j)`` with ``i < j``.
    """
    signatures = np.asarray(signatures)
    if signatures.ndim != 2:
        raise ValueError(f"signatures must be 2-D (documents, num_perm), got shape {signatures.shape}")
    check_positive_int("bands", bands)
    n, num_perm = signatures.shape
    if num_perm % bands:
        raise ValueError(f"bands must divide num_perm={num_perm}, got bands={bands}")
    rows = num_perm // bands
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        for i in range(n):
            buckets[block[i].tobytes()].append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


def near_duplicate_pairs(
    texts: Sequence[str],
    threshold: float = 0.7,
    num_perm: int = 128,
    bands: int = 32,
    k: int = 5,
    unit: str = "word",
    seed: int = 0,
    signatures: np.ndarray | None = None,
) -> list[tuple[int, int, float]]:
    """Pairs of near-duplicate documents: MinHash + LSH candidates, kept if similar enough.

    Parameters
    ----------
    texts : list of str
    threshold : float in (0, 1]
        Keep a candidate pair if its estimated Jaccard similarity is ``>= threshold``.
    num_perm, bands : int
        Signature length and LSH bands (``bands`` divides ``num_perm``). The defaults (128, 32:
        4 rows per band) catch pairs with ``J >= 0.7`` with probability > 0.999.
    k, unit, seed : see :func:`minhash_signatures`.
    signatures : array, optional
        Precomputed :func:`minhash_signatures` of ``texts`` (skips hashing).

    Returns
    -------
    list of ``(i, j, estimated_jaccard)`` with ``i < j``, sorted by ``(i, j)``.

    Examples
    --------
    >>> docs = ["the quick brown fox jumps over the lazy dog today",
    ...         "the quick brown fox jumps over the lazy dog today!",
    ...         "an entirely different sentence about the weather in spring"]
    >>> [(i, j) for i, j, _ in near_duplicate_pairs(docs, k=3)]
    [(0, 1)]
    """
    texts = check_texts("texts", texts)
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if signatures is None:
        signatures = minhash_signatures(texts, num_perm=num_perm, k=k, unit=unit, seed=seed)
    elif np.asarray(signatures).shape[0] != len(texts):
        raise ValueError(
            f"signatures must have one row per text ({len(texts)}), got shape {np.asarray(signatures).shape}"
        )
    out = []
    for i, j in sorted(lsh_candidate_pairs(signatures, bands)):
        sim = minhash_similarity(signatures[i], signatures[j])
        if sim >= threshold:
            out.append((i, j, sim))
    return out


def duplicate_clusters(n: int, pairs: Iterable[Sequence[int]]) -> list[list[int]]:
    """Connected components of the duplicate graph (union-find), only those with 2+ members.

    ``pairs`` may be ``(i, j)`` or ``(i, j, similarity)`` tuples, or lists of indices (groups).

    Examples
    --------
    >>> duplicate_clusters(5, [(0, 3), (3, 4)])
    [[0, 3, 4]]
    """
    check_int("n", n, minimum=0)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in pairs:
        # indices are ints; a similarity (float) at the end of a pair is skipped
        members = [int(i) for i in p if isinstance(i, (int, np.integer)) and not isinstance(i, bool)]
        for i in members:
            if not 0 <= i < n:
                raise ValueError(f"index {i} in pairs is out of range for n={n}")
        for i in members[1:]:
            parent[find(i)] = find(members[0])
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def keep_first(n: int, clusters: Iterable[Sequence[int]]) -> list[int]:
    """Indices to keep: everything except the 2nd, 3rd, ... member of each cluster.

    >>> keep_first(5, [[0, 3, 4]])
    [0, 1, 2]
    """
    check_int("n", n, minimum=0)
    drop = {i for c in clusters for i in sorted(c)[1:]}
    return [i for i in range(n) if i not in drop]


# ----------------------------------------------------------------------------------------------
# Personal data
# ----------------------------------------------------------------------------------------------

PII_PATTERNS: dict[str, re.Pattern] = {
    # local@domain.tld; the local part allows the usual dots, pluses and dashes
    "email": re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    # a dotted quad of numbers 0-255
    "ip": re.compile(
        r"(?=\d)(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}"
        r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\d|\.\d)"
    ),
    # optional "+country", optional "(area)", then digit groups joined by single spaces, dots or
    # dashes, optional extension (no nested quantifiers: no catastrophic backtracking). find_pii
    # keeps runs with 7-15 digits that are not dates or decimals. Catches "+44 20 7946 0958",
    # "(555) 555-5555", "05 62 04 87 64", "555.555.5555x123"; also (false positives) ISBNs and
    # runs of years such as "1564 1616".
    "phone": re.compile(
        r"(?=[\d+(])(?<![\w+(.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d+(?:[ .-]\d+)*"
        r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w.-]\w|\w)"
    ),
}
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")


def _looks_like_phone(s: str) -> bool:
    main = re.split(r"\s?(?:x|ext\.?)\s?(?=\d+$)", s)[0]  # without the extension
    n_digits = sum(ch.isdigit() for ch in main)
    if "." in main and not re.search(r"[ ()-]", main) and main.count(".") < 2:
        return False  # a decimal number such as 3.14159265
    return 7 <= n_digits <= 15 and not _DATE.fullmatch(main)


_PLACEHOLDER = {"email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>"}


def find_pii(text: str, kinds: Sequence[str] = ("email", "ip", "phone")) -> list[tuple[str, int, int, str]]:
    """Personal data found by :data:`PII_PATTERNS`: ``(kind, start, end, matched_text)``.

    Regular expressions are a baseline: they find well-formed e-mails and phone numbers, miss
    obfuscated ones ("ann at example dot org") and cannot find names or addresses (that needs a
    named-entity model). Matches do not overlap; earlier kinds win.

    Examples
    --------
    >>> find_pii("write to ann@example.org")
    [('email', 9, 24, 'ann@example.org')]
    """
    check_str("text", text)
    unknown = set(kinds) - set(PII_PATTERNS)
    if isinstance(kinds, str) or unknown:
        raise ValueError(f"kinds must be a list drawn from {sorted(PII_PATTERNS)}, got {kinds!r}")
    found: list[tuple[str, int, int, str]] = []
    taken = np.zeros(len(text) + 1, dtype=bool)
    for kind in kinds:
        for m in PII_PATTERNS[kind].finditer(text):
            s, e = m.span()
            if kind == "phone" and not _looks_like_phone(m.group()):
                continue
            if not taken[s:e].any():
                taken[s:e] = True
                found.append((kind, s, e, m.group()))
    return sorted(found, key=lambda f: f[1])


def scrub_pii(
    text: str,
    kinds: Sequence[str] = ("email", "ip", "phone"),
    placeholders: dict[str, str] | None = None,
    return_counts: bool = False,
):
    """Replace personal data with placeholders (``<EMAIL>``, ``<IP>``, ``<PHONE>``).

    Placeholders, rather than deletion, keep the sentence grammatical and let the model learn
    *that* an address goes here without learning *whose* it is.

    Returns
    -------
    str, or ``(str, Counter)`` of replacements per kind if ``return_counts``.
    """
    placeholders = {**_PLACEHOLDER, **(placeholders or {})}
    found = find_pii(text, kinds)
    out, last = [], 0
    for kind, s, e, _ in found:
        out.append(text[last:s])
        out.append(placeholders[kind])
        last = e
    out.append(text[last:])
    scrubbed = "".join(out)
    return (scrubbed, Counter(k for k, *_ in found)) if return_counts else scrubbed


# ----------------------------------------------------------------------------------------------
# Leakage between splits
# ----------------------------------------------------------------------------------------------


def ngram_overlap(train_texts: Sequence[str], val_texts: Sequence[str], n: int = 8) -> float:
    """Fraction of validation word ``n``-grams that also occur in the training texts.

    A high value means the model can score well on validation by remembering training text: the
    validation loss then measures memory, not generalisation (the GPT-3 paper used 13-grams to
    flag contaminated benchmarks).

    Returns
    -------
    float in [0, 1] (0.0 if the validation texts have no n-gram).
    """
    train_texts = check_texts("train_texts", train_texts)
    val_texts = check_texts("val_texts", val_texts)
    check_positive_int("n", n)
    seen: set[str] = set()
    for t in train_texts:
        seen |= shingles(t, k=n)
    total = hit = 0
    for t in val_texts:
        words = _WORD.findall(t.lower())
        for i in range(len(words) - n + 1):
            total += 1
            hit += " ".join(words[i : i + n]) in seen
    return hit / total if total else 0.0


# ----------------------------------------------------------------------------------------------
# Tokenize and pack
# ----------------------------------------------------------------------------------------------


def encode_bytes(text: str) -> list[int]:
    """UTF-8 bytes of ``text`` as ints in ``0..255``: the course GPT's byte-level tokenizer.

    >>> encode_bytes("Hi—")
    [72, 105, 226, 128, 148]
    """
    check_str("text", text)
    return list(text.encode("utf-8"))


def decode_bytes(ids: Iterable[int]) -> str:
    """Inverse of :func:`encode_bytes` (invalid UTF-8, e.g. a cut multi-byte char, becomes U+FFFD)."""
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def pack_blocks(
    sequences: Sequence[Sequence[int]],
    block_size: int,
    separator_id: int | None = None,
    drop_last: bool = True,
) -> list[list[int]]:
    """Concatenate token sequences and cut them into blocks of exactly ``block_size`` tokens.

    Packing wastes no compute on padding: every position of every block is a real next-token
    prediction. Documents are joined end to end (with ``separator_id`` between them, e.g. an
    end-of-text id, so the model can learn where one stops), and a block may span two documents.
    The remainder shorter than ``block_size`` is dropped (``drop_last``) or kept as a short block.

    Returns
    -------
    list of blocks (lists of int), each ``block_size`` long (except possibly the last).

    Examples
    --------
    >>> pack_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4)
    [[1, 2, 3, 4], [5, 6, 7, 8]]
    >>> pack_blocks([[1, 2, 3], [4, 5]], block_size=3, separator_id=0)
    [[1, 2, 3], [0, 4, 5]]
    """
    check_positive_int("block_size", block_size)
    if separator_id is not None:
        check_int("separator_id", separator_id, minimum=0)
    if isinstance(sequences, (str, bytes)):
        raise TypeError(
            "sequences must be a list of token-id lists, got a single str/bytes; "
            "encode it first (e.g. encode_bytes(text))"
        )
    full, rest = _pack_array(sequences, block_size, separator_id)
    blocks = full.tolist()
    if not drop_last and len(rest):
        blocks.append(rest.tolist())
    return blocks


def _pack_array(sequences, block_size: int, separator_id: int | None = None):
    """:func:`pack_blocks` in NumPy: ``(full blocks (n, block_size) int64, remainder (r,) int64)``."""
    parts = []
    for i, seq in enumerate(sequences):
        if i and separator_id is not None:
            parts.append(np.array([separator_id], dtype=np.int64))
        parts.append(np.asarray(seq, dtype=np.int64).reshape(-1))
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    n_full = len(flat) // block_size
    return flat[: n_full * block_size].reshape(n_full, block_size), flat[n_full * block_size :]


def _tokenize_fn(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    if tokenizer is None:  # UTF-8 bytes, as arrays (fast to store)
        return lambda texts: [
            np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int64) for t in texts
        ]
    if hasattr(tokenizer, "encode_batch"):  # tiktoken / quicktok style

        def encode(texts):
            out = tokenizer.encode_batch(texts)
            if isinstance(out, tuple) and len(out) == 2 and len(out[1]) == len(texts) + 1:
                flat, offsets = out  # quicktok: flat ids + offsets (n + 1)
                flat = np.asarray(flat, dtype=np.int64)
                return [flat[offsets[i] : offsets[i + 1]] for i in range(len(texts))]
            return [list(ids) for ids in out]  # tiktoken: one list per text

        return encode
    if hasattr(tokenizer, "model_input_names") and callable(tokenizer):  # transformers tokenizer
        return lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]
    if callable(tokenizer):  # any str -> list[int]
        return lambda texts: [list(tokenizer(t)) for t in texts]
    raise TypeError(
        "tokenizer must be None (UTF-8 bytes), a transformers tokenizer, an object with "
        f"encode_batch, or a callable str -> list[int]; got {type(tokenizer).__name__}"
    )


def tokenize_and_pack(
    dataset,
    block_size: int,
    tokenizer=None,
    text_column: str = "text",
    separator_id: int | None = None,
    batch_size: int = 1000,
    num_proc: int | None = None,
    desc: str | None = None,
):
    """Tokenize a ``datasets.Dataset`` and pack it into fixed-length blocks, with two batched maps.

    1. ``map(tokenize, batched=True)`` adds ``input_ids`` per document (batched: the function
       sees ``batch_size`` rows at once, so a fast tokenizer can work on many texts in one call);
    2. ``map(group, batched=True, remove_columns=...)`` concatenates each batch's ids and cuts
       them into blocks. A batched map may return a different number of rows than it received:
       that is how documents become blocks. The tail of each batch (< ``block_size``) is dropped.

    Results are cached by ``datasets`` (fingerprinted), so re-running is instant.

    Parameters
    ----------
    dataset : datasets.Dataset
    block_size : int
        Tokens per block. Use the model's context + 1 if you slice inputs/targets yourself, or
        the context length if you pass ``labels=input_ids`` to a ``transformers`` model (it shifts).
    tokenizer : None, transformers tokenizer, tiktoken-style encoding, or callable
        None = UTF-8 bytes (vocabulary 256, :func:`encode_bytes`).
    text_column : str
    separator_id : int, optional
        Inserted between documents (e.g. an end-of-text id).
    batch_size, num_proc : passed to ``Dataset.map``.

    Returns
    -------
    datasets.Dataset with one column ``input_ids`` (each row ``block_size`` ints; ``datasets``
    stores a column of that name as int32). ``.with_format("torch")`` gives int64 tensors.

    Examples
    --------
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"text": ["abcdef", "ghij"]})
    >>> tokenize_and_pack(ds, block_size=4)[:]["input_ids"]
    [[97, 98, 99, 100], [101, 102, 103, 104]]
    """
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"dataset must be a datasets.Dataset (pick a split of a DatasetDict), got "
            f"{type(dataset).__name__}"
        )
    if text_column not in dataset.column_names:
        raise ValueError(
            f"text_column {text_column!r} is not a column of the dataset; columns are {dataset.column_names}"
        )
    check_positive_int("block_size", block_size)
    check_positive_int("batch_size", batch_size)
    encode = _tokenize_fn(tokenizer)

    def tokenize(batch):
        return {"input_ids": encode(batch[text_column])}

    def group(batch):  # documents in, blocks out: the row count changes
        return {"input_ids": _pack_array(batch["input_ids"], block_size, separator_id)[0]}

    tokenized = dataset.map(
        tokenize, batched=True, batch_size=batch_size, num_proc=num_proc, desc=desc or "tokenize"
    )
    packed = tokenized.with_format("numpy").map(
        group,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=tokenized.column_names,
        desc=desc or f"pack into {block_size}",
    )
    return packed.with_format(None)
