"""The one training loop: forward, loss, backward, optimiser step (survey section 3.1).

Settings are applied in a fixed order, outside the model: device -> memory format -> weights ->
EMA copy -> data-parallel wrapper -> compile. The host syncs only at log intervals (`.item()`
there and nowhere in the step), so a GPU is never waiting on Python.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from grove.config import Recipe
from grove.data.base import DataBundle
from grove.data.loader import BatchLoader
from grove.engine import distributed as D
from grove.device import pick_device
from grove.engine.build import (
    build_data,
    build_model,
    build_optimizer,
    check_settings,
    freeze,
    load_pretrained,
    lr_factor,
    model_options,
    task_options,
)
from grove.engine.ema import EMA
from grove.engine.evaluate import FinishedRun, evaluate, final_report
from grove.engine.logging import MetricsLog
from grove.engine.precision import resolve_speed
from grove.errors import GroveError
from grove import privacy
from grove.models.utils import count_params, load_weights, weights_of
from grove.registry import MODELS
from grove.rundir import SCHEMA_VERSION, ModelRef, RunDir, RunMeta
from grove.tasks import create_task


@dataclass
class Progress:
    """Everything about where training stands; saved in every checkpoint."""

    step: int = 0  # optimiser steps taken (skipped non-finite steps included)
    epoch: int = 0
    batch: int = 0  # next batch of `epoch`
    best: float | None = None
    best_step: int | None = None
    bad_epochs: int = 0  # epochs since `best` improved (early stopping)
    skipped_steps: int = 0
    metrics_records: int = 0  # lines of metrics.jsonl that belong to this checkpoint
    train_seconds: float = 0.0


def train(recipe: Recipe, recipe_name: str, resume: str | None = None, bundle: DataBundle | None = None) -> dict:
    """Train from a recipe (or continue the run at `resume`); returns the run's summary.

    `bundle` replaces the data the recipe names (its splits already built), for callers that train
    on a part of a data set, such as `grove audit`'s reference model.
    """
    device = pick_device(recipe.train.device, int(os.environ.get("LOCAL_RANK", 0)))
    procs = D.init_processes(device.type)
    try:
        return Trainer(recipe, recipe_name, device, procs, bundle).fit(resume)
    finally:
        D.close_processes()


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    # CPU kernels already repeat exactly at a fixed thread count (tests/engine/test_resume.py), and
    # torch's deterministic mode made a small GPT's CPU backward ~10x slower (sorted index_put).
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def split_batch(batch, n: int) -> list:
    """n micro-batches of a tensor or a dict of tensors, cut along the batch dimension."""
    if n == 1:
        return [batch]
    if isinstance(batch, dict):
        parts = {k: split_batch(v, n) for k, v in batch.items()}
        return [{k: parts[k][i] for k in batch} for i in range(n)]
    return list(batch.chunk(n))


def batch_len(batch) -> int:
    return len(next(iter(batch.values())) if isinstance(batch, dict) else batch)


class Trainer:
    def __init__(self, recipe: Recipe, recipe_name: str, device: torch.device, procs: D.Processes,
                 bundle: DataBundle | None = None):
        self.recipe, self.recipe_name, self.device, self.procs = recipe, recipe_name, device, procs
        t, d = recipe.train, recipe.data
        seed_everything(t.seed + procs.rank, t.deterministic, device)
        private = recipe.privacy.enabled
        if private:
            privacy.check_recipe(recipe)
        check_settings(recipe, device, procs.world_size)  # before any data is read

        self.bundle = bundle or build_data(d)
        if private and getattr(self.bundle.train, "sequential", False):
            raise GroveError(f"data '{d.name}' is a token stream read in order (truncated BPTT), which cannot be "
                             "sampled example by example for privacy; use a data set of separate examples")
        self.task_options = task_options(recipe, self.bundle)
        self.task = create_task(recipe.task, self.bundle.classes, self.bundle.meta, self.task_options)
        self.model_options = model_options(recipe, self.bundle)
        model = build_model(recipe.model.name, self.model_options)
        if recipe.model.weights:
            load_pretrained(model, recipe.model.weights)
        freeze(model, recipe.model.freeze)
        self.conversions: list[str] = []  # what meta.json records for load_run to rebuild the same model
        if private:
            model, self.conversions = privacy.private_layers(model, pretrained=bool(recipe.model.weights))
        self.speed = resolve_speed(t, device, model, MODELS.get(recipe.model.name).tags.get("family"))
        if private and self.speed.compile:
            self.speed.compile = False
            self.speed.reasons["compile"] = "off: private training (per-example gradients come from module hooks)"
        model = model.to(device, memory_format=torch.channels_last) if self.speed.channels_last else model.to(device)
        self.model = model

        per_rank = d.batch_size // procs.world_size
        if t.grad_accum > 1 and getattr(self.bundle.train, "sequential", False):
            raise GroveError("train.grad_accum must be 1 for token streams (truncated BPTT carries state row by row)")
        self.micro_batches = t.grad_accum
        self.per_rank = per_rank
        common = dict(device=device, rank=procs.rank, world_size=procs.world_size, num_workers=d.num_workers, strict=d.strict)
        self.train_loader = BatchLoader(self.bundle.train, d.batch_size, train=True, seed=t.seed, poisson=private, **common)
        eval_batch = d.eval_batch_size or max(per_rank, 256)
        self.val_loader = BatchLoader(self.bundle.val, eval_batch, train=False, **common)
        self.test_loader = (
            BatchLoader(self.bundle.test, eval_batch, train=False, **common) if self.bundle.test is not None else None
        )
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = t.epochs * self.steps_per_epoch
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        self.dp_plan = None
        if private:
            n_train = len(self.bundle.train)
            self.dp_plan = privacy.plan(recipe.privacy, n_train, d.batch_size, self.total_steps)
            if procs.is_main:
                print(self.dp_plan.describe(n_train, self.total_steps))
                if t.clip_grad_norm:
                    print(f"privacy: train.clip_grad_norm={t.clip_grad_norm:g} is not applied: each example's "
                          f"gradient is clipped at privacy.max_grad_norm={recipe.privacy.max_grad_norm:g} instead")
            self.total_steps = self.dp_plan.steps
            # The noise has its own generator, seeded apart from the model's and saved in checkpoints.
            self.noise = torch.Generator(device=device).manual_seed(t.seed + 7_919)

        self.optimizer = build_optimizer(recipe.optim, model)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(recipe.schedule, self.total_steps, self.steps_per_epoch)
        )
        self.scaler = self.speed.grad_scaler()
        self.ema = EMA(model, t.ema_decay) if t.ema_decay else None
        self.progress = Progress()

    # -- the run directory ----------------------------------------------------------------------
    def open_run(self, resume: str | None) -> RunDir:
        if resume:
            run = RunDir.open(resume)
            if run.checkpoint("last") is not None:
                self.restore(run)
            else:
                self.init_from_data()
                if self.procs.is_main:
                    print(f"{run.path} has no checkpoint yet (it stopped before its first one): training starts over there")
                    run.truncate_metrics(0)
            return run
        self.init_from_data()
        path = None
        if self.procs.is_main:
            run = RunDir.create(self.recipe.run.dir, self.recipe.run.name or self.recipe_name)
            run.write_config(self.recipe.to_dict())
            run.write_meta(self.meta())
            run.write_data_files(self.bundle.files)
            path = str(run.path)
        return RunDir(D.broadcast(path, self.procs))

    def init_from_data(self) -> None:
        """The model contract's optional data-dependent initialisation, on an un-augmented batch."""
        if hasattr(self.model, "init_from_data"):
            inputs, _ = next(iter(self.train_loader.epoch(0)))
            self.model.init_from_data(self.speed.memory_format(self.bundle.transform(inputs, False)))
            if self.ema:
                self.ema.model.load_state_dict(self.model.state_dict())

    def meta(self) -> RunMeta:
        import grove

        return RunMeta(
            schema_version=SCHEMA_VERSION,
            grove_version=grove.__version__,
            recipe=self.recipe_name,
            task=self.task.name,
            task_options=self.task_options,
            model=ModelRef(name=self.recipe.model.name, options=self.model_options, converted=self.conversions),
            classes=self.bundle.classes,
            data=self.bundle.meta,
        )

    def restore(self, run: RunDir) -> None:
        weights, state = run.load_checkpoint("last")
        saved = len(state["rng"])  # one random state per process
        if saved != self.procs.world_size:
            # Each process's random and stream state continues where it stopped: another process
            # count could not continue the same training.
            raise GroveError(f"{run.path} was trained on {saved} process(es): resume it with --nproc {saved}")
        load_weights(self.model, state["raw_weights"] if self.ema else weights)
        if self.ema:
            load_weights(self.ema.model, weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if state["task"]:  # None in checkpoints of stateless tasks written before the Task protocol
            self.task.load_state_dict(state["task"][self.procs.rank], self.device)
        if self.dp_plan:
            self.noise.set_state(state["privacy"]["noise_rng"])
        rng = state["rng"][self.procs.rank]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.progress = Progress(**state["progress"])
        if self.procs.is_main:
            run.truncate_metrics(self.progress.metrics_records)

    def save_checkpoint(self, run: RunDir, log: MetricsLog, tags: list[str]) -> None:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rngs = D.gather(rng, self.procs)
        task_states = D.gather(self.task.state_dict(), self.procs)
        if self.procs.is_main:
            self.progress.metrics_records = log.records
            state = {
                "progress": asdict(self.progress),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "raw_weights": weights_of(self.model) if self.ema else None,
                "rng": rngs,
                "task": task_states,
                "privacy": {"noise_rng": self.noise.get_state()} if self.dp_plan else None,
            }
            run.save_checkpoint(self.progress.step, weights_of(self.eval_model), state, tags)
        D.barrier(self.procs)

    @property
    def eval_model(self):
        return self.ema.model if self.ema else self.model

    # -- training -------------------------------------------------------------------------------
    def fit(self, resume: str | None = None) -> dict:
        run = self.open_run(resume)
        main = self.procs.is_main
        log = MetricsLog(run if main else None, purge_step=self.progress.step if resume else None)
        train_model = self.model
        if self.dp_plan:
            train_model, self.optimizer = privacy.make_private(
                self.model, self.optimizer, self.dp_plan, self.per_rank, self.noise, self.procs.active
            )
        elif self.procs.active:
            train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.speed.compile:
            train_model = torch.compile(train_model)

        if main:
            print(
                f"run {run.path} | {self.recipe.model.name} {count_params(self.model):,} params | "
                f"{self.device} x{self.procs.world_size} | {self.speed.label()}"
            )
            print(f"speed: {self.speed.explain()}")
        started = time.perf_counter() - self.progress.train_seconds
        try:
            while self.progress.step < self.total_steps and not self.early_stop():
                self.train_one_epoch(train_model, run, log, started)
                if not self.early_stop():
                    self.validate_and_checkpoint(run, log, end_of_epoch=True)
        except GroveError as err:
            if resume is None and main and run.checkpoint("last") is None:
                log.close()
                shutil.rmtree(run.path, ignore_errors=True)  # nothing to resume: leave no half run behind
                if not any(run.path.parent.iterdir()):
                    run.path.parent.rmdir()
                raise GroveError(f"{err} (the run stopped before its first checkpoint; nothing was kept)") from None
            raise
        finally:
            log.close()
        summary = final_report(self.finished(run))
        D.barrier(self.procs)
        return summary

    def finished(self, run: RunDir) -> FinishedRun:
        """What the final report needs of the run that just trained."""
        eval_loader = self.test_loader if self.test_loader is not None else self.val_loader
        skipped = self.train_loader.skipped | self.val_loader.skipped
        return FinishedRun(
            run=run, recipe_name=self.recipe_name, model_name=self.recipe.model.name, model=self.eval_model,
            task=self.task, transform=self.bundle.transform, speed=self.speed, progress=asdict(self.progress),
            params=count_params(self.model), eval_split="test" if self.test_loader is not None else "val",
            eval_loader=eval_loader, skipped_files=skipped, processes=self.procs.world_size,
            is_main=self.procs.is_main, classes=self.bundle.classes, data_files=self.bundle.files,
            privacy=self.dp_plan.summary(self.progress.step) if self.dp_plan else None,
        )

    def early_stop(self) -> bool:
        patience = self.recipe.train.early_stopping_patience
        return bool(patience and self.progress.bad_epochs >= patience)

    def train_one_epoch(self, train_model, run: RunDir, log: MetricsLog, started: float) -> None:
        t, p = self.recipe.train, self.progress
        train_model.train()
        if p.batch == 0:
            self.task.reset()
        window = self.task.metrics(self.device)
        # The window's step losses summed on the device: non-finite once any of them was.
        window_loss = torch.zeros((), device=self.device)
        window_start, window_samples = time.perf_counter(), 0
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=p.batch,
            desc=f"epoch {p.epoch + 1}/{t.epochs}",
            disable=None if self.procs.is_main else True,  # no bar on other ranks or off a terminal
            dynamic_ncols=True,
            leave=False,
        )
        for inputs, targets in self.train_loader.epoch(p.epoch, start=p.batch):
            inputs = self.speed.memory_format(self.bundle.transform(inputs, True))
            step_loss = self.optimizer_step(train_model, inputs, targets, window)
            if step_loss is None:
                p.skipped_steps += 1
            else:
                window_loss += step_loss
            p.step += 1
            p.batch += 1
            p.train_seconds = time.perf_counter() - started
            window_samples += batch_len(targets) * self.procs.world_size
            bar.update(1)
            end_of_epoch = p.batch == self.steps_per_epoch or p.step >= self.total_steps
            evaluate_now = t.eval_every and p.step % t.eval_every == 0 and not end_of_epoch
            checkpoint_now = t.checkpoint_every and p.step % t.checkpoint_every == 0 and not end_of_epoch
            if p.step % t.log_every == 0 or end_of_epoch or checkpoint_now or evaluate_now:
                self.check_finite(window_loss, run)
                window.all_reduce()
                figures = {k: v for k, v in window.compute().items() if k != "count"}
                figures["lr"] = self.scheduler.get_last_lr()[0]
                figures["samples_per_s"] = window_samples / (time.perf_counter() - window_start)
                log.log("train", p.step, p.epoch, figures)
                shown = {k: f"{figures[k]:.4g}" for k in ("loss", "accuracy", "cer") if k in figures}
                bar.set_postfix(**shown, sps=f"{figures['samples_per_s']:.0f}")
                window = self.task.metrics(self.device)
                window_loss = torch.zeros((), device=self.device)
                window_start, window_samples = time.perf_counter(), 0
            if evaluate_now:
                self.validate_and_checkpoint(run, log, end_of_epoch=False)
                train_model.train()
            elif checkpoint_now:
                self.save_checkpoint(run, log, ["last"])
            if end_of_epoch or self.early_stop():
                break
        bar.close()
        if self.train_loader.skipped and self.procs.is_main:
            tqdm.write(f"skipped {len(self.train_loader.skipped)} unreadable training file(s) so far")

    def optimizer_step(self, train_model, inputs, targets, window) -> torch.Tensor | None:
        """One optimiser step over `grad_accum` micro-batches; returns the sum of their losses (on
        the device), or None when nan_policy=skip skipped the step for a non-finite loss."""
        t = self.recipe.train
        step_loss = None
        if self.dp_plan and batch_len(targets) == 0:
            privacy.empty_grad_samples(self.optimizer)
            return self.finish_step(torch.zeros((), device=self.device))
        chunks = list(zip(split_batch(inputs, self.micro_batches), split_batch(targets, self.micro_batches)))
        if self.dp_plan:  # the DP optimiser divides by this times the backward passes
            self.optimizer.expected_batch_size = self.per_rank / len(chunks)
        for i, (x, y) in enumerate(chunks):
            # Gradients are all-reduced once, on the last micro-batch.
            no_sync = self.procs.active and i < len(chunks) - 1
            with train_model.no_sync() if no_sync and hasattr(train_model, "no_sync") else nullcontext():
                with self.speed.autocast():
                    loss, outputs = self.task.step(train_model, x, y)
                # The DP optimiser clips each example's gradient of its micro-batch's mean loss and
                # averages over the micro-batches itself.
                scaled = loss / len(chunks) if len(chunks) > 1 and not self.dp_plan else loss
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            window.update(outputs, y, loss.detach())
            step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
        if t.nan_policy == "skip" and D.any_rank(~torch.isfinite(step_loss), self.procs):
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            return None
        return self.finish_step(step_loss)

    def finish_step(self, step_loss: torch.Tensor) -> torch.Tensor:
        """Clipping, the optimiser, schedule and EMA steps after the step's backward passes."""
        t = self.recipe.train
        if t.clip_grad_norm and not self.dp_plan:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        return step_loss

    def check_finite(self, window_loss: torch.Tensor, run: RunDir) -> None:
        if not D.any_rank(~torch.isfinite(window_loss), self.procs):
            return
        last = run.checkpoint("last")
        raise GroveError(
            f"the training loss became NaN or infinite by step {self.progress.step}; "
            "lower optim.lr, set train.clip_grad_norm, or set train.nan_policy=skip"
            + (f" (last good checkpoint: {last}; --resume {run.path} continues from it)" if last else "")
        )

    def validate_and_checkpoint(self, run: RunDir, log: MetricsLog, end_of_epoch: bool) -> None:
        p = self.progress
        figures = evaluate(self.eval_model, self.val_loader, self.task, self.bundle.transform, self.speed)
        figures = {k: v for k, v in figures.items() if k != "count"}
        if self.dp_plan:
            figures["epsilon"] = self.dp_plan.epsilon(p.step)
        log.log("val", p.step, p.epoch, figures)
        value = figures[self.task.monitor]
        better = p.best is None or (value > p.best if self.task.monitor_mode == "max" else value < p.best)
        if better:
            p.best, p.best_step, p.bad_epochs = value, p.step, 0
        else:
            p.bad_epochs += 1
        if self.procs.is_main:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in figures.items())
            tqdm.write(f"step {p.step} (epoch {p.epoch + 1}) val: {shown}" + ("  (best)" if better else ""))
        if end_of_epoch:
            p.epoch += 1
            p.batch = 0
        self.save_checkpoint(run, log, ["last", "best"] if better else ["last"])
