"""Rule group_rois: subjects' ROI x layer scores and best layers -> group statistics per ROI and
layer (mean, 95% CI, t and sign-flip tests, FDR) and the group best layer per ROI (bootstrap
over subjects, leave-one-subject-out independent score)."""

import pandas as pd

from brainalign.io import save_tsv, setup_logging
from brainalign.rois import group_best_layer, group_roi_stats

setup_logging(snakemake.log[0])
gcfg = snakemake.params.group
tables = [pd.read_csv(p, sep="\t", dtype={"layer": int}) for p in snakemake.input.scores]
best_tables = [pd.read_csv(p, sep="\t") for p in snakemake.input.best]
save_tsv(group_roi_stats(tables, gcfg.get("n_flips", 10000), gcfg.get("fdr_q", 0.05),
                         gcfg.get("test", "signflip")), snakemake.output.scores)
save_tsv(group_best_layer(tables, best_tables, gcfg.get("n_bootstrap", 2000)),
         snakemake.output.best)
