"""grove report: one self-contained HTML page per run, for every kind of the session's tiny runs.

Each kind's report is written once (`reports`) and read by the tests: its sections, that nothing
is fetched from the network, that its figures are `grove evaluate`'s, and, in headless Chromium
at a phone's size, that it shows without errors or sideways scrolling.
"""

import itertools
import random
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from grove.engine.evaluate import evaluate_run
from grove.errors import GroveError
from grove.report import write_report
from grove.report.calibration import calibration
from grove.report.render import marked_diff

KINDS = ["image", "text", "keyword", "ctc", "gpt", "lstm"]
COMMON = {"recipe", "data", "curves", "metrics", "compute", "privacy", "model-card"}
SECTIONS = {"image": {"calibration", "mistakes"}, "text": {"calibration", "mistakes"},
            "keyword": {"calibration", "mistakes"}, "ctc": {"transcripts"}, "gpt": {"samples"}, "lstm": {"samples"}}


class Page(HTMLParser):
    """What the tests read of a report: tags and attributes, figures, text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.sections, self.figures, self.links, self.text = [], set(), {}, [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.add(a["id"])
        if "data-metric" in a:
            self.figures[a["data-metric"]] = float(a["data-value"])
        for key in ("src", "href"):
            if key in a:
                self.links.append((tag, a[key]))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def reports(tiny_runs, tmp_path_factory):
    """kind -> (run dir, report path), each written once, on first use."""
    base, written = tmp_path_factory.mktemp("reports"), {}

    def report(kind):
        if kind not in written:
            run = tiny_runs[kind][0]
            written[kind] = run, write_report(run, out=base / f"{kind}.html", device="cpu")
        return written[kind]

    return report


@pytest.mark.parametrize("kind", KINDS)
def test_report_has_the_sections_and_grove_evaluates_figures(reports, kind):
    run, path = reports(kind)
    page = Page(path.read_text())
    assert page.sections == COMMON | SECTIONS[kind]
    assert "script" not in page.tags
    images = [src for tag, src in page.links if tag == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert all(not link.startswith(("http:", "https:", "//")) for _, link in page.links)
    assert all(href.startswith("#") for tag, href in page.links if tag == "a")

    figures = evaluate_run(run, device="cpu")  # same split and checkpoint as the report's
    expected = {k: v for k, v in figures.items() if isinstance(v, (int, float))}
    for metric, values in figures.get("per_class", {}).items():
        expected.update({f"{metric}[{i}]": v for i, v in enumerate(values)})
    shown = {k: v for k, v in page.figures.items() if k != "ece"}
    assert shown == expected
    if kind in ("image", "text", "keyword"):
        assert 0 <= page.figures["ece"] <= 1
        assert f"Metrics on the {figures['split']} split" in page.text


def test_language_model_report_shows_samples_and_perplexity(reports):
    page = Page(reports("gpt")[1].read_text())
    text = " ".join(page.text)
    assert "Perplexity" in text and text.count("seed ") >= 3


def test_ctc_report_marks_transcript_errors():
    ref, hyp = marked_diff("the cat sat down", "the bat sat")
    assert ref == "the <del>c</del>at sat <del>down</del>"
    assert hyp == "the <ins>b</ins>at sat"
    assert marked_diff("hi", "") == ("<del>hi</del>", "<em>(empty)</em>")
    assert marked_diff("a <b>", "a <b>") == ("a &lt;b&gt;", "a &lt;b&gt;")


def test_ece_of_a_hand_made_example():
    # bin (14/15, 1]: half right at 0.95, gap 0.45; bin (8/15, 9/15]: all right at 0.55, gap 0.45
    result = calibration([0.95, 0.95, 0.55, 0.55], [1, 0, 1, 1])
    assert result["ece"] == pytest.approx(0.45)
    filled = [b for b in result["bins"] if b["count"]]
    assert [(b["count"], b["accuracy"], b["confidence"]) for b in filled] == [
        (2, 1.0, pytest.approx(0.55)), (2, 0.5, pytest.approx(0.95))]
    assert len(result["bins"]) == 15 and result["bins"][0]["lower"] == 0 and result["bins"][-1]["upper"] == 1
    assert result["bins"][8]["lower"] == pytest.approx(8 / 15)
    assert calibration([0.8] * 5, [1, 1, 1, 1, 0])["ece"] == pytest.approx(0.0)  # accuracy 0.8 at 0.8
    assert calibration([1.0, 1 / 15], [1, 1])["bins"][0]["count"] == 1  # edges belong to the bin below


def test_ece_equals_the_reference_loop():
    """Guo et al.'s loop over (lower, upper] bins, on random confidences."""
    rng = random.Random(0)
    conf = [rng.uniform(0.1, 1.0) for _ in range(500)]
    correct = [rng.random() < c for c in conf]
    edges = [i / 15 for i in range(16)]
    ece = 0.0
    for lower, upper in itertools.pairwise(edges):
        members = [i for i, c in enumerate(conf) if lower < c <= upper]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            confidence = sum(conf[i] for i in members) / len(members)
            ece += len(members) / len(conf) * abs(accuracy - confidence)
    assert calibration(conf, correct)["ece"] == pytest.approx(ece)


def copy_of_run(run, tmp_path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def test_missing_and_unfinished_runs_are_one_line_errors(tiny_runs, tmp_path):
    with pytest.raises(GroveError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(GroveError, match="not a grove run directory"):
        write_report(tmp_path)
    killed = copy_of_run(tiny_runs["text"][0], tmp_path)
    (killed / "summary.json").unlink()
    with pytest.raises(GroveError, match="report on a finished run"):
        write_report(killed)
    with pytest.raises(GroveError, match="is a folder"):
        write_report(tiny_runs["text"][0], out=tmp_path)
    assert not list(killed.glob("*.html")) and not list(killed.glob(".*.part")) and not list(tmp_path.glob("*.html"))


def test_cli_writes_the_report_beside_the_run(tiny_runs, tmp_path, grove_cli):
    run = copy_of_run(tiny_runs["text"][0], tmp_path)
    result = grove_cli("report", run)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {run / 'report.html'}"
    assert (run / "report.html").is_file() and not list(run.glob(".*.part"))

    bad = grove_cli("report", tmp_path / "nowhere")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr


@pytest.mark.e2e
@pytest.mark.browser
def test_report_in_a_phone_browser(reports):
    sync_api = pytest.importorskip("playwright.sync_api")
    path = reports("image")[1]
    problems = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda err: problems.append(str(err)))
        page.on("request", lambda r: r.url.startswith(("file:", "data:")) or problems.append(f"fetched {r.url}"))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        text = page.evaluate("document.body.innerText")
        images = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth])")
        widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
        browser.close()
    assert problems == []
    assert len(text) > 2000 and "Model card" in text
    assert len(images) >= 4 and all(complete and width > 0 for complete, width in images)
    assert max(widths[:2]) <= widths[2], f"the page scrolls sideways: {widths}"
