"""The demo page at / of `grove serve`, driven in a real browser: Debian's Chromium through
Playwright, against the session's server of tiny models (`served`). Each test uses the page as
a person would (pick a model, give it a file, a recording, a text or a prompt, press Run) and
checks what the page shows against what the API answers directly for the same input. Every
page must run without a JavaScript exception or console error (the `demo` fixture checks).

Needs Chromium (bash scripts/install-system-deps.sh) and the playwright package; skipped with a
reason without them. Playwright's own browsers are never downloaded: it drives /usr/bin/chromium.
"""

import base64
import io
import json
import re
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import tone

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
pytest.importorskip("fastapi")
CHROMIUM = shutil.which("chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    # getUserMedia answers at once, with a fake microphone that beeps
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
# Chromium logs every 4xx answer the page receives; the tests that provoke one allow it.
HTTP_ERROR = "Failed to load resource: the server responded with a status of {}"


# -- inputs, made in each test as a user would have them ------------------------------------------
def digit_png(path, i=0):
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[i] * 255 / 16).round().astype(np.uint8)
    Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(path)
    return path


def tone_wav(path, freq=440, seconds=0.8, rate=16000):
    sf.write(str(path), tone(freq, seconds, rate), rate, subtype="PCM_16")
    return path


# -- the API, asked directly ----------------------------------------------------------------------
def api(url, path, body: bytes | dict, content_type="application/json", key=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def model_list(url, key=None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url + "/v1/models", headers=headers), timeout=60) as r:
        return {m["name"]: m for m in json.load(r)["models"]}


# -- the browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Demo:
    """One fresh page (its own context: its own sessionStorage) on the demo, with what went wrong
    in it: exceptions and console errors, minus those a test allows."""

    def __init__(self, context, url):
        self.url = url
        self.page = context.new_page()
        self.page.set_default_timeout(30_000)
        self.problems, self.allowed = [], []
        self.page.on("pageerror", lambda err: self.problems.append(f"exception: {err}"))
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))

    def open(self, fragment=""):
        self.page.goto(self.url + "/" + fragment)
        return self

    def wait_for_models(self):
        self.page.wait_for_selector("#model option", state="attached")
        # every state #status takes, to see that "working" was shown while waiting
        self.page.evaluate("""() => {
            window.statusStates = [];
            new MutationObserver(() => window.statusStates.push(document.querySelector('#status').dataset.state))
                .observe(document.querySelector('#status'), {attributes: true, attributeFilter: ['data-state']});
        }""")

    def choose(self, model):
        self.page.select_option("#model", model)

    def run(self, expect="done", button="#run"):
        """Press Run (or another button); wait until the page has an answer or an error."""
        self.page.evaluate("() => { window.statusStates = []; }")
        self.page.click(button)
        self.page.wait_for_selector('#status:is([data-state="done"], [data-state="error"])', state="attached")
        state = self.page.get_attribute("#status", "data-state")
        error = self.page.text_content("#error") if self.page.is_visible("#error") else ""
        assert state == expect, f"the page ended {state}: {error!r}"
        assert self.page.evaluate("window.statusStates")[0] == "working"
        assert self.page.is_disabled("#run") is False
        return error

    def bars(self) -> list[dict]:
        return self.page.eval_on_selector_all("#results .bar", """rows => rows.map(r => ({
            label: r.querySelector('.label').textContent, shown: r.querySelector('.pct').textContent,
            probability: Number(r.dataset.probability),
            width: r.querySelector('.fill').getBoundingClientRect().width,
            track: r.querySelector('.track').getBoundingClientRect().width}))""")

    def allow_http_error(self, status):
        self.allowed.append(HTTP_ERROR.format(status))

    def unexpected_problems(self):
        return [p for p in self.problems if not any(a in p for a in self.allowed)]


@pytest.fixture
def new_demo(chromium):
    """new_demo(url) -> a Demo on a fresh page; each is checked for problems and closed after the test."""
    made = []

    def make(url) -> Demo:
        context = chromium.new_context(viewport={"width": 820, "height": 960})
        made.append((context, Demo(context, url)))
        return made[-1][1]

    yield make
    problems = [p for _, demo in made for p in demo.unexpected_problems()]
    for context, _ in made:
        context.close()
    assert not problems, problems


