"""course_lib.generation: temperature, top-k, top-p and the KV-cached sampling loop."""

import pytest
import torch

from course_lib.generation import (
    apply_temperature,
    generate,
    generate_text,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)
from course_lib.model import build_model, make_config
from course_lib.training import ByteTokenizer


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.0, 1.0]])
    kept = ~torch.isinf(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.equal(top_k_filter(logits, None), logits)
    assert torch.equal(top_k_filter(logits, 99), logits)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(logits, 0)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert (~torch.isinf(top_p_filter(logits, 0.5))).tolist() == [[True, False, False, False]]
    assert (~torch.isinf(top_p_filter(logits, 0.7))).tolist() == [[True, True, False, False]]
    assert (~torch.isinf(top_p_filter(logits, 0.9))).tolist() == [[True, True, True, False]]
    assert (~torch.isinf(top_p_filter(logits, 0.01))).sum() == 1  # the top token always survives
    shuffled = logits[:, [2, 0, 3, 1]]
    assert (~torch.isinf(top_p_filter(shuffled, 0.7))).tolist() == [[False, True, False, True]]


def test_temperature_and_sampling():
    logits = torch.tensor([[1.0, 2.0, 0.0]])
    torch.testing.assert_close(apply_temperature(logits, 0.5), logits * 2)
    assert sample_next_token(logits, temperature=0).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next_token(logits, 1.0, top_k=2, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(logits, 0)
    with pytest.raises(ValueError, match="temperature"):
        sample_next_token(logits, temperature=-1)
    with pytest.raises(TypeError, match="logits"):
        sample_next_token([[1.0, 2.0]])
    with pytest.raises(ValueError, match="shape"):
        sample_next_token(torch.zeros(3))


@pytest.fixture(scope="module")
def model():
    return build_model(make_config("tiny", max_position_embeddings=16), seed=0).eval()


def test_greedy_generate_matches_transformers_generate(model):
    prompt = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(0))
    ours = generate(model, prompt, 8, temperature=0)
    theirs = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)
    assert torch.equal(generate(model, prompt, 8, temperature=0, use_cache=False), ours)


def test_generate_is_seeded_and_runs_past_the_context_window(model):
    prompt = torch.tensor([1, 2, 3])
    a = generate(model, prompt, 30, temperature=1.0, top_k=20, seed=3)
    b = generate(model, prompt, 30, temperature=1.0, top_k=20, seed=3)
    assert a.shape == (33,) and torch.equal(a, b) and torch.equal(a[:3], prompt)
    cached = generate(model, prompt, 30, temperature=0)
    uncached = generate(model, prompt, 30, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)
    with pytest.raises(TypeError, match="input_ids"):
        generate(model, torch.zeros(3), 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompt, -1)


def test_generate_text_round_trips_the_prompt(model):
    text = generate_text(model, ByteTokenizer(), "ROMEO:", max_new_tokens=5, temperature=0)
    assert text.startswith("ROMEO:")
    with pytest.raises(ValueError, match="prompt"):
        generate_text(model, ByteTokenizer(), "")
