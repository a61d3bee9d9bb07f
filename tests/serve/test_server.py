"""`grove serve` as a client sees it: a real server on a free loopback port, every endpoint, every
error code, batching, streaming, explanations, the API key, overload and the SIGTERM drain.

The models are the session's tiny runs (tests/conftest.py): the answers are checked against
`grove.load(...).predict` on the same inputs, not against accuracy.
"""

import base64
import io
import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import grove
from conftest import run_grove, tone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
pytest.importorskip("fastapi")


def png(i: int = 0, size=(11, 9)) -> bytes:
    from sklearn.datasets import load_digits

    image = Image.fromarray((load_digits().images[i] * 255 / 16).round().astype(np.uint8)).resize(size)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def wav(freq=440, seconds=0.6, rate=22050) -> bytes:
    out = io.BytesIO()
    sf.write(out, tone(freq, seconds, rate), rate, format="WAV")
    return out.getvalue()


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served.url, timeout=60) as c:
        yield c


def predict(client, name, **kwargs) -> httpx.Response:
    return client.post(f"/v1/models/{name}/predict", **kwargs)


def test_models_are_listed_with_what_they_take(client, tiny_runs):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"image", "image-onnx", "text", "keyword", "ctc", "gpt"}
    assert models["image"]["input"] == {"kind": "image", "size": 8, "channels": 1}
    assert models["image"]["source"] == "run" and models["image-onnx"]["source"] == "export"
    assert models["image-onnx"]["input"] == models["image"]["input"]
    assert models["image"]["classes"] == [str(d) for d in range(10)]
    assert models["ctc"]["task"] == "ctc" and models["ctc"]["input"]["clip_seconds"] is None
    assert models["keyword"]["input"]["kind"] == "audio" and models["keyword"]["input"]["clip_seconds"] > 0
    assert models["gpt"]["input"]["kind"] == "prompt"
    assert models["gpt"]["endpoints"] == ["/v1/models/gpt/generate", "/v1/models/gpt/explain"]
    assert client.get("/v1/models/text").json() == models["text"]
    # runs explain, with the methods that fit each model; exports cannot
    assert models["image"]["explain"] and models["image"]["explain_methods"] == ["auto", "ig", "saliency", "gradcam",
                                                                                  "occlusion"]
    assert models["ctc"]["explain_methods"] == models["text"]["explain_methods"] == ["auto", "ig", "saliency", "occlusion"]
    assert "gradcam" in models["keyword"]["explain_methods"] and models["gpt"]["explain"]
    assert models["image-onnx"]["explain"] is False and models["image-onnx"]["explain_methods"] == []
    assert models["image-onnx"]["endpoints"] == ["/v1/models/image-onnx/predict"]


def test_images_raw_or_multipart_get_what_the_predictor_gives(client, tiny_runs):
    expected = grove.load(tiny_runs["image"][0], device="cpu").predict([png(1), png(2)], top=3)
    raw = predict(client, "image", content=png(1), headers={"content-type": "image/png"}, params={"top_k": 3})
    assert raw.status_code == 200, raw.text
    multipart = predict(client, "image", files=[("file", ("a.png", png(1))), ("file", ("b.png", png(2)))],
                        params={"top_k": 3})
    onnx = predict(client, "image-onnx", files=[("file", ("../../etc/passwd", png(1))), ("file", ("b", png(2)))],
                   params={"top_k": 3})
    for response, rows in ((raw, expected[:1]), (multipart, expected), (onnx, expected)):
        results = response.json()["results"]
        assert [[t["label"] for t in r["top"]] for r in results] == [[lab for lab, _ in row] for row in rows]
        got = [[t["probability"] for t in r["top"]] for r in results]
        assert np.allclose(got, [[p for _, p in row] for row in rows], atol=1e-4)


