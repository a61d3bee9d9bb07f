"""Differentially private training: DP-SGD (Abadi et al., 2016) through Opacus.

A recipe's `privacy:` section turns it on. The engine then, in this order:
1. `check_recipe` refuses settings that cannot be private, before any data is read;
2. `plan` fixes the noise, sampling rate, delta and the steps the budget allows, from the recipe
   and the training-set size (`PrivacyPlan.describe` is the line the log prints);
3. `private_layers` converts the layers that break per-example gradients (BatchNorm mixes the
   examples of a batch: GroupNorm; nn.LSTM/GRU: Opacus' DP variants, which save the same state
   dict), and the run's meta.json records the conversions so `load_run` rebuilds the same model;
4. `make_private` wraps the model in Opacus' GradSampleModule (its per-layer grad samplers, and
   functorch for modules it has none for) and the optimiser in its DPOptimizer, which clips every
   example's gradient to `max_grad_norm` and adds Gaussian noise from the run's own generator.

Batches are Poisson-sampled by grove's loader (`BatchLoader(poisson=True)`): each example joins
each step's batch independently with probability q = batch_size / N, the sampling that the
accountants' guarantees assume. The draws are a function of the seed and the epoch and the noise
generator is checkpointed, so a resumed private run is bit-identical to an uninterrupted one; with
several processes each takes its share of the same draws and only rank 0 adds noise, so the sum of
clipped gradients and the noise are the ones a single process would use.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

from grove.errors import GroveError

# Conversions a run's model went through after it was built (meta.json, model.converted).
GROUP_NORM = "batch_norm_to_group_norm"


def default_delta(n_train: int) -> float:
    """A power of ten below 1/(10 N): the chance of a total privacy failure must be far below 1/N."""
    return 10.0 ** -(math.ceil(math.log10(n_train)) + 1)


def check_recipe(recipe) -> None:
    """Settings that cannot be private, refused with one line before any data is read."""
    t = recipe.train
    if t.compile is True:
        raise GroveError("train.compile=true cannot be used with privacy: per-example gradients come from module "
                         "hooks that a compiled graph skips; set train.compile=auto or false")
    if t.precision == "fp16":
        raise GroveError("train.precision=fp16 cannot be used with privacy: loss scaling skips steps depending on "
                         "the private data's gradients; use bf16 or fp32")
    p = recipe.privacy
    if p.delta is not None and p.delta >= 1 / 10:
        raise GroveError(f"privacy.delta={p.delta} is too large to mean anything; leave it unset for a default "
                         "below 1/(training examples)")


@dataclass
class PrivacyPlan:
    noise_multiplier: float
    sample_rate: float  # q: each example's chance of being in a step's batch
    delta: float
    max_grad_norm: float
    accountant: str
    steps: int  # the steps the run takes (fewer than planned when a budget stops it)
    target_epsilon: float | None
    delta_default: bool

    def epsilon(self, steps: int) -> float:
        """The epsilon at `delta` spent after `steps` steps."""
        if steps == 0:
            return 0.0
        accountant = _accountant(self.accountant)
        accountant.history = [(self.noise_multiplier, self.sample_rate, steps)]
        return float(accountant.get_epsilon(delta=self.delta, **_orders(self.accountant)))

    def describe(self, n_train: int, planned_steps: int) -> str:
        target = f"target epsilon {self.target_epsilon:g}" if self.target_epsilon else "no epsilon target"
        delta = f"delta {self.delta:g}" + (f" (default: below 1/(10 x {n_train} training examples))" if self.delta_default else "")
        stop = f"; the budget stops training after {self.steps} of {planned_steps} steps" if self.steps < planned_steps else ""
        return (f"privacy: DP-SGD with {target}, {delta}; noise multiplier {self.noise_multiplier:.4g}, "
                f"per-example gradients clipped at {self.max_grad_norm:g}, Poisson sampling rate "
                f"{self.sample_rate:.4g}, {self.accountant} accountant: epsilon {self.epsilon(self.steps):.3g} "
                f"after {self.steps} steps{stop}")

    def summary(self, steps: int) -> dict:
        """The privacy figures of a run that took `steps` steps (summary.json, the report)."""
        keys = ("noise_multiplier", "sample_rate", "delta", "max_grad_norm", "accountant", "target_epsilon")
        return {"epsilon": self.epsilon(steps), **{k: v for k, v in asdict(self).items() if k in keys}, "steps": steps}


def plan(cfg, n_train: int, batch_size: int, planned_steps: int) -> PrivacyPlan:
    """The noise, sampling rate and steps of a private run of `planned_steps` steps."""
    from opacus.accountants.utils import get_noise_multiplier

    q = batch_size / n_train
    delta = cfg.delta if cfg.delta is not None else default_delta(n_train)
    if cfg.delta is not None and cfg.delta >= 1 / n_train:
        print(f"privacy: warning: delta {cfg.delta:g} is not below 1/{n_train} training examples: "
              "a mechanism that leaks one example in full would meet it")
    common = dict(sample_rate=q, delta=delta, max_grad_norm=cfg.max_grad_norm, accountant=cfg.accountant,
                  target_epsilon=cfg.epsilon, delta_default=cfg.delta is None)
    if cfg.noise_multiplier is None:
        try:
            sigma = get_noise_multiplier(target_epsilon=cfg.epsilon, target_delta=delta, sample_rate=q,
                                         steps=planned_steps, accountant=cfg.accountant, **_orders(cfg.accountant))
        except ValueError as err:
            raise GroveError(f"privacy.epsilon={cfg.epsilon:g} cannot be reached: {err}") from None
        return PrivacyPlan(noise_multiplier=float(sigma), steps=planned_steps, **common)
    result = PrivacyPlan(noise_multiplier=cfg.noise_multiplier, steps=planned_steps, **common)
    if cfg.epsilon is not None:
        result.steps = _budget_steps(result, cfg.epsilon, planned_steps)
        if result.steps == 0:
            raise GroveError(f"privacy.epsilon={cfg.epsilon:g} is spent before the first step at noise multiplier "
                             f"{cfg.noise_multiplier:g}: raise privacy.noise_multiplier or privacy.epsilon")
    return result


def _budget_steps(p: PrivacyPlan, epsilon: float, most: int) -> int:
    """The most steps (up to `most`) whose epsilon stays within `epsilon`: epsilon grows with steps."""
    low, high = 0, most
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if p.epsilon(mid) <= epsilon else (low, mid - 1)
    return low


def _orders(accountant: str) -> dict:
    """RDP orders to search: Opacus' defaults stop at 63, whose bound is loose for few steps of
    little noise (it warns that the best order is its largest); these go on to 1024."""
    from opacus.accountants import RDPAccountant

    # Past order 1024 (a budget spent in a few almost noise-free steps) the bound is loose anyway.
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    return {"alphas": RDPAccountant.DEFAULT_ALPHAS + list(range(64, 1025, 16))} if accountant == "rdp" else {}


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    return RDPAccountant() if name == "rdp" else PRVAccountant()


# -- layers ---------------------------------------------------------------------------------------
def group_norms(model: nn.Module) -> int:
    """Replaces every BatchNorm in place by GroupNorm(gcd(32, C), C), as Opacus' ModuleValidator.fix
    does; returns how many. Needs no Opacus, so `load_run` rebuilds a private run's model anywhere."""
    count = 0
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.GroupNorm(math.gcd(32, child.num_features), child.num_features, affine=child.affine))
            count += 1
        else:
            count += group_norms(child)
    return count


