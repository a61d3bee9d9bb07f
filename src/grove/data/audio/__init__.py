"""Audio data: waveforms in the splits, features computed on the training device.

    io          reading WAV/FLAC/OGG, resampling, fitting clips to a length, load_audio_batch
    features    the log-mel / MFCC front end and AudioTransform (what a bundle's transform is)
    augment     time shift, gain, noise and SpecAugment on batches
    options     the recipe's nested data.features / data.augment sections
    transcripts character alphabets, manifests and the transcription split types
    datasets    audio_folder, speech_commands, audio_manifest, librispeech

Splits give 1-D waveforms (float32 from files, int16 for the large in-memory sets); `AudioTransform`
turns a batch of them into per-utterance normalised log-mel or MFCC features (B, F, T) on the
device and augments them when training, so workers move samples only and the same code runs on
CPU and GPU.
"""

from grove.data.audio.datasets import (
    KeywordClips,
    audio_folder,
    audio_manifest,
    keyword_bundle,
    librispeech,
    speech_commands,
    transcription_bundle,
)
from grove.data.audio.features import MFCC, AudioTransform, LogMel, mel_filterbank, normalize_features
from grove.data.audio.io import fix_length, load_audio_batch, read_audio, resample
from grove.data.audio.options import AugmentOptions, FeatureOptions
from grove.data.audio.transcripts import (
    TranscriptionArrays,
    TranscriptionFiles,
    build_alphabet,
    collate_transcription,
    decode_tokens,
    encode_transcript,
)

__all__ = [
    "MFCC",
    "AudioTransform",
    "AugmentOptions",
    "FeatureOptions",
    "KeywordClips",
    "LogMel",
    "TranscriptionArrays",
    "TranscriptionFiles",
    "audio_folder",
    "audio_manifest",
    "build_alphabet",
    "collate_transcription",
    "decode_tokens",
    "encode_transcript",
    "fix_length",
    "keyword_bundle",
    "librispeech",
    "load_audio_batch",
    "mel_filterbank",
    "normalize_features",
    "read_audio",
    "resample",
    "speech_commands",
    "transcription_bundle",
]