@pytest.fixture
def demo(new_demo, served):
    demo = new_demo(served.url).open()
    demo.wait_for_models()
    return demo


def assert_bars_match(rows, direct_top, classes):
    """The bars are the API's top labels, in its order, with its probabilities to 0.1 percent."""
    assert [r["label"] for r in rows] == [t["label"] for t in direct_top]
    assert set(r["label"] for r in rows) <= set(classes) and len(set(r["label"] for r in rows)) == len(rows)
    shown = [float(re.fullmatch(r"(\d+\.\d)%", r["shown"]).group(1)) for r in rows]
    assert shown == sorted(shown, reverse=True)
    for r, value, t in zip(rows, shown, direct_top):
        assert abs(value - 100 * t["probability"]) <= 0.05 + 1e-9, (r, t)
        assert r["probability"] == pytest.approx(t["probability"], abs=1e-12)
        assert r["width"] == pytest.approx(r["track"] * t["probability"], abs=1.5)  # the bar is as long as it says
    assert sum(r["probability"] for r in rows) <= 1 + 1e-6
    assert sum(shown) <= 100 + 0.05 * len(shown)  # each shown value is rounded to 0.1


# -- the tests -----------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_image_shows_the_top_5_the_api_gives(demo, served, tmp_path):
    path = digit_png(tmp_path / "digit.png", i=3)
    page = demo.page
    assert page.title() == "grove serve"
    options = page.eval_on_selector_all("#model option", "o => o.map(x => [x.value, x.textContent])")
    assert [v for v, _ in options] == ["ctc", "gpt", "image", "image-onnx", "keyword", "text"]
    assert dict(options)["image"] == "image — image classification"
    demo.choose("image")
    assert page.is_visible("#file") and not page.is_visible("#record") and not page.is_visible("#text")
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.querySelector('#preview').naturalWidth === 32")
    assert page.is_visible("#preview")
    demo.run()
    rows = demo.bars()
    assert len(rows) == 5
    status, direct = api(served.url, "/v1/models/image/predict?top_k=5", path.read_bytes(), "image/png")
    assert status == 200, direct
    assert_bars_match(rows, direct["results"][0]["top"], [str(d) for d in range(10)])
    page.screenshot(path=tmp_path / "demo-image.png", full_page=True)  # for a person to look at

    # the same file dropped on the drop zone, for the ONNX export of the same run
    demo.choose("image-onnx")
    assert page.url.endswith("#image-onnx")  # a reload comes back to this model
    page.evaluate("""async bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'}));
        document.querySelector('#drop').dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
    }""", list(path.read_bytes()))
    assert "dropped.png" in page.text_content("#file-name")
    demo.run()
    status, direct = api(served.url, "/v1/models/image-onnx/predict?top_k=5", path.read_bytes(), "image/png")
    assert status == 200, direct
    assert_bars_match(demo.bars(), direct["results"][0]["top"], [str(d) for d in range(10)])


@pytest.mark.timeout(120)
def test_text_shows_bars_of_the_models_classes(demo, served):
    page = demo.page
    demo.choose("text")
    assert page.is_visible("#text") and not page.is_visible("#file")
    assert page.is_disabled("#run")  # nothing to classify yet
    sentence = "a great film , i loved every minute of it"
    page.fill("#text", sentence)
    demo.run()
    classes = model_list(served.url)["text"]["classes"]
    rows = demo.bars()
    assert len(rows) == min(5, len(classes))
    status, direct = api(served.url, "/v1/models/text/predict", {"inputs": [sentence], "top_k": 5})
    assert status == 200, direct
    assert_bars_match(rows, direct["results"][0]["top"], classes)


@pytest.mark.timeout(120)
def test_audio_files_are_transcribed_and_classified(demo, served, tmp_path):
    path = tone_wav(tmp_path / "tone.wav")
    page = demo.page
    demo.choose("ctc")
    assert page.is_visible("#record") and page.get_attribute("#file", "accept").startswith(".wav")
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.querySelector('#player').readyState >= 1")  # the browser can play it
    demo.run()
    status, direct = api(served.url, "/v1/models/ctc/predict", path.read_bytes(), "audio/wav")
    assert status == 200, direct
    assert page.is_visible("#transcript-box") and not page.is_visible("#results")
    assert page.text_content("#transcript") == direct["results"][0]["transcript"]

    demo.choose("keyword")
    assert not page.is_visible("#player")  # a new model starts with nothing chosen
    page.set_input_files("#file", str(path))
    demo.run()
    status, direct = api(served.url, "/v1/models/keyword/predict?top_k=5", path.read_bytes(), "audio/wav")
    assert status == 200, direct
    assert not page.is_visible("#transcript-box")
    assert_bars_match(demo.bars(), direct["results"][0]["top"], model_list(served.url)["keyword"]["classes"])


