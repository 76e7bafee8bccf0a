"""Rule extract_features: one stimulus -> every layer's activations (HDF5, one dataset a layer)."""

import torch

from brainalign.audio import load_audio
from brainalign.config import model_spec
from brainalign.features import LayerExtractor, extract_features
from brainalign.io import setup_logging

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.config["features"]
extractor = LayerExtractor(model_spec(snakemake.config, snakemake.wildcards.model))
extract_features(extractor, load_audio(snakemake.input.audio), snakemake.output[0],
                 window_s=cfg["window_s"], context_s=cfg["context_s"],
                 batch_size=cfg.get("batch_size", 4), dtype=cfg.get("dtype", "float16"))
