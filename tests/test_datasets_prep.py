"""Unit tests of course_lib.datasets_prep: cleaning, deduplication, PII, leakage, packing."""

import numpy as np
import pytest

from course_lib.datasets_prep import (
    decode_bytes,
    duplicate_clusters,
    encode_bytes,
    exact_duplicate_groups,
    find_pii,
    jaccard,
    keep_first,
    lsh_candidate_pairs,
    minhash_signatures,
    minhash_similarity,
    near_duplicate_pairs,
    ngram_overlap,
    normalize_text,
    pack_blocks,
    scrub_pii,
    shingles,
    tokenize_and_pack,
)

# ------------------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("\uff2d\uff41\uff43\uff42\uff45\uff54\uff48", "Macbeth"),  # full-width letters
        ("\ufb01ne", "fine"),  # ligature
        ("it\u2019s \u201cso\u201d", 'it\'s "so"'),  # curly quotes
        ("a\u00a0b", "a b"),  # no-break space
        ("zero\u200bwidth\ufeff", "zerowidth"),  # invisible characters
        ("line\r\nnext\rlast", "line\nnext\nlast"),  # line endings
        ("a  \t b   \nc", "a b\nc"),  # spaces
        ("a\n\n\n\n\nb", "a\n\nb"),  # blank lines
        ("<p>Tom &amp; Jerry</p>", "Tom & Jerry"),  # html
        ("bell\x07 del\x7f", "bell del"),  # control characters
        ("e\u0301", "\u00e9"),  # composed accent
        ("keep \u2014 em dash", "keep \u2014 em dash"),
    ],
)
def test_normalize_text(raw, clean):
    assert normalize_text(raw) == clean


def test_normalize_text_options_and_validation():
    assert normalize_text("\u201cx\u201d", ascii_punctuation=False) == "\u201cx\u201d"
    assert normalize_text("<b>x</b>", strip_html=False) == "<b>x</b>"
    assert normalize_text("\uff21", form="NFC") == "\uff21"
    with pytest.raises(TypeError, match="text must be a str"):
        normalize_text(b"bytes")
    with pytest.raises(ValueError, match="form must be"):
        normalize_text("x", form="nfkc")


def test_normalize_is_idempotent_on_the_corpus_sample():
    text = "KING:\nWhat\u2019s   here?\n\n\n\nQUEEN:\n\u201cNothing.\u201d  "
    once = normalize_text(text)
    assert normalize_text(once) == once


# ----------------------------------------------------------------------------------- duplicates


def test_exact_duplicate_groups():
    texts = ["To be.", "Not to be.", "to be.", "To\u00a0be.", "Not  to be."]
    assert exact_duplicate_groups(texts) == [[0, 3], [1, 4]]
    assert exact_duplicate_groups(texts, key=str.lower) == [[0, 2]]
    assert exact_duplicate_groups(["a", "b"]) == []
    with pytest.raises(TypeError, match="list of str"):
        exact_duplicate_groups("just one string")


def test_shingles_and_jaccard():
    assert shingles("To be, or NOT to be", k=2) == {"to be", "be or", "or not", "not to"}
    assert shingles("short", k=5) == {"short"}
    assert shingles("", k=3) == set()
    assert shingles("abcd", k=3, unit="char") == {"abc", "bcd"}
    assert jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(0.5)
    assert jaccard(set(), set()) == 1.0
    with pytest.raises(ValueError, match="unit must be"):
        shingles("x", unit="token")
    with pytest.raises(ValueError, match="k must be"):
        shingles("x", k=0)


def _words(rng, n):
    vocab = [f"w{i}" for i in range(500)]
    return [vocab[i] for i in rng.integers(0, len(vocab), n)]


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(0)
    base = _words(rng, 200)
    edited = list(base)
    for i in rng.choice(200, 20, replace=False):  # change 10% of the words
        edited[i] = "zz"
    a, b = " ".join(base), " ".join(edited)
    true = jaccard(shingles(a, k=3), shingles(b, k=3))
    sig = minhash_signatures([a, b], num_perm=256, k=3)
    assert sig.shape == (2, 256) and sig.dtype == np.uint64
    # the standard error is sqrt(J(1-J)/256) < 0.032: allow four of them
    assert abs(minhash_similarity(sig[0], sig[1]) - true) < 0.125
    assert minhash_similarity(sig[0], sig[0]) == 1.0


def test_minhash_is_unbiased_for_dissimilar_documents():
    # Two short texts sharing one phrase: true Jaccard ~0.04. Hash functions that order the
    # shingles alike (e.g. (a x + b) mod p that rarely wraps) would make them look ~0.6 similar.
    a = (
        "Nay, he nods at us, as who should say, I'll be even with you: I'll see if his head "
        "will stand steadier on a pole, or no. Take him away, and behead him."
    )
    b = (
        "Sir, I would speak with you. I'll see if I can get my husband's ring, Which I did make "
        "him swear to keep for ever."
    )
    true = jaccard(shingles(a, 5), shingles(b, 5))
    est = [minhash_similarity(*minhash_signatures([a, b], num_perm=128, seed=s)) for s in range(40)]
    assert true < 0.1
    assert abs(np.mean(est) - true) < 0.03  # standard error of the mean ~0.003
    assert near_duplicate_pairs([a, b], threshold=0.5) == []