def test_texts_as_json_or_plain_text(client, tiny_runs):
    texts = ["a great film , i loved it", "terrible phone"]
    expected = grove.load(tiny_runs["text"][0], device="cpu").predict(texts, top=2)
    response = predict(client, "text", json={"inputs": texts, "top_k": 2})
    assert response.status_code == 200, response.text
    assert [[t["label"] for t in r["top"]] for r in response.json()["results"]] == [[lab for lab, _ in r] for r in expected]
    plain = predict(client, "text", content=texts[1].encode(), headers={"content-type": "text/plain"},
                    params={"top_k": 2})
    form = predict(client, "text", files={"text": (None, texts[0])}, params={"top_k": 2})
    # alone, a text is padded to its own length, in a batch to the longest: float sums may differ in the last bits
    for one, batched in ((plain, response.json()["results"][1]), (form, response.json()["results"][0])):
        (alone,) = one.json()["results"]
        assert [t["label"] for t in alone["top"]] == [t["label"] for t in batched["top"]]
        assert [t["probability"] for t in alone["top"]] == pytest.approx([t["probability"] for t in batched["top"]], rel=1e-5)


def test_audio_keywords_and_transcripts(client, tiny_runs):
    clip = wav()
    keyword = predict(client, "keyword", content=clip, headers={"content-type": "audio/wav"}, params={"top_k": 1})
    assert keyword.status_code == 200, keyword.text
    expected = grove.load(tiny_runs["keyword"][0], device="cpu").predict([clip], top=1)
    assert keyword.json()["results"][0]["top"][0]["label"] == expected[0][0][0]
    transcript = predict(client, "ctc", files=[("file", ("x.wav", clip))], params={"beam_width": 0})
    assert transcript.status_code == 200, transcript.text
    greedy = grove.load(tiny_runs["ctc"][0], device="cpu").predict([clip], beam_width=0)
    assert transcript.json()["results"] == [{"transcript": greedy[0]}]


def test_generation_whole_and_streamed(client, tiny_runs):
    eager = "".join(grove.load(tiny_runs["gpt"][0], device="cpu").generate("Fir", 24, temperature=0))
    whole = client.post("/v1/models/gpt/generate", json={"prompt": "Fir", "max_new_tokens": 24, "temperature": 0})
    assert whole.status_code == 200, whole.text
    assert whole.json() == {"model": "gpt", "prompt": "Fir", "text": eager}
    pieces, done = [], None
    with client.stream("POST", "/v1/models/gpt/generate",
                       json={"prompt": "Fir", "max_new_tokens": 24, "temperature": 0, "stream": True}) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        event = "message"
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "done":
                    done = data["text"]
                else:
                    pieces.append(data["text"])
    assert len(pieces) > 1 and "".join(pieces) == eager == done


BIG = b"\0" * (10 * (1 << 20) + 1)


