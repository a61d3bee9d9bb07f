"""Use an export folder from Python without torch: `grove.load(export_dir)`.

    .predict(images | texts | wav paths)   classifiers: per input, the top (label, probability)
                                           pairs; transcription: per input, the transcript
    .generate(prompt, ...)                 language models: the new text, piece by piece

The same API and the same answers as grove.predictor.Predictor on the run the folder was
exported from: inputs are decoded by the same functions (grove.runtime.inputs), the graph holds
the rest of the preprocessing, and decoding and sampling follow the eager code step for step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from grove.errors import GroveError
from grove.runtime import decoding
from grove.runtime.base import PredictorBase, is_tensor
from grove.runtime.inputs import fix_length, read_audio, read_image
from grove.runtime.manifest import MANIFEST, Manifest, check_digest, read_manifest
from grove.runtime.session import OnnxSession, open_session


class ExportedPredictor(PredictorBase):
    source = "export"

    def __init__(self, folder: Path, manifest: Manifest, session, tokenizer=None):
        self.folder = folder
        self.manifest = manifest
        self.session = session
        self.tokenizer = tokenizer
        self.task = manifest.task
        self.recipe = manifest.recipe
        self.classes: list[str] = manifest.classes
        self.modality = manifest.modality
        self._input_names = [t.name for t in manifest.inputs]
        self._output_names = [t.name for t in manifest.outputs]

    @classmethod
    def load(cls, folder, threads: int | None = None, int8: bool = False) -> "ExportedPredictor":
        """The export in `folder`, running its fp32 graph (int8=True: the int8 one, which answers
        slightly differently, and for dynamic int8 a little differently in every batch, since its
        activation scales come from the batch) on `threads` intra-op threads (default: the
        physical cores)."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        _check_preprocess(folder, manifest)
        graph = folder / manifest.runtime_file(int8)
        check_digest(folder, manifest, graph.name)
        session = open_session(graph, manifest.format, threads)
        if isinstance(session, OnnxSession):
            _check_graph(folder, graph, manifest, session)
        tokenizer = None
        if manifest.preprocess.text is not None:
            from grove.data.tokenizers import load_tokenizer

            tokenizer = load_tokenizer(folder / manifest.preprocess.text.tokenizer)
        return cls(folder, manifest, session, tokenizer)

    def _run(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        # Feeds go in the graph's input order (a pt2 program takes them by position).
        missing = [name for name in self._input_names if name not in feeds]
        if missing:
            raise GroveError(f"{self.folder / MANIFEST} does not fit this export's task ({self.task} has no input "
                             f"{missing[0]!r}): the folder is damaged; export the run again")
        outputs = self.session.run({name: feeds[name] for name in self._input_names})
        return dict(zip(self._output_names, outputs))

    # -- classification and transcription --------------------------------------------------------
    def input_info(self) -> dict:
        pre = self.manifest.preprocess
        if self.task == "lm":
            g = self.manifest.generation
            return {"kind": "prompt", "context_tokens": g.block_size}
        if self.modality == "image":
            return {"kind": "image", "size": pre.image.size, "channels": pre.image.channels}
        if self.modality == "audio":
            a = pre.audio
            clip = None if a.clip_samples is None else a.clip_samples / a.sample_rate
            return {"kind": "audio", "sample_rate": a.sample_rate, "clip_seconds": clip}
        return {"kind": "text", "max_tokens": pre.text.max_len}

    def predict_batch(self, items: list, top: int, beam_width: int) -> list:
        if self.task == "ctc":
            transcripts = []
            for wave in items:  # one at a time: no padding to mask, and beam search is per utterance
                out = self._run(audio=wave[None], lengths=np.array([len(wave)], dtype=np.int64))
                log_probs, lengths = out["log_probs"], out["output_lengths"]
                if beam_width:
                    ids = decoding.beam_search_decode(log_probs, lengths, beam_width)
                else:
                    ids = decoding.greedy_decode(log_probs, lengths)
                transcripts += [decoding.ids_to_text(s, self.classes) for s in ids]
            return transcripts
        if self.modality == "text":
            width = max(map(len, items))
            pad = self.manifest.preprocess.text.pad_id
            logits = self._run(input_ids=np.array([row + [pad] * (width - len(row)) for row in items], dtype=np.int64))
        elif self.modality == "image":
            logits = self._run(image=np.concatenate(items))
        else:
            logits = self._run(audio=np.stack(items))
        return decoding.top_k(logits["logits"], self.classes, top)

    def _read_image(self, image) -> np.ndarray:
        """A path, PIL image, HxW(xC) uint8 array or CxHxW uint8 tensor -> a (1, C, S, S) uint8
        batch, resized and cropped the way training images were decoded."""
        if is_tensor(image) and image.dim() == 3:
            image = image.permute(1, 2, 0).squeeze(-1).numpy()
        pre = self.manifest.preprocess.image
        return read_image(image, pre.size, pre.channels)[None]

    def _read_audio(self, file) -> np.ndarray:
        """A WAV/FLAC path -> float32 samples: a keyword clip fitted to the training clip length,
        or the whole utterance for transcription."""
        pre = self.manifest.preprocess.audio
        wave = read_audio(file, pre.sample_rate)
        return wave if pre.clip_samples is None else fix_length(wave, pre.clip_samples)

    def _read_text(self, text) -> list[int]:
        max_len = self.manifest.preprocess.text.max_len
        ids = self.tokenizer.encode_batch([str(text)], add_special_tokens=True, max_length=max_len)[0]
        if not ids:
            raise GroveError(f"cannot classify {str(text)!r}: it is empty after tokenization")
        return ids

    # -- language models -------------------------------------------------------------------------
    def generate(
        self, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = None,
        top_p: float | None = None, seed: int | None = None,
    ) -> Iterator[str]:
        """The continuation of `prompt`, yielded piece by piece as tokens are produced."""
        if self.task != "lm":
            raise GroveError("only language-model exports generate text; use predict for this export")
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)  # GroveError for unknown characters
        if not ids:
            raise GroveError("the prompt is empty after tokenization: give at least one known character or word")
        rng = np.random.default_rng(seed)
        try:
            # Decoding after the prompt's tokens gives what joins them: the space before a new
            # word of a word-level model, none inside a word of a character model.
            produced = list(ids)
            shown = self.tokenizer.decode(produced)
            new_ids, state = np.array([ids], dtype=np.int64), None
            for _ in range(max_new_tokens):
                logits, state = self.next_token_logits(new_ids, state)
                new_ids = decoding.sample_next_token(logits, temperature, top_k, top_p, rng)  # (1, 1)
                produced.append(int(new_ids[0, 0]))
                text = self.tokenizer.decode(produced)
                # Multi-byte characters can take several tokens: emit only whole new text.
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    yield text[len(shown):]
                    shown = text
        except ValueError as err:  # bad sampling options
            raise GroveError(str(err)) from None

    def next_token_logits(self, new_ids: np.ndarray, state) -> tuple[np.ndarray, object]:
        """As the eager models' `next_token_logits`: (logits (B, V) for the token after new_ids
        (B, T), the state to pass with the next ids); state is None for the prompt."""
        if self.manifest.generation.kind == "kv_cache":
            return self._kv_cache_step(new_ids, state)
        return self._rnn_state_step(new_ids, state)

    def _kv_cache_step(self, new_ids: np.ndarray, state: tuple | None) -> tuple[np.ndarray, tuple]:
        """GPT.next_token_logits on the graph: the state is (the context: the last block_size
        tokens, its (keys, values) cache or None)."""
        g = self.manifest.generation
        block_size = g.block_size
        if state is None:
            context, cache = new_ids[:, -block_size:], None
        else:
            context, cache = np.concatenate((state[0], new_ids), axis=1)[:, -block_size:], state[1]
        if cache is not None and cache[0].shape[3] < block_size:
            out = self._run(input_ids=context[:, -1:], past_keys=cache[0], past_values=cache[1])  # the newest token
            cache = (out["present_keys"], out["present_values"])
        else:
            # first step, or the context is full: learned positions cannot slide, so recompute
            # the last block_size tokens (a cache is kept only while it has room to grow)
            empty = np.zeros((g.n_layer, context.shape[0], g.n_head, 0, g.head_dim), dtype=np.float32)
            out = self._run(input_ids=context, past_keys=empty, past_values=empty)
            cache = (out["present_keys"], out["present_values"]) if context.shape[1] < block_size else None
        return out["logits"][:, -1, :], (context, cache)  # (B, vocab_size)

    def _rnn_state_step(self, new_ids: np.ndarray, state: list | None) -> tuple[np.ndarray, list]:
        """The prompt runs once from zero states; then each step feeds the newest token and the carried state."""
        g = self.manifest.generation
        names = self._input_names[1:]  # state_h (, state_c)
        if state is None:
            state = [np.zeros((g.n_layer, new_ids.shape[0], g.hidden), dtype=np.float32) for _ in names]
        out = self._run(input_ids=new_ids, **dict(zip(names, state)))
        return out["logits"][:, -1, :], [out[f"next_{name}"] for name in names]


def _check_preprocess(folder: Path, manifest: Manifest) -> None:
    """The manifest names the preprocessing its modality and task need (a tampered one may not)."""
    need = {"image": "image", "audio": "audio", "text": "text"}[manifest.modality]
    missing = getattr(manifest.preprocess, need) is None
    if manifest.task == "lm":
        g = manifest.generation
        missing = missing or g is None or (g.block_size is None if g.kind == "kv_cache" else g.hidden is None)
    if missing:
        what = f"preprocess.{need}" if getattr(manifest.preprocess, need) is None else "generation"
        raise GroveError(f"export file {folder / MANIFEST} is damaged: it lacks '{what}'; export the run again")


def _check_graph(folder: Path, graph: Path, manifest: Manifest, session: OnnxSession) -> None:
    """The graph takes and gives what export.json says (a file swapped or edited by hand may not)."""
    for kind, listed, actual in (("inputs", manifest.inputs, session.input_names),
                                 ("outputs", manifest.outputs, session.output_names)):
        names = [t.name for t in listed]
        if names != actual:
            raise GroveError(
                f"{graph} does not match {folder / MANIFEST}: the graph's {kind} are {', '.join(actual)}, the "
                f"manifest lists {', '.join(names)}; export the run again"
            )