def test_minhash_is_deterministic_and_seeded():
    texts = ["a b c d e f g", "h i j k l m n"]
    s1, s2 = minhash_signatures(texts, seed=3), minhash_signatures(texts, seed=3)
    assert np.array_equal(s1, s2)
    assert not np.array_equal(s1, minhash_signatures(texts, seed=4))


def test_minhash_empty_documents():
    sig = minhash_signatures(["", "", "some words here"], num_perm=16)
    assert minhash_similarity(sig[0], sig[1]) == 1.0
    assert minhash_similarity(sig[0], sig[2]) == 0.0


def test_lsh_bands_must_divide():
    with pytest.raises(ValueError, match="bands must divide"):
        lsh_candidate_pairs(np.zeros((3, 10), dtype=np.uint64), bands=3)
    assert lsh_candidate_pairs(np.zeros((3, 8), dtype=np.uint64), bands=2) == {(0, 1), (0, 2), (1, 2)}


def test_near_duplicates_found_and_distinct_texts_not():
    rng = np.random.default_rng(1)
    docs = [" ".join(_words(rng, 120)) for _ in range(30)]
    copy = docs[4].split()
    copy[10] = "changed"  # a one-word edit
    docs.append(" ".join(copy))  # index 30
    docs.append(docs[7].upper() + "!!")  # index 31: same words, other case
    pairs = near_duplicate_pairs(docs, threshold=0.7, k=5)
    assert [(i, j) for i, j, _ in pairs] == [(4, 30), (7, 31)]
    assert all(0.7 <= s <= 1.0 for *_, s in pairs)
    clusters = duplicate_clusters(len(docs), pairs)
    assert clusters == [[4, 30], [7, 31]]
    kept = keep_first(len(docs), clusters)
    assert 30 not in kept and 31 not in kept and len(kept) == 30


def test_near_duplicate_validation():
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_pairs(["a", "b"], threshold=0)
    with pytest.raises(ValueError, match="one row per text"):
        near_duplicate_pairs(["a", "b"], signatures=np.zeros((3, 128), dtype=np.uint64))


def test_duplicate_clusters_merges_transitively():
    assert duplicate_clusters(6, [(0, 1), (1, 2, 0.9), (4, 5)]) == [[0, 1, 2], [4, 5]]
    assert duplicate_clusters(4, [[0, 2, 3]]) == [[0, 2, 3]]
    with pytest.raises(ValueError, match="out of range"):
        duplicate_clusters(3, [(0, 3)])


# ------------------------------------------------------------------------------------------ PII


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("mail ann.lee+x@mail.example.co.uk now", "email", "ann.lee+x@mail.example.co.uk"),
        ("call 555-867-5309.", "phone", "555-867-5309"),
        ("call (555) 867-5309 x123 today", "phone", "(555) 867-5309 x123"),
        ("call +44 20 7946 0958", "phone", "+44 20 7946 0958"),
        ("call +33 (0)7 75 35 13 93", "phone", "+33 (0)7 75 35 13 93"),
        ("call 05 62 04 87 64", "phone", "05 62 04 87 64"),
        ("call 555.867.5309", "phone", "555.867.5309"),
        ("server 192.168.0.12.", "ip", "192.168.0.12"),
    ],
)
def test_find_pii_finds(text, kind, value):
    assert [(k, v) for k, _, _, v in find_pii(text)] == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "Act 3, scene 2, in 1599.",
        "On 2024-01-15 we met.",
        "pi is 3.14159265",
        "lines 100-200",
        "version 1.2.3.4.5",
        "999.1.1.1 is not an address",
        "O Romeo, Romeo! wherefore art thou Romeo?",
        "an @ sign alone",
        "user@localhost",
    ],
)
def test_find_pii_ignores(text):
    assert find_pii(text) == []


def test_find_pii_spans_and_faker_numbers():
    import faker  # pinned in pyproject.toml: a missing package is a failure, not a skip

    for locale in ("en_US", "en_GB", "de_DE", "fr_FR"):
        fake = faker.Faker(locale)
        fake.seed_instance(0)
        for _ in range(50):
            for kind, value in (("phone", fake.phone_number()), ("email", fake.email()), ("ip", fake.ipv4())):
                text = f"Contact: {value}."
                found = find_pii(text)
                assert [(k, v) for k, _, _, v in found] == [(kind, value)], (locale, value, found)
                assert text[found[0][1] : found[0][2]] == value