@pytest.mark.parametrize("name, request_kwargs, code, says", [
    ("text", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("image", {"content": b"\x89PNG broken", "headers": {"content-type": "image/png"}}, 400, "cannot read the uploaded image"),
    ("keyword", {"content": b"RIFF....WAVE", "headers": {"content-type": "audio/wav"}}, 400, "cannot read the uploaded audio"),
    ("ctc", {"content": wav(seconds=0.3)[:44] + bytes(8000), "headers": {"content-type": "audio/wav"}}, 400, "silent"),
    ("image", {"files": [("file", ("a.png", png())), ("file", ("b.png", b"junk"))]}, 400, "input 1: cannot read"),
    ("text", {"json": {"inputs": []}}, 422, "inputs"),
    ("text", {"json": {"inputs": ["ok"], "top_k": 0}}, 422, "top_k"),
    ("text", {"json": {"inputs": ["x"] * 65}}, 413, "at most 64"),
    ("text", {"json": {"inputs": ["x" * 10_001]}}, 413, "at most 10000"),
    ("image", {"content": BIG, "headers": {"content-type": "image/png"}}, 413, "at most"),
    ("image", {"json": {"inputs": ["x"]}}, 415, "multipart/form-data"),
    ("text", {"content": b"x", "headers": {"content-type": "image/png"}}, 415, "cannot take image/png"),
    ("nope", {"json": {"inputs": ["x"]}}, 404, "no model named 'nope'"),
    ("text", {"json": {"inputs": ["x"], "topk": 1}}, 422, "unknown key 'topk' (did you mean 'top_k'?)"),
    ("text", {"json": {"inputs": ["x"]}, "params": {"topk": 1}}, 422, "unknown query parameter 'topk'"),
    ("ctc", {"content": b"x", "headers": {"content-type": "audio/wav"}, "params": {"top_k": 1}}, 422, "takes beam_width"),
    ("image", {"content": b"", "headers": {"content-type": "image/png"}}, 400, "the body is empty"),
    ("image", {"files": [("file", (str(i), b"x")) for i in range(65)]}, 413, "at most 64 inputs"),
    ("gpt", {"json": {"inputs": ["x"]}}, 400, "language model"),
    ("image", {"content": png(), "headers": {"content-type": "image/png", "x-request-timeout": "0.000000001"}}, 504, "within"),
    ("image", {"content": png(), "headers": {"content-type": "image/png", "x-request-timeout": "soon"}}, 400, "seconds"),
])
def test_bad_requests_get_their_code_and_a_message(client, name, request_kwargs, code, says):
    response = predict(client, name, **request_kwargs)
    assert response.status_code == code, response.text
    assert says in response.json()["error"]


def test_generation_errors(client):
    for body, code, says in [
        ({"prompt": "日本", "max_new_tokens": 3}, 400, "outside the vocabulary"),
        ({"prompt": "Fir", "max_new_tokens": 5000}, 413, "at most 1024"),
        ({"prompt": "Fir", "top_p": 2}, 422, "top_p"),
        ({"max_new_tokens": 3}, 422, "prompt"),
    ]:
        response = client.post("/v1/models/gpt/generate", json=body)
        assert response.status_code == code and says in response.json()["error"], response.text
    response = client.post("/v1/models/image/generate", json={"prompt": "x"})
    assert response.status_code == 400 and "does not generate" in response.json()["error"]
    response = client.post("/v1/models/gpt/generate", json={"prompt": "Fir", "max_tokens": 3})
    assert response.status_code == 422 and "unknown key 'max_tokens' (did you mean 'max_new_tokens'?)" in response.text
    response = client.post("/v1/models/gpt/generate", content=b"Fir", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and "application/json" in response.json()["error"]


def explain(client, name, **kwargs) -> httpx.Response:
    return client.post(f"/v1/models/{name}/explain", **kwargs)


def picture(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_explanations_of_images_and_audio_come_with_their_picture(client, tiny_runs):
    eager = grove.load(tiny_runs["image"][0], device="cpu").explain([png(1), png(2)], method="saliency", target="3")
    response = explain(client, "image", files=[("file", ("a.png", png(1))), ("file", ("b.png", png(2)))],
                       params={"method": "saliency", "target": "3"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    for got, e in zip(results, eager):
        assert (got["input"], got["method"], got["target"]) == (e.input, "saliency", "3")
        assert got["probability"] == pytest.approx(e.probability, abs=1e-5)
        assert [t["label"] for t in got["top"]] == [label for label, _ in e.top]
        assert got["deletion"]["auc"] == pytest.approx(e.deletion["auc"], abs=1e-4)
        assert picture(got["image"]).size == Image.open(io.BytesIO(e.png())).size
        assert "tokens" not in got
    keyword = explain(client, "keyword", content=wav(), headers={"content-type": "audio/wav"})
    assert keyword.status_code == 200, keyword.text
    result = keyword.json()["results"][0]
    assert result["method"] == "ig" and result["target"] == result["top"][0]["label"]  # auto: the predicted label
    assert picture(result["image"]).size[0] > 0
    ctc = explain(client, "ctc", content=wav(seconds=0.5), headers={"content-type": "audio/wav"},
                  params={"method": "saliency"})
    assert ctc.status_code == 200, ctc.text
    result = ctc.json()["results"][0]
    assert result["target"] == "".join(c["char"] for c in result["characters"]) and result["top"] == []
    assert picture(result["image"]).size[0] > 0


def test_explanations_of_texts_and_prompts_are_per_token(client, tiny_runs):
    texts = ["a great film , i loved it", "terrible phone"]
    eager = grove.load(tiny_runs["text"][0], device="cpu").explain(texts)
    response = explain(client, "text", json={"inputs": texts})
    assert response.status_code == 200, response.text
    for got, e in zip(response.json()["results"], eager):
        assert (got["input"], got["method"], got["target"]) == (e.input, "ig", e.target)
        assert [t["token"] for t in got["tokens"]] == e.tokens
        assert np.allclose([t["attribution"] for t in got["tokens"]], e.heat, atol=1e-5)
        assert "image" not in got
    classes = client.get("/v1/models/text").json()["classes"]
    plain = explain(client, "text", content=texts[1].encode(), headers={"content-type": "text/plain"},
                    params={"method": "occlusion", "target": classes[-1]})
    assert plain.status_code == 200, plain.text
    assert {k: plain.json()["results"][0][k] for k in ("input", "method", "target")} == {
        "input": texts[1], "method": "occlusion", "target": classes[-1]}
    gpt = explain(client, "gpt", json={"inputs": ["Fir", "Bef"], "target": "s"})
    assert gpt.status_code == 200, gpt.text
    first, second = gpt.json()["results"]
    assert first["target"] == second["target"] == "s" and len(first["top"]) == 5
    assert [t["token"] for t in first["tokens"]] == ["F", "i", "r"] and second["input"] == "Bef"


PNG = {"content": png(), "headers": {"content-type": "image/png"}}


@pytest.mark.parametrize("name, request_kwargs, code, says", [
    ("image-onnx", PNG, 400, "serve the run directory it was exported from"),
    ("nope", {"json": {"inputs": ["x"]}}, 404, "no model named 'nope'"),
    ("image", {**PNG, "params": {"method": "magic"}}, 400, "unknown explanation method 'magic'"),
    ("image", {**PNG, "params": {"method": "attention"}}, 400, "needs a vision transformer"),
    ("text", {"json": {"inputs": ["ok"], "method": "gradcam"}}, 400, "does not apply to text"),
    ("image", {**PNG, "params": {"target": "11"}}, 400, "unknown target label '11'"),
    ("text", {"json": {"inputs": ["ok"], "target": "nope"}}, 400, "unknown target label 'nope'"),
    ("gpt", {"json": {"inputs": ["Fir"], "target": "Fi"}}, 400, "give one token"),
    ("gpt", {"json": {"inputs": ["Fir", "日本"]}}, 400, "input 1: the text has 2 character(s) outside"),
    ("text", {"json": {"inputs": ["x"] * 9}}, 413, "explains at most 8 at once"),
    ("image", {"files": [("file", (str(i), png())) for i in range(9)]}, 413, "explains at most 8 at once"),
    ("image", {"files": [("file", ("a.png", png())), ("file", ("b.png", b"junk"))]}, 400, "input 1: cannot read"),
    ("image", {"content": b"\x89PNG broken", "headers": {"content-type": "image/png"}}, 400, "cannot read the uploaded"),
    ("gpt", {"content": b"Fir", "headers": {"content-type": "text/plain"}}, 415, "application/json"),
    ("gpt", {"json": {"inputs": ["Fir"]}, "params": {"method": "ig"}}, 422, "its options in the JSON body"),
    ("ctc", {"content": wav(), "headers": {"content-type": "audio/wav"}, "params": {"target": "a"}}, 422,
     "unknown query parameter 'target'"),
    ("text", {"json": {"inputs": ["x"], "methods": "ig"}}, 422, "unknown key 'methods' (did you mean 'method'?)"),
    ("image", {"content": png(), "headers": {"content-type": "image/png", "x-request-timeout": "0.000000001"}}, 504,
     "no explanation from model 'image' within"),
])
def test_explain_refusals_get_their_code_and_a_message(client, name, request_kwargs, code, says):
    response = explain(client, name, **request_kwargs)
    assert response.status_code == code, response.text
    assert says in response.json()["error"]


def test_explanations_are_counted_in_the_metrics(client):
    assert explain(client, "image", **PNG).status_code == 200
    assert explain(client, "image-onnx", **PNG).status_code == 400
    text = client.get("/metrics").text
    assert 'grove_requests_total{code="200",route="/v1/models/image/explain"}' in text
    assert 'grove_requests_total{code="400",route="/v1/models/{name}/explain"}' in text
    assert 'grove_request_seconds_count{route="/v1/models/image/explain"}' in text


def test_unknown_endpoints_and_methods_say_where_to_look(client):
    response = client.get("/v1/model")
    assert response.status_code == 404 and "GET /v1/models lists" in response.json()["error"]
    response = client.get("/v1/models/image/predict")
    assert response.status_code == 405 and "takes POST" in response.json()["error"]


def test_a_request_larger_than_max_batch_runs_in_passes(client):
    before = batches(client)
    files = [("file", (str(i), png(i % 10))) for i in range(40)]  # the served max batch is 32
    response = predict(client, "image", files=files, params={"top_k": 1})
    assert response.status_code == 200 and len(response.json()["results"]) == 40
    after = batches(client)
    assert (after["count"] - before["count"], after["sum"] - before["sum"]) == (2, 40)


def test_concurrent_requests_share_batches_and_a_bad_one_fails_alone(client):
    def one(i):
        body = b"not an image" if i == 5 else png(i % 10)
        return predict(client, "image", content=body, headers={"content-type": "image/png"})

    for burst in range(3):  # whether requests overlap is up to the scheduler: one burst of three must batch
        before = batches(client)
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(one, range(48)))
        codes = [r.status_code for r in responses]
        assert codes[5] == 400 and codes[:5] + codes[6:] == [200] * 47
        after = batches(client)
        assert after["sum"] - before["sum"] == 47
        if after["count"] - before["count"] < 47:  # some requests were answered together
            break
    else:
        pytest.fail("no two of 3 x 47 concurrent requests shared a forward pass")


def batches(client) -> dict:
    """The image model's batch-size histogram: {"count": forward passes, "sum": inputs}."""
    text = client.get("/metrics").text
    return {k: float(next(line.split()[-1] for line in text.splitlines()
                          if line.startswith(f'grove_batch_size_{k}{{model="image"}}'))) for k in ("count", "sum")}


def test_health_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    predict(client, "nope", json={"inputs": ["x"]})
    text = client.get("/metrics").text
    assert 'grove_requests_total{code="404",route="/v1/models/{name}/predict"}' in text
    assert 'grove_request_seconds_bucket{le="0.1",route="/v1/models/{name}/predict"}' in text
    assert 'grove_queue_depth{model="gpt"} 0.0' in text and "grove_batch_size_bucket" in text


def test_health_answers_while_a_long_generation_runs(client):
    done = threading.Event()

    def generate():
        client.post("/v1/models/gpt/generate", json={"prompt": "Fir", "max_new_tokens": 1000, "temperature": 0})
        done.set()

    thread = threading.Thread(target=generate)
    thread.start()
    try:
        answered_during = 0
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
            answered_during += not done.is_set()
        assert answered_during > 0
    finally:
        thread.join()


def test_the_page_and_schema_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    paths = client.get("/openapi.json").json()["paths"]
    # each model has its own operation, with what it takes; no API key, so no security declared
    assert {p for p in paths if p.startswith("/v1/models/")} == {
        "/v1/models/{name}", "/v1/models/gpt/generate",
        *(f"/v1/models/{m}/predict" for m in ("image", "image-onnx", "text", "keyword", "ctc")),
        *(f"/v1/models/{m}/explain" for m in ("image", "text", "keyword", "ctc", "gpt"))}
    image, text = paths["/v1/models/image/predict"]["post"], paths["/v1/models/text/predict"]["post"]
    assert set(image["requestBody"]["content"]) >= {"multipart/form-data", "image/png", "application/octet-stream"}
    assert "application/json" not in image["requestBody"]["content"] and "application/json" in text["requestBody"]["content"]
    assert [p["name"] for p in paths["/v1/models/ctc/predict"]["post"]["parameters"]] == ["beam_width"]
    assert {"400", "413", "415", "503", "504"} <= set(image["responses"]) and "401" not in image["responses"]
    assert "security" not in image
    explain_image, explain_gpt = paths["/v1/models/image/explain"]["post"], paths["/v1/models/gpt/explain"]["post"]
    assert {p["name"]: p["schema"].get("enum") for p in explain_image["parameters"]} == {
        "method": ["auto", "ig", "saliency", "gradcam", "occlusion"], "target": None}
    assert set(explain_image["requestBody"]["content"]) == set(image["requestBody"]["content"])
    assert list(explain_gpt["requestBody"]["content"]) == ["application/json"] and "parameters" not in explain_gpt
    name = paths["/v1/models/{name}"]["get"]["parameters"][0]
    assert set(name["schema"]["enum"]) == {"image", "image-onnx", "text", "keyword", "ctc", "gpt"}


def test_api_key(start_server, tiny_runs):
    server = start_server(f"text={tiny_runs['text'][0]}", "--api-key-env", "GROVE_TEST_KEY",
                          env={"GROVE_TEST_KEY": "s3cret"})
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for path in ("/v1/models", "/metrics", "/v1/models/text", "/openapi.json"):
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                response = c.get(path, headers=headers)
                assert response.status_code == 401 and "API key" in response.json()["error"], (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
            assert "is wrong" in c.get(path, headers={"authorization": "Bearer wrong"}).json()["error"]
            assert c.get(path, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert predict(c, "text", json={"inputs": ["x"]}).status_code == 401
        assert predict(c, "text", json={"inputs": ["x"]}, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == c.get("/readyz").status_code == c.get("/").status_code == 200
        schema = c.get("/openapi.json", headers={"authorization": "Bearer s3cret"}).json()
        assert schema["paths"]["/v1/models/text/predict"]["post"]["security"] == [{"HTTPBearer": []}]
    assert server.stop() == 0


def test_a_full_queue_answers_503_with_retry_after(start_server, tiny_runs):
    server = start_server(f"image={tiny_runs['image'][0]}", "--max-batch", "1", "--queue", "8", "--threads", "1")
    files = [("file", (str(i), png(i))) for i in range(8)]  # 8 inputs: one request fills the queue
    with httpx.Client(base_url=server.url, timeout=30) as c, ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda _: predict(c, "image", files=files), range(48)))
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503}, codes
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "retry shortly" in r.json()["error"] for r in refused)
    assert server.stop() == 0


def test_sigterm_drains_then_exits_0(start_server, tiny_runs):
    server = start_server(f"gpt={tiny_runs['gpt'][0]}", f"image={tiny_runs['image'][0]}", "--threads", "1")
    pieces, events = [], []
    with httpx.Client(base_url=server.url, timeout=60) as c, httpx.Client(base_url=server.url, timeout=60) as other:
        with c.stream("POST", "/v1/models/gpt/generate",
                      json={"prompt": "Fir", "max_new_tokens": 400, "temperature": 0, "stream": True}) as stream:
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    pieces.append(line)
                    break
            server.proc.send_signal(signal.SIGTERM)  # a generation is under way
            ready = other.get("/readyz")
            while ready.status_code == 200:  # the signal is handled between two ticks of the loop
                ready = other.get("/readyz")
            assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
            assert other.get("/healthz").status_code == 200
            refused = predict(other, "image", content=png(), headers={"content-type": "image/png"})
            assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
            for line in lines:
                if line.startswith("event: "):
                    events.append(line[7:])
                elif line.startswith("data: "):
                    pieces.append(line)
    assert events == ["done"] and len(pieces) > 100  # the stream under way finished
    assert server.stop() == 0
    assert "draining" in server.proc.stderr.read()


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(start_server, tiny_runs):
    server = start_server(f"gpt={tiny_runs['gpt'][0]}", "--threads", "1")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/v1/models/gpt/generate",
                      json={"prompt": "Fir", "max_new_tokens": 1000, "temperature": 0, "stream": True}) as stream:
            next(stream.iter_lines())
            server.proc.send_signal(signal.SIGINT)
            while c.get("/readyz").status_code == 200:  # draining: the stream goes on
                pass
            server.proc.send_signal(signal.SIGINT)
            assert server.proc.wait(30) == 130
    err = server.proc.stderr.read()
    assert "stopped before the requests under way finished" in err and "Traceback" not in err


def test_cli_mistakes_are_one_line(tiny_runs, tmp_path):
    run = tiny_runs["text"][0]
    cases = [
        (["serve", tmp_path / "missing"], "missing"),
        (["serve", run, run], "two models would be named"),
        (["serve", run, "--api-key-env", "GROVE_UNSET_KEY_VAR"], "GROVE_UNSET_KEY_VAR is not set"),
        (["serve", "bad name=" + str(run)], "model name 'bad name'"),
        (["serve", run, "--int8"], "--int8 runs export folders"),
        (["serve", run, "--port", "99999"], "must be 0 (a free port) to 65535"),
    ]
    for args, says in cases:
        result = run_grove(*args, *([] if "--port" in args else ["--port", "0"]))
        assert result.returncode == 2 and says in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    warned = run_grove("serve", tmp_path / "missing", "--host", "0.0.0.0", "--port", "0")
    assert "without an API key" in warned.stderr and warned.returncode == 2
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_grove("serve", run, "--port", busy.getsockname()[1])
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr and "--port" in result.stderr
    assert os.environ.get("GROVE_UNSET_KEY_VAR") is None
