"""Unit tests for course_lib.finetune (tiny and offline; the full recipe is in benchmarks/finetune.py)."""

import numpy as np
import pytest

from course_lib import finetune as F

TEXTS = [
    "A triumph of a film.",
    "Dull and lifeless.",
    "Warm, funny and wise.",
    "A total mess.",
    "Gorgeous and moving.",
    "Tedious beyond words.",
    "A delight.",
    "Avoid it.",
]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]


def test_bag_of_words_and_probe_learn_a_trivial_task():
    clf = F.train_bag_of_words(TEXTS * 3, LABELS * 3)
    assert (clf.predict(TEXTS) == np.array(LABELS)).all()
    X = np.r_[
        np.random.default_rng(0).normal(size=(20, 4)) + 3, np.random.default_rng(1).normal(size=(20, 4)) - 3
    ]
    probe = F.train_linear_probe(X, [1] * 20 + [0] * 20)
    assert probe.score(X, [1] * 20 + [0] * 20) == 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="labels"):
        F.train_bag_of_words(TEXTS, LABELS[:-1])
    with pytest.raises(ValueError, match="empty"):
        F.train_bag_of_words(["good", ""], [1, 0])
    with pytest.raises(TypeError, match="single str"):
        F.train_bag_of_words("good", [1])
    with pytest.raises(ValueError, match="0 \\(rotten\\) and 1"):
        F.train_linear_probe(np.zeros((2, 3)), [0, 2])
    with pytest.raises(ValueError, match="2-D"):
        F.train_linear_probe(np.zeros(3), [0, 1, 0])
    with pytest.raises(ValueError, match="n_train"):
        F.load_sentiment_classifier(n_train=3)
    with pytest.raises(ValueError, match="max_length"):
        F.load_sentiment_classifier(max_length=4)


@pytest.fixture(scope="module")
def minilm():
    from course_lib.data import load_minilm

    return load_minilm(num_labels=2)


def test_embed_and_predict_shapes(minilm):
    tok, model = minilm
    emb = F.embed_texts(model, tok, TEXTS[:3], max_length=16, progress=False)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    probs = F.predict_proba(model, tok, TEXTS[:3], max_length=16)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1)


def test_fine_tune_one_step_changes_weights_and_is_seeded(minilm):
    import copy

    import torch

    tok, model = minilm
    runs = []
    for _ in range(2):
        m = copy.deepcopy(model)
        before = m.classifier.weight.detach().clone()
        hist = F.fine_tune(
            m,
            tok,
            TEXTS,
            LABELS,
            TEXTS[:2],
            LABELS[:2],
            epochs=1,
            batch_size=8,
            max_length=16,
            eval_every=1,
            progress=False,
            seed=1,
        )
        assert not torch.equal(before, m.classifier.weight)
        runs.append(hist)
    assert len(runs[0]) == 1 and {"step", "train_loss", "val_accuracy"} <= set(runs[0][0])
    assert runs[0][0]["train_loss"] == pytest.approx(runs[1][0]["train_loss"])


def test_micro_batches_give_the_same_update(minilm):
    import copy

    import torch

    tok, model = minilm
    weights = []
    for micro in (None, 3):  # 8 examples: micro-batches of 3, 3 and 2, weighted by their share
        m = copy.deepcopy(model)
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0  # dropout would draw differently per micro-batch
        hist = F.fine_tune(
            m,
            tok,
            TEXTS,
            LABELS,
            epochs=1,
            batch_size=8,
            max_length=16,
            progress=False,
            seed=1,
            micro_batch_size=micro,
        )
        weights.append((m.classifier.weight.detach().clone(), hist[0]["train_loss"]))
    assert torch.allclose(weights[0][0], weights[1][0], atol=1e-6)
    assert weights[0][1] == pytest.approx(weights[1][1], rel=1e-5)
    with pytest.raises(ValueError, match="micro_batch_size"):
        F.fine_tune(model, tok, TEXTS, LABELS, micro_batch_size=0, progress=False)


def test_first_classifier_is_trained_in_a_child_process(tmp_path, monkeypatch):
    # the learner's kernel must never hold fine-tuning's peak: the parent only loads the result
    monkeypatch.setenv("OPEN_LLM_LAB_CACHE", str(tmp_path))
    monkeypatch.delenv("OPEN_LLM_LAB_CLASSIFIER_CHILD", raising=False)

    def no_training_here(*a, **k):
        raise AssertionError("the parent process trained")

    monkeypatch.setattr(F, "fine_tune", no_training_here)
    tok, model, info = F.load_sentiment_classifier(
        n_train=16, epochs=1, max_length=16, return_info=True, progress=False
    )
    assert info["settings"]["n_train"] == 16 and model.config.id2label == {0: "rotten", 1: "fresh"}
    assert (F.sentiment_classifier_dir(16, 1, 16, 0) / "course_info.json").exists()


def test_load_sentiment_classifier_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("OPEN_LLM_LAB_CACHE", str(tmp_path))
    monkeypatch.setenv("OPEN_LLM_LAB_CLASSIFIER_CHILD", "1")  # train here, where fine_tune is patched
    monkeypatch.setattr(F, "fine_tune", lambda *a, **k: [{"step": 1, "train_loss": 0.7, "val_accuracy": 0.5}])
    tok, model, info = F.load_sentiment_classifier(
        n_train=16, epochs=1, max_length=16, return_info=True, progress=False
    )
    assert model.config.id2label == {0: "rotten", 1: "fresh"}
    assert info["settings"] == {"n_train": 16, "epochs": 1, "max_length": 16, "seed": 0}
    folder = F.sentiment_classifier_dir(16, 1, 16, 0)
    assert (folder / "course_info.json").exists() and folder.parent == tmp_path
    monkeypatch.setattr(F, "fine_tune", None)  # a second call must not train again
    tok2, model2 = F.load_sentiment_classifier(n_train=16, epochs=1, max_length=16)
    import torch

    assert torch.equal(model.classifier.weight, model2.classifier.weight)
