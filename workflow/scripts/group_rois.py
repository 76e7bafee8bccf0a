"""Rule group_rois: subjects' ROI x layer scores -> group mean with 95% CI, best layer per ROI."""

import pandas as pd

from brainalign.io import save_tsv, setup_logging
from brainalign.rois import best_layer_per_roi, group_roi_scores

setup_logging(snakemake.log[0])
tables = [pd.read_csv(p, sep="\t", dtype={"layer": int}) for p in snakemake.input]
group = group_roi_scores(tables)
save_tsv(group, snakemake.output.scores)
save_tsv(best_layer_per_roi(group), snakemake.output.best)
