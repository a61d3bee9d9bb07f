"""Models: single-device `nn.Module`s that know tensors, not files, loops or processes.

Every registered model honours one contract (tests/models/test_contract.py runs them all, so
explain, export and privacy code can rely on it without special cases):
- it is built by its registered function from keyword options, one of which is `num_classes`;
- `model.num_classes` is the size of its output's last dimension;
- `model.input_spec()` lists the inputs `forward` takes, in order, as `TensorSpec`s
  (models/layers/contract.py) whose str axes are dynamic: "batch" first, "tokens" or "time" where
  the length varies; names are shared (models/layers/specs.py): "image" ("batch", C, S, S)
  float32, "input_ids" ("batch", "tokens") int64, "features" ("batch", F, "time") float32 and
  "lengths" ("batch",) int64;
- `model.example_input(batch_size)` returns a valid batch for the first spec (smoke tests, FLOPs,
  export); any later inputs are optional in `forward` (CTC models treat every frame as valid);
- `model(x)` returns logits, except that CTC models return `CTCOutput(log_probs, lengths)` and
  `lstm_lm(..., return_state=True)` returns `LMOutput(logits, state)`; both are NamedTuples, so
  unpacking callers keep working;
- `model.feature_layer` is the dotted name of the submodule (`model.get_submodule(...)`) whose
  output is the last spatial/temporal feature map before pooling and the head, for Grad-CAM-style
  explanations; for Transformers it is the final norm (or block). Its hooked output is a tensor,
  or for RNN feature layers the (output, state) pair they return;
- token models (text classifiers and language models) name their token embedding, the layer that
  text attributions are taken at, in `model.embedding_layer` (a dotted name, as feature_layer);
- `model.forward_features(x)` returns the representation before the head's pooling and
  classifier: (B, C, h, w) maps for CNNs, (B, T, D) tokens or frames for sequence models, the
  pooled vector where pooling is part of the body (rnn_classifier's final states); each model
  file says which in one line;
- `model.reset_classifier(n)` replaces the output layer with a freshly initialised one with n
  outputs and sets `num_classes = n`. Language models (gpt, lstm_lm) raise ValueError instead:
  their output is the vocabulary their embedding reads (and, tied, the same matrix).
Optional: `model.init_from_data(x)` is called once with a batch of training inputs (after the
data transform) before training, for data-dependent initialisation; vision transformers offer
`attention_maps(x)` for attention rollout.

The parts of the contract most models write alike are mixins in models/layers/: inputs.py
(`input_spec` and `example_input` for image, feature and token inputs), heads.py
(`ReplaceableHead`: `reset_classifier` for the output layer named `head_layer`) and tokens.py
(`TokenSampler`: `generate` for language models).
"""

from grove.models.utils import count_params, estimate_flops

__all__ = ["count_params", "estimate_flops"]