def test_scrub_pii_counts_and_placeholders():
    text = "Ann <ann@example.org>, 555-867-5309, 10.0.0.1; Bob bob@example.org"
    out, counts = scrub_pii(text, return_counts=True)
    assert out == "Ann <<EMAIL>>, <PHONE>, <IP>; Bob <EMAIL>"
    assert counts == {"email": 2, "phone": 1, "ip": 1}
    assert scrub_pii("a@b.co", placeholders={"email": "[x]"}) == "[x]"
    assert scrub_pii("a@b.co 555-867-5309", kinds=["phone"]) == "a@b.co <PHONE>"
    with pytest.raises(ValueError, match="kinds"):
        scrub_pii("x", kinds=["name"])


def test_pii_regex_has_no_catastrophic_backtracking():
    import time

    start = time.perf_counter()
    for s in ("1" * 5000 + "a", "1 " * 5000 + "a", "a" * 5000 + "@", "1." * 5000):
        find_pii(s)
    assert time.perf_counter() - start < 5.0  # exponential patterns take minutes here


# -------------------------------------------------------------------------------------- leakage


def test_ngram_overlap():
    train = ["the cat sat on the mat"]
    assert ngram_overlap(train, ["the cat sat on"], n=3) == 1.0
    assert ngram_overlap(train, ["a dog ran far away"], n=3) == 0.0
    assert ngram_overlap(train, ["the cat sat on a rug"], n=3) == pytest.approx(2 / 4)
    assert ngram_overlap(train, ["too short"], n=3) == 0.0
    with pytest.raises(TypeError, match="val_texts"):
        ngram_overlap(train, "not a list")


# -------------------------------------------------------------------------------------- packing


def test_encode_decode_bytes_round_trip():
    text = "Fair is foul \u2014 and foul is fair: caf\u00e9"
    ids = encode_bytes(text)
    assert all(0 <= i < 256 for i in ids) and len(ids) == len(text.encode("utf-8"))
    assert decode_bytes(ids) == text
    assert decode_bytes(ids[:-1]).endswith("\ufffd")  # a cut multi-byte character


def test_pack_blocks():
    assert pack_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert pack_blocks([[1, 2, 3], [4, 5]], 3, separator_id=0) == [[1, 2, 3], [0, 4, 5]]
    assert pack_blocks([[1, 2, 3]], 2, drop_last=False) == [[1, 2], [3]]
    assert pack_blocks([], 4) == []
    with pytest.raises(ValueError, match="block_size"):
        pack_blocks([[1]], 0)
    with pytest.raises(TypeError, match="encode it first"):
        pack_blocks("text", 4)


def test_tokenize_and_pack_bytes_and_callable():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["abcdef", "ghij", "k"], "other": [1, 2, 3]})
    packed = tokenize_and_pack(ds, block_size=3)
    assert packed.column_names == ["input_ids"]
    assert packed[:]["input_ids"] == [[97, 98, 99], [100, 101, 102], [103, 104, 105]]
    flat = [i for row in packed[:]["input_ids"] for i in row]
    assert flat == encode_bytes("abcdefghi")  # packing keeps order, drops only the tail
    sep = tokenize_and_pack(ds, block_size=4, tokenizer=lambda s: [len(s)], separator_id=0)
    assert sep[:]["input_ids"] == [[6, 0, 4, 0]]
    with pytest.raises(ValueError, match="text_column 'body'"):
        tokenize_and_pack(ds, 4, text_column="body")
    with pytest.raises(TypeError, match="datasets.Dataset"):
        tokenize_and_pack({"text": ["a"]}, 4)
    with pytest.raises(TypeError, match="tokenizer must be"):
        tokenize_and_pack(ds, 4, tokenizer=42)


def test_tokenize_and_pack_with_a_transformers_tokenizer():
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "to": 1, "be": 2, "or": 3, "not": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    ds = Dataset.from_dict({"text": ["to be or not to be", "or not"]})
    packed = tokenize_and_pack(ds, block_size=4, tokenizer=hf)
    assert packed[:]["input_ids"] == [[1, 2, 3, 4], [1, 2, 3, 4]]


def test_tokenize_and_pack_with_a_tiktoken_style_encoding():
    from datasets import Dataset

    from course_lib.data import load_reference_tokenizer

    enc = load_reference_tokenizer("cl100k_base")  # quicktok: encode_batch -> (flat, offsets)
    texts = ["To be, or not to be, that is the question.", "Whether 'tis nobler in the mind"]
    packed = tokenize_and_pack(Dataset.from_dict({"text": texts}), block_size=5, tokenizer=enc)
    flat = [i for t in texts for i in enc.encode(t)]
    assert packed[:]["input_ids"] == [flat[i : i + 5] for i in range(0, len(flat) - 4, 5)]

    class TiktokenLike:  # tiktoken: encode_batch -> list of lists
        def encode_batch(self, batch):
            return [[len(w) for w in t.split()] for t in batch]

    packed = tokenize_and_pack(Dataset.from_dict({"text": ["a bb ccc", "dddd"]}), 2, tokenizer=TiktokenLike())
    assert packed[:]["input_ids"] == [[1, 2], [3, 4]]