@pytest.mark.timeout(120)
def test_recording_from_the_microphone_makes_a_wav_the_server_reads(demo, served):
    page = demo.page
    demo.choose("keyword")
    page.click("#record")
    page.wait_for_selector('#record[aria-pressed="true"]')
    assert page.is_disabled("#run")  # not while recording
    page.wait_for_timeout(1200)
    page.click("#record")
    page.wait_for_selector("#player[data-seconds]", state="attached")
    assert page.get_attribute("#record", "aria-pressed") == "false"
    seconds = float(page.get_attribute("#player", "data-seconds"))
    assert 0.5 < seconds < 3
    page.wait_for_function("document.querySelector('#player').readyState >= 1")
    assert page.evaluate("document.querySelector('#player').duration") == pytest.approx(seconds, abs=0.01)
    # the bytes the page will send: a 16-bit mono WAV holding the fake microphone's beeps
    wav = base64.b64decode(page.evaluate("""async () => {
        const bytes = new Uint8Array(await (await fetch(document.querySelector('#player').src)).arrayBuffer());
        let s = ''; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); }"""))
    info = sf.info(io.BytesIO(wav))
    assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
    assert info.frames / info.samplerate == pytest.approx(seconds, abs=1e-3)
    samples, _ = sf.read(io.BytesIO(wav))
    assert np.abs(samples).max() > 0.05
    demo.run()
    rows = demo.bars()
    classes = model_list(served.url)["keyword"]["classes"]
    assert len(rows) == len(classes) and {r["label"] for r in rows} == set(classes)
    status, direct = api(served.url, "/v1/models/keyword/predict?top_k=5", wav, "audio/wav")
    assert status == 200, direct
    assert_bars_match(rows, direct["results"][0]["top"], classes)


@pytest.mark.timeout(120)
def test_generation_streams_to_the_greedy_continuation(demo, served, tmp_path):
    page = demo.page
    demo.choose("gpt")
    assert page.is_visible("#prompt") and not page.is_visible("#text") and not page.is_visible("#file")
    prompt = "First Citizen:\nBefore we"
    page.fill("#prompt", prompt)
    page.fill("#max-new-tokens", "20")
    page.fill("#temperature", "0")
    # the text's length before each piece was added: it grows while the answer streams
    page.evaluate("""() => {
        window.lengths = [];
        new MutationObserver(records => { for (const r of records)
            if (r.type === 'characterData') window.lengths.push(r.oldValue.length); })
            .observe(document.querySelector('#generation'),
                     {characterData: true, characterDataOldValue: true, subtree: true, childList: true});
    }""")
    demo.run()
    status, direct = api(served.url, "/v1/models/gpt/generate",
                         {"prompt": prompt, "max_new_tokens": 20, "temperature": 0})
    assert status == 200, direct
    text = page.text_content("#generation")
    assert text == direct["text"] and len(text) > 0
    assert page.get_attribute("#generation", "data-state") == "done"
    assert page.text_content("#generation-prompt") == prompt
    pieces = int(page.get_attribute("#generation", "data-pieces"))
    assert 2 <= pieces <= 20
    growing = {n for n in page.evaluate("window.lengths") if 0 < n < len(text)}
    assert len(growing) >= 2, page.evaluate("window.lengths")
    page.screenshot(path=tmp_path / "demo-generation.png", full_page=True)


