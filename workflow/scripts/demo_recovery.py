"""Rule demo_recovery: group best layer per planted ROI vs the truth, and noise false positives."""

import nibabel as nib
import numpy as np
import pandas as pd

from brainalign import simulate
from brainalign.io import save_tsv, setup_logging

setup_logging(snakemake.log[0])
best = pd.read_csv(snakemake.input.best[0], sep="\t")
truth = pd.read_csv(snakemake.input.truth[0], sep="\t")
exact, within1, n = simulate.recovery(best, truth)
sig, layers = [], []
for sig_path, layer_path in zip(snakemake.input.significant, snakemake.input.signal_layer,
                                strict=True):
    layer_vol = np.asarray(nib.load(layer_path).dataobj)
    sig_vol = np.asarray(nib.load(sig_path).dataobj) > 0
    inside = layer_vol > -2  # the truth map covers the simulated brain mask
    sig.append(sig_vol[inside])
    layers.append(layer_vol[inside])
fpr = simulate.noise_fpr(sig, layers)
power = simulate.signal_power(sig, layers)
merged = truth.merge(best, on="roi", how="left")
merged["exact"] = merged["best_layer"] == merged["layer"]
save_tsv(merged.assign(exact_n=exact, within1_n=within1, n=n, noise_fpr=fpr, signal_power=power),
         snakemake.output[0])
