"""`grove generate RUN`: a language-model run continues a prompt, as a user runs it."""

import pytest

from conftest import run_grove
from grove.config import load_recipe
from grove.engine.loop import train

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 30


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """A tiny character GPT trained for a few dozen steps on a corpus made here."""
    corpus = tmp_path_factory.mktemp("tiny_shakespeare")
    (corpus / "input.txt").write_text(TEXT)
    recipe, name = load_recipe("shakespeare-char-gpt", [
        f"data.root={corpus}", f"run.dir={tmp_path_factory.mktemp('runs')}", "model.n_layer=1", "model.n_head=2",
        "model.n_embd=32", "data.block_size=16", "data.batch_size=16", "optim.lr=0.01", "train.max_steps=30",
        "train.eval_every=null", "train.precision=fp32",
    ])
    return train(recipe, name)["run"]


def test_generate_prints_the_prompt_then_the_new_characters(gpt_run):
    result = run_grove("generate", gpt_run, "--prompt", "First", "--max-new-tokens", "20", "--seed", "0")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("First") and out.endswith("\n")
    new = out[len("First"):-1]
    assert len(new) == 20 and set(new) <= set(TEXT), repr(new)
    again = run_grove("generate", gpt_run, "--prompt", "First", "--max-new-tokens", "20", "--seed", "0")
    assert again.stdout == out  # a seed fixes the sample


def test_greedy_generation_is_deterministic(gpt_run):
    args = ["generate", gpt_run, "--prompt", "All:\n", "--max-new-tokens", "20"]
    greedy = run_grove(*args, "--temperature", "0", "--seed", "1")
    top1 = run_grove(*args, "--top-k", "1", "--seed", "2")
    assert greedy.returncode == 0 and top1.returncode == 0, greedy.stderr + top1.stderr
    assert greedy.stdout == top1.stdout and len(greedy.stdout) == len("All:\n") + 21


def test_a_prompt_with_an_unknown_character_is_one_line(gpt_run):
    result = run_grove("generate", gpt_run, "--prompt", "Speak~", "--max-new-tokens", "5")
    assert result.returncode == 2 and result.stdout == ""  # not even the prompt
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
    assert "'~'" in result.stderr and "Traceback" not in result.stderr


def test_word_level_generation_keeps_the_space_before_the_first_new_word(tmp_path):
    import grove

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "input.txt").write_text(TEXT)
    recipe, name = load_recipe("shakespeare-char-gpt", [
        f"data.root={corpus}", f"run.dir={tmp_path / 'runs'}", "data.tokenizer=word", "model.n_layer=1",
        "model.n_head=2", "model.n_embd=16", "data.block_size=8", "data.batch_size=8", "train.max_steps=2",
        "train.precision=fp32",
    ])
    run = train(recipe, name)["run"]
    pieces = list(grove.load(run).generate("hear me", max_new_tokens=6, temperature=0, seed=0))
    words = [p for p in pieces if p.strip()]
    assert words and all(p[0] in " \n" for p in words), pieces  # "hear me speak", never "hear mespeak"