@pytest.mark.timeout(120)
def test_explain_shows_the_overlay_of_an_image_and_the_coloured_tokens_of_a_text(demo, served, tmp_path):
    from grove.explain.render import _color

    page = demo.page
    demo.choose("image")
    assert page.is_visible("#explain") and page.is_disabled("#explain")  # nothing to explain yet
    methods = page.eval_on_selector_all("#explain-method option", "o => o.map(x => x.value)")
    assert methods == model_list(served.url)["image"]["explain_methods"]
    page.set_input_files("#file", str(digit_png(tmp_path / "digit.png", i=4)))
    page.select_option("#explain-method", "gradcam")
    demo.run(button="#explain")
    page.wait_for_function("document.querySelector('#explanation-image').naturalWidth > 0")
    assert page.is_visible("#explanation-image") and not page.is_visible("#results")
    assert page.text_content("#explanation-title").startswith("gradcam: ")
    assert page.text_content("#explanation-deletion").startswith("deletion area ")
    page.screenshot(path=tmp_path / "demo-explain-image.png", full_page=True)

    demo.choose("image-onnx")
    assert not page.is_visible("#explain")  # an export cannot explain

    demo.choose("text")
    assert not page.is_visible("#explanation-box")
    sentence = "a great film , i loved it"
    page.fill("#text", sentence)
    demo.run(button="#explain")
    status, direct = api(served.url, "/v1/models/text/explain", {"inputs": [sentence]})
    assert status == 200, direct
    tokens = direct["results"][0]["tokens"]
    spans = page.eval_on_selector_all("#explanation-tokens .token", """spans => spans.map(s => ({
        text: s.textContent, color: getComputedStyle(s).backgroundColor}))""")
    assert [s["text"] for s in spans] == [t["token"] for t in tokens]
    scale = max(abs(t["attribution"]) for t in tokens) or 1.0
    assert [s["color"] for s in spans] == ["rgb({}, {}, {})".format(*_color(t["attribution"] / scale)) for t in tokens]
    assert {s["color"] for s in spans} & {"rgb(64, 255, 64)", "rgb(255, 64, 64)"}  # the strongest, in full colour
    page.screenshot(path=tmp_path / "demo-explain-text.png", full_page=True)


@pytest.mark.timeout(120)
def test_errors_show_the_servers_message_and_clear_on_success(demo, served, tmp_path):
    demo.allow_http_error(400)
    page = demo.page
    bad = tmp_path / "x.png"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    demo.choose("image")
    page.set_input_files("#file", str(bad))
    demo.run(expect="error")
    status, direct = api(served.url, "/v1/models/image/predict?top_k=5", bad.read_bytes(), "image/png")
    assert status == 400 and direct["error"].startswith("cannot read the uploaded image")
    assert page.get_attribute("#error", "role") == "alert" and page.is_visible("#error")
    assert page.text_content("#error") == direct["error"]
    assert not page.is_visible("#results")

    page.set_input_files("#file", str(digit_png(tmp_path / "good.png")))
    assert not page.is_visible("#error")
    demo.run()
    assert len(demo.bars()) == 5 and not page.is_visible("#error")


@pytest.mark.timeout(120)
def test_a_server_with_an_api_key_asks_for_it_and_keeps_it_for_the_tab(new_demo, start_server, tiny_runs, tmp_path):
    server = start_server(f"digits={tiny_runs['image'][1]}", "--api-key-env", "DEMO_KEY", env={"DEMO_KEY": "s3cret"})
    demo = new_demo(server.url)
    demo.allow_http_error(401)
    page = demo.open().page
    page.wait_for_selector("#key-form")
    assert not page.is_visible("#form")
    page.fill("#api-key", "wrong")
    page.click("#key-save")
    page.wait_for_selector("#key-message:has-text('refused')")
    assert page.evaluate("sessionStorage.getItem('grove-api-key')") is None  # a wrong key is not kept
    page.fill("#api-key", "s3cret")
    page.click("#key-save")
    demo.wait_for_models()
    assert not page.is_visible("#key-form")
    path = digit_png(tmp_path / "digit.png", i=5)
    page.set_input_files("#file", str(path))
    demo.run()
    status, direct = api(server.url, "/v1/models/digits/predict?top_k=5", path.read_bytes(), "image/png", key="s3cret")
    assert status == 200, direct
    assert_bars_match(demo.bars(), direct["results"][0]["top"], [str(d) for d in range(10)])
    # kept in this tab: a reload goes straight to the models
    page.reload()
    demo.wait_for_models()
    assert not page.is_visible("#key-form") and page.is_visible("#key-forget")
    assert page.evaluate("sessionStorage.getItem('grove-api-key')") == "s3cret"
