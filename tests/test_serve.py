"""The inference server (course_lib.serve, course_lib.engine, course_lib.load_test), driven by real
clients: the official ``openai`` package and plain ``httpx``. Each server is started by the test
itself on a free localhost port and stopped afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from course_lib.engine import Engine, SamplingParams
from course_lib.load_test import run_load, summarize
from course_lib.model import build_model, make_config
from course_lib.serve import ServerProcess
from course_lib.training import ByteTokenizer

PROMPTS = ["The capital of France is", "Once upon a time, in a small village", "1, 2, 3, 4,"]


@pytest.fixture(scope="module")
def smollm2():
    from course_lib.data import load_smollm2

    return load_smollm2()


@pytest.fixture(scope="module")
def server():
    with ServerProcess("smollm2", max_batch_size=4) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def _greedy(model, ids: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(ids) :].tolist()


def _ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["smollm2"]
    health = httpx.get(server.base_url + "/health").json()
    assert health["status"] == "ok" and health["batching"] == "continuous" and health["max_batch_size"] == 4


def test_greedy_completions_match_generate_one_at_a_time_and_batched(smollm2, client):
    tok, model = smollm2
    n = 12
    expected = [tok.decode(_greedy(model, _ids_of(tok, p), n), skip_special_tokens=True) for p in PROMPTS]

    def ask(prompt):
        r = client.completions.create(model="smollm2", prompt=prompt, max_tokens=n, temperature=0)
        return r.choices[0].text, r.usage.completion_tokens

    alone = [ask(p) for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # concurrent: decoded in one batch
        together = list(pool.map(ask, PROMPTS * 2))
    assert [t for t, _ in alone] == expected
    assert [t for t, _ in together] == expected * 2
    assert all(k == n for _, k in alone + together)


def test_chat_uses_the_models_chat_template(smollm2, client):
    tok, model = smollm2
    messages = [{"role": "user", "content": "Name a colour."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    want = tok.decode(_greedy(model, ids, 10), skip_special_tokens=True)
    r = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=10, temperature=0)
    assert r.choices[0].message.content == want
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(ids)


def test_streaming_sends_the_same_text_as_server_sent_events(server, client):
    args = dict(model="smollm2", prompt=PROMPTS[1], max_tokens=12, temperature=0)
    whole = client.completions.create(**args).choices[0].text
    chunks = list(client.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert len(chunks) > 3 and chunks[-1].choices[0].finish_reason == "length"
    # the raw wire format, with plain httpx
    with httpx.stream("POST", server.base_url + "/v1/completions", json={**args, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert "".join(json.loads(x[6:])["choices"][0]["text"] for x in lines[:-1]) == whole
    chat = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    deltas = list(chat)
    assert deltas[0].choices[0].delta.role == "assistant"
    assert deltas[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_strings_end_the_text_before_them_streamed_or_not(client):
    base = client.completions.create(
        model="smollm2", prompt=PROMPTS[2], max_tokens=12, temperature=0
    ).choices[0]
    assert " 6" in base.text, base.text
    stop = " 6"
    r = client.completions.create(model="smollm2", prompt=PROMPTS[2], max_tokens=12, temperature=0, stop=stop)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == base.text[: base.text.index(stop)]
    streamed = client.completions.create(
        model="smollm2", prompt=PROMPTS[2], max_tokens=12, temperature=0, stop=[stop], stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_seeded_sampling_repeats_and_seeds_differ(client):
    def sample(seed):
        args = dict(
            model="smollm2", prompt="My favourite animal is", max_tokens=12, temperature=1.0, top_p=0.95
        )
        return client.completions.create(**args, seed=seed).choices[0].text

    assert sample(1) == sample(1)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


@pytest.mark.parametrize(
    "body, status, words",
    [
        ("{not json", 400, "not valid JSON"),
        ('{"model": "smollm2", "prompt": "x", "max_tokens": -1}', 400, "max_tokens"),
        ('{"model": "gpt-4", "prompt": "x"}', 404, "does not exist"),
        ('{"model": "smollm2", "prompt": "x", "max_tokens": 100000}', 400, "maximum context length"),
        ('{"model": "smollm2"}', 400, "prompt"),
        ('{"model": "smollm2", "prompt": "x", "temperature": "hot"}', 400, "temperature"),
        ('{"model": "smollm2", "prompt": "x", "temperature": 5}', 400, "temperature"),
        ('{"model": "smollm2", "prompt": "x", "n": 2}', 400, "n must be 1"),
        ('{"model": "smollm2", "prompt": ""}', 400, "empty"),
        ('{"model": "smollm2", "prompt": [1, -5]}', 400, "token-id"),
        ('{"model": "smollm2", "messages": []}', 400, "messages"),
        ("[1, 2]", 400, ""),
    ],
)
def test_bad_requests_get_openai_errors_and_the_server_lives(server, body, status, words):
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    r = httpx.post(server.base_url + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and words in err["message"], err
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_openai_client_raises_its_own_exceptions(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="smollm2", prompt="x " * 9000, max_tokens=2)


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    body = {
        "model": "smollm2",
        "prompt": "Tell me a long story.",
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(4)]
    assert any(x.startswith("data: ") for x in got)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = httpx.get(server.base_url + "/health").json()
        if health["running"] == 0 and health["waiting"] == 0:
            break
        time.sleep(0.2)
    assert health["running"] == 0, f"the abandoned request still holds a slot: {health}"


def test_load_generator_counts_requests_and_tokens(server):
    recs, seconds = run_load(
        server.base_url, PROMPTS * 2, "smollm2", concurrency=3, max_tokens=6, ignore_eos=True
    )
    s = summarize(recs, seconds)
    assert s["errors"] == 0 and s["requests"] == 6
    assert all(len(r.token_times) == 6 for r in recs)
    assert s["ttft_p50_ms"] <= s["ttft_p95_ms"] and s["tpot_p50_ms"] > 0
    with pytest.raises(ValueError, match="localhost"):
        run_load("http://example.com", ["x"], "smollm2")


# --- a tiny byte-level model: API key, CLI errors, engine details ---------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-gpt")
    build_model(make_config("tiny"), seed=0).save_pretrained(path)
    return path


def test_api_key_guards_v1_but_not_health(tiny_model_dir):
    with ServerProcess(str(tiny_model_dir), api_key="s3cret") as s:
        assert httpx.get(s.base_url + "/health").status_code == 200
        r = httpx.get(s.base_url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        wrong = openai.OpenAI(base_url=s.base_url + "/v1", api_key="guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        good = openai.OpenAI(base_url=s.base_url + "/v1", api_key="s3cret", max_retries=0)
        name = tiny_model_dir.name
        r = good.completions.create(model=name, prompt="To be", max_tokens=4, temperature=0)
        assert r.usage.completion_tokens == 4
        with pytest.raises(openai.BadRequestError, match="chat template"):
            good.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])


def test_a_full_queue_answers_429_and_the_route_still_works(tiny):
    from fastapi.testclient import TestClient

    from course_lib.serve import create_app

    model, tok = tiny
    app = create_app(Engine(model, tok), "tiny", max_waiting=0)  # no engine thread: nothing is served
    with TestClient(app) as http:
        r = http.post("/v1/completions", json={"model": "tiny", "prompt": "To be", "max_tokens": 2})
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error", r.text
        assert http.get("/health").json()["waiting"] == 0


def test_cli_rejects_a_folder_that_is_not_a_model(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "course_lib", "serve", "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "save_pretrained" in r.stderr


@pytest.fixture(scope="module")
def tiny():
    return build_model(make_config("tiny"), seed=0).eval(), ByteTokenizer()


def test_static_batching_admits_only_when_the_batch_is_empty(tiny):
    model, tok = tiny
    params = SamplingParams(max_tokens=10, temperature=0.0)
    for batching, admitted_second_step in (("continuous", 2), ("static", 1)):
        eng = Engine(model, tok, max_batch_size=2, batching=batching)
        eng.add(list(b"ab"), params)
        eng.step()
        eng.add(list(b"cd"), params)
        eng.step()
        assert len(eng.running) == admitted_second_step, batching


def test_engine_batched_equals_generate_for_prompts_of_different_lengths(tiny):
    model, tok = tiny
    prompts = [list(b"To"), list(b"To be, or not"), list(b"A horse! a horse!")]
    eng = Engine(model, tok, max_batch_size=3)
    seqs = [eng.add(p, SamplingParams(max_tokens=4 + 3 * i, temperature=0.0)) for i, p in enumerate(prompts)]
    eng.run_until_idle()
    for p, s in zip(prompts, seqs):
        assert s.output_ids == _greedy(model, p, len(s.output_ids))
    assert [len(s.output_ids) for s in seqs] == [4, 7, 10]
    assert eng.running == [] and eng._cache is None


def test_eos_as_the_first_token_finishes_with_stop_and_empty_text(tiny):
    model, tok = tiny
    first = _greedy(model, list(b"abc"), 1)[0]
    eng = Engine(model, tok, eos_ids=[first])
    seq = eng.add(list(b"abc"), SamplingParams(max_tokens=5, temperature=0.0))
    eng.run_until_idle()
    assert seq.finish_reason == "stop" and seq.text == "" and seq.output_ids == [first]
    ignoring = eng.add(list(b"abc"), SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    eng.run_until_idle()
    assert ignoring.finish_reason == "length" and len(ignoring.output_ids) == 5


def test_engine_rejects_what_cannot_be_served(tiny):
    model, tok = tiny
    eng = Engine(model, tok)
    with pytest.raises(ValueError, match="maximum context length"):
        eng.add([1] * model.config.max_position_embeddings, SamplingParams(max_tokens=1))
    with pytest.raises(ValueError, match="empty"):
        eng.add([], SamplingParams())
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="batching"):
        Engine(model, tok, batching="dynamic")
