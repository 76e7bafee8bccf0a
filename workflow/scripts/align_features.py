"""Rule align_features: one stimulus's frame-rate layers -> one row per volume, every layer."""

import h5py

from brainalign.alignment import AlignOptions, align
from brainalign.audio import audio_duration
from brainalign.io import read_frame_times, read_layer, save_layers_h5, setup_logging

setup_logging(snakemake.log[0])
cfg = snakemake.params.alignment
options = AlignOptions.from_config(cfg)
duration = audio_duration(snakemake.input.audio)
onset_s = float(snakemake.params.onset_s)
with h5py.File(snakemake.input.features, "r") as h5:
    n_layers = int(h5.attrs["n_layers"])
aligned = {}
times = read_frame_times(snakemake.input.features)
for layer in range(n_layers):
    values = read_layer(snakemake.input.features, layer)
    aligned[layer] = align(times, values, snakemake.params.tr, duration, options,
                           onset_s=onset_s)
save_layers_h5(snakemake.output[0], aligned, t_r=snakemake.params.tr, duration_s=duration,
               method=cfg["method"], onset_s=onset_s)