def apply_conversions(model: nn.Module, conversions: list[str]) -> nn.Module:
    """A freshly built model with the conversions its run recorded (meta.json's model.converted)."""
    for name in conversions:
        if name != GROUP_NORM:
            raise GroveError(f"the run's model went through a conversion this grove does not know ({name}): upgrade grove")
        group_norms(model)
    return model


def private_layers(model: nn.Module, pretrained: bool) -> tuple[nn.Module, list[str]]:
    """The model with every layer per-example gradients can be computed for, and the conversions
    to record; prints a note for each kind of layer converted."""
    from opacus.validators import ModuleValidator

    conversions = []
    n = group_norms(model)
    if n:
        lost = " (their pretrained statistics and scales are dropped)" if pretrained else ""
        print(f"privacy: {n} BatchNorm layer(s) replaced by GroupNorm: BatchNorm mixes the examples of a batch{lost}")
        conversions.append(GROUP_NORM)
    before = {type(m).__name__ for m in model.modules()}
    model = ModuleValidator.fix(model)  # nn.LSTM/GRU/RNN -> DPLSTM/DPGRU/DPRNN, MultiheadAttention -> DP variant
    replaced = before - {type(m).__name__ for m in model.modules()}
    if replaced:
        print(f"privacy: {', '.join(sorted(replaced))} replaced by Opacus' per-example-gradient variants (same weights)")
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise GroveError(f"this model cannot be trained privately: {errors[0]}; choose another model.name")
    return model, conversions


@torch.no_grad()
def _layer_norm_grad_sample(layer: nn.LayerNorm, activations, backprops):
    """Opacus' LayerNorm grad sampler, for LayerNorms with or without a bias (GPT's bias=False)."""
    from opacus.utils.tensor_utils import sum_over_all_but_batch_and_last_n

    x = activations[0]
    samples = {}
    if layer.weight is not None and layer.weight.requires_grad:
        normed = nn.functional.layer_norm(x, layer.normalized_shape, eps=layer.eps)
        samples[layer.weight] = sum_over_all_but_batch_and_last_n(normed * backprops, layer.weight.dim())
    if layer.bias is not None and layer.bias.requires_grad:
        samples[layer.bias] = sum_over_all_but_batch_and_last_n(backprops, layer.bias.dim())
    return samples


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, p: PrivacyPlan, expected_batch: int,
                 generator: torch.Generator, distributed: bool):
    """(per-example-gradient module, DP optimiser) for a model and its optimiser. `expected_batch`
    is a step's expected batch on this process: the DP optimiser divides the noised sum by it times
    the step's backward passes (the loop sets it per step under gradient accumulation)."""
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DistributedDPOptimizer, DPOptimizer

    from opacus.grad_sample import register_grad_sampler

    register_grad_sampler(nn.LayerNorm)(_layer_norm_grad_sample)
    # The hooks on a first layer, whose input needs no gradient, fire for its output: expected.
    warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
    # DPDDP only broadcasts rank 0's weights: the DP optimiser all-reduces the noised sum itself.
    wrapped = GradSampleModule(DifferentiallyPrivateDistributedDataParallel(model) if distributed else model)
    dp_optimizer = (DistributedDPOptimizer if distributed else DPOptimizer)(
        optimizer, noise_multiplier=p.noise_multiplier, max_grad_norm=p.max_grad_norm,
        expected_batch_size=expected_batch, generator=generator,
    )
    return wrapped, dp_optimizer


def empty_grad_samples(optimizer) -> None:
    """An empty Poisson batch still takes its step (noise only): its per-example gradients are none."""
    for param in optimizer.params:
        param.grad_sample = param.new_zeros((0, *param.shape))
