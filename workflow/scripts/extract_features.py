"""Rule extract_features: one stimulus -> every layer's activations (HDF5, one dataset a layer)."""

import torch

from brainalign.audio import load_audio
from brainalign.features import LayerExtractor, extract_features
from brainalign.io import setup_logging
from brainalign.models import ModelSpec

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.features
extractor = LayerExtractor(ModelSpec.from_config(snakemake.wildcards.model, snakemake.params.model),
                           precision=cfg.get("precision", "auto"))
extract_features(extractor, load_audio(snakemake.input.audio), snakemake.output[0],
                 window_s=cfg["window_s"], context_s=cfg["context_s"],
                 batch_size=cfg.get("batch_size", 4), dtype=cfg.get("dtype", "float16"),
                 right_context_s=cfg.get("right_context_s", 0.0),
                 mode=cfg.get("mode", "windowed"))
