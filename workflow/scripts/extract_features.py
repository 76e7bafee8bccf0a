"""Rule extract_features: one stimulus -> every layer's activations (HDF5, one dataset a layer)."""

import torch

from brainalign.audio import load_audio
from brainalign.features import LayerExtractor, extract_features
from brainalign.io import setup_logging
from brainalign.models import ModelSpec
from brainalign.windows import WindowOptions

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.features
extractor = LayerExtractor(ModelSpec.from_config(snakemake.wildcards.model, snakemake.params.model),
                           precision=cfg["precision"])
extract_features(extractor, load_audio(snakemake.input.audio), snakemake.output[0],
                 WindowOptions.from_config(cfg), dtype=cfg["dtype"])
