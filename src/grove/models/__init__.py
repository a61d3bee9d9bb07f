"""Models: single-device `nn.Module`s that know tensors, not files, loops or processes.

Every registered model honours one contract (tests/models/test_contract.py runs them all):
- it is built by its registered function from keyword options, one of which is `num_classes`;
- `model.num_classes` is the size of its output's last dimension;
- `model.example_input(batch_size)` returns a valid input batch (for smoke tests, FLOPs, export);
- `model(x)` returns logits.
Optional: `model.init_from_data(x)` is called once with a batch of training inputs (after the
data transform) before training, for data-dependent initialisation.
"""

from grove.models import speech  # noqa: F401
from grove.models import text  # noqa: F401  (registers the text models)
from grove.models import vision  # noqa: F401  (registers the vision models)
from grove.models.utils import count_params, estimate_flops

__all__ = ["count_params", "estimate_flops"]
