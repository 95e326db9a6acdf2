"""course_lib.training: byte tokenizer, batches, schedule, the loop, bits per byte, checkpoints."""

import math

import pytest
import torch

from course_lib.model import build_model, make_config
from course_lib.training import (
    ByteTokenizer,
    TrainConfig,
    bits_per_byte,
    evaluate_bits_per_byte,
    get_batch,
    load_checkpoint,
    load_course_gpt,
    lr_at,
    train,
)

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 30


def small_cfg(**kw):
    base = dict(
        max_steps=30,
        batch_size=8,
        block_size=32,
        learning_rate=1e-2,
        warmup_steps=5,
        eval_interval=15,
        eval_batches=2,
        log_interval=5,
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


def test_byte_tokenizer_round_trip_and_errors():
    tok = ByteTokenizer()
    ids = tok.encode("Thou art — café")
    assert ids.dtype == torch.uint8 and ids.dim() == 1
    assert len(ids) == len("Thou art — café".encode("utf-8"))
    assert tok.decode(ids) == "Thou art — café"
    assert tok.decode([0xE2]) == "\ufffd"  # half a character decodes to the replacement char
    with pytest.raises(TypeError, match="text"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match="256"):
        tok.decode([300])


def test_bits_per_byte_conversion():
    assert bits_per_byte(math.log(2)) == pytest.approx(1.0)
    assert bits_per_byte(math.log(256)) == pytest.approx(8.0)  # uniform over bytes
    assert bits_per_byte(math.log(2), n_tokens=1, n_bytes=4) == pytest.approx(0.25)  # 4 bytes/token BPE
    with pytest.raises(ValueError, match="n_bytes"):
        bits_per_byte(1.0, 1, 0)


def test_shakespeare_bytes_is_the_split_text():
    from course_lib.data import shakespeare_text
    from course_lib.training import shakespeare_bytes

    for split in ("train", "validation"):
        assert ByteTokenizer().decode(shakespeare_bytes(split)) == shakespeare_text(split)
    with pytest.raises(ValueError, match="split"):
        shakespeare_bytes("test")


def test_get_batch_targets_are_inputs_shifted_by_one():
    ids = torch.arange(100, dtype=torch.uint8)
    x, y = get_batch(ids, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y - x, torch.ones_like(x))
    x2, _ = get_batch(ids, 4, 10, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="block_size"):
        get_batch(ids[:5], 2, 10)
    with pytest.raises(TypeError, match="ids"):
        get_batch(list(range(100)), 2, 10)


def test_lr_schedule_warmup_then_cosine_to_floor():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone decay after warmup
    assert lr_at(100, cfg) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_steps=0),
        dict(batch_size=1.5),
        dict(learning_rate=0),
        dict(grad_clip=-1.0),
        dict(min_lr_ratio=2),
        dict(resume=True),
    ],
)
def test_train_config_validates(bad):
    with pytest.raises(ValueError, match="TrainConfig"):
        TrainConfig(**bad)


def test_train_lowers_validation_loss_and_reports_history():
    ids = ByteTokenizer().encode(TEXT)
    model = build_model(make_config("tiny"), seed=0)
    before = evaluate_bits_per_byte(model, ids, 32, 8, max_batches=2)
    seen = []
    history = train(model, ids, ids, small_cfg(), callbacks=[seen.append])
    after = evaluate_bits_per_byte(model, ids, 32, 8, max_batches=2)
    assert before > 7.0, "an untrained byte model should be close to 8 bits/byte"
    assert after < before - 2.0, f"training did not lower bits/byte enough: {before:.2f} -> {after:.2f}"
    assert seen == history
    evals = [h for h in history if "val_bpb" in h]
    assert [h["step"] for h in evals] == [15, 30]
    assert evals[-1]["val_bpb"] == pytest.approx(after, rel=1e-6)
    logs = [h for h in history if "train_loss" in h]
    assert [h["step"] for h in logs] == [5, 10, 15, 20, 25, 30]
    assert all(h["tokens_per_s"] > 0 and h["tokens_seen"] == h["step"] * 8 * 32 for h in logs)


def test_training_is_reproducible_and_callbacks_can_stop():
    ids = ByteTokenizer().encode(TEXT)
    a, b = build_model(make_config("tiny"), seed=0), build_model(make_config("tiny"), seed=0)
    train(a, ids, None, small_cfg(max_steps=10))
    train(b, ids, None, small_cfg(max_steps=10))
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    c = build_model(make_config("tiny"), seed=0)
    history = train(c, ids, None, small_cfg(max_steps=30), callbacks=[lambda r: r["step"] >= 10])
    assert history[-1]["step"] == 10


def test_checkpoint_resume_is_exact(tmp_path):
    ids = ByteTokenizer().encode(TEXT)
    cfg = small_cfg(max_steps=20, eval_interval=10)
    straight = build_model(make_config("tiny"), seed=0)
    train(straight, ids, ids, cfg)

    interrupted = build_model(make_config("tiny"), seed=0)
    ckpt = small_cfg(max_steps=20, eval_interval=10, checkpoint_dir=str(tmp_path), checkpoint_interval=10)
    train(interrupted, ids, ids, ckpt, callbacks=[lambda r: r["step"] >= 10])  # "crash" at step 10
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    resumed = build_model(make_config("tiny"), seed=99)  # different weights: the checkpoint must win
    history = train(
        resumed,
        ids,
        ids,
        small_cfg(max_steps=20, eval_interval=10, checkpoint_dir=str(tmp_path), resume=True),
    )
    assert history[-1]["step"] == 20
    torch.testing.assert_close(resumed.lm_head.weight, straight.lm_head.weight, rtol=0, atol=0)
    step, _ = load_checkpoint(tmp_path, build_model(make_config("tiny")))
    assert step == 20
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(tmp_path / "nothing", straight)


def test_train_rejects_bad_input():
    model = build_model(make_config("tiny"))
    ids = ByteTokenizer().encode(TEXT)
    with pytest.raises(TypeError, match="cfg"):
        train(model, ids, ids, {"max_steps": 1})
    with pytest.raises(ValueError, match="max_position_embeddings"):
        train(model, ids, ids, small_cfg(block_size=128))
    with pytest.raises(TypeError, match="train_ids"):
        train(model, TEXT, ids, small_cfg())
    with pytest.raises(ValueError, match="vocab_size"):
        train(build_model(make_config("tiny", vocab_size=50)), ids, None, small_cfg())
    with pytest.raises(ValueError, match="block_size"):
        evaluate_bits_per_byte(model, ids, 0, 8)
    with pytest.raises(ValueError, match="max_batches"):
        evaluate_bits_per_byte(model, ids, 8, 8, max_batches=0)


def test_evaluate_bits_per_byte_equals_the_hand_computed_value():
    model = build_model(make_config("tiny"), seed=0).eval()
    ids = ByteTokenizer().encode(TEXT[:400])
    windows = ids.unfold(0, 33, 32).long()
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
    nats = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), windows[:, 1:].reshape(-1))
    assert evaluate_bits_per_byte(model, ids, 32, 4) == pytest.approx(nats.item() / math.log(2), rel=1e-5)
    assert evaluate_bits_per_byte(model, ids, 32, 4, bytes_per_token=2.0) == pytest.approx(
        nats.item() / math.log(2) / 2, rel=1e-5
    )


def test_load_course_gpt_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPEN_LLM_LAB_CACHE", str(tmp_path))
    model, info = load_course_gpt("tiny", max_steps=3, progress=False)
    assert not info["cached"] and info["val_bpb"] < 8.5 and info["max_steps"] == 3
    again, info2 = load_course_gpt("tiny", max_steps=3, progress=False)
    assert info2["cached"] and info2["val_bpb"] == info["val_bpb"]
    x = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, again(input_ids=x).logits)
    with pytest.raises(ValueError, match="preset"):
        load_course_gpt("gpt2-124m")
    with pytest.raises(ValueError, match="max_steps"):
        load_course_gpt("tiny", max_steps=0)
