"""Rule group_rois: subjects' ROI x layer scores, best layers and ROI null draws -> group
statistics per ROI and layer (mean, 95% CI, t, sign-flip and fixed-effects tests, FDR over the
test group.test resolves to) and the group best layer per ROI (whether it may be claimed,
bootstrap over subjects, leave-one-subject-out independent score, each refused below the
number of subjects where it means something)."""

import logging

import pandas as pd

from brainalign import stats
from brainalign.io import load_npz, save_tsv, setup_logging
from brainalign.rois import GroupOptions, group_best_layer, group_roi_stats

setup_logging(snakemake.log[0])
logger = logging.getLogger("group_rois")
gcfg = snakemake.params.group
q, n_flips = gcfg["fdr_q"], gcfg["n_flips"]
tables = [pd.read_csv(p, sep="\t", dtype={"layer": int}) for p in snakemake.input.scores]
best_tables = [pd.read_csv(p, sep="\t") for p in snakemake.input.best]
nulls = [load_npz(p) for p in snakemake.input.nulls]
perms = sorted({int(n["null"].shape[1]) for n in nulls})
if len(perms) > 1:
    logger.warning("subjects have %s permutation null draws; the fixed-effects test uses the "
                   "first %d of each", perms, perms[0])
n_sub, n_rois = len(tables), tables[0]["roi"].nunique()
chosen = stats.choose_group_test(gcfg["test"], n_sub, n_rois, q, n_flips)
(logger.info if chosen.can_pass else logger.warning)("%s", chosen.reason)
group = group_roi_stats(tables, n_flips, q, chosen.name, nulls=nulls)
logger.info("%d of %d ROI x layer tests significant (%s test, FDR q = %g)",
            int(group["significant"].sum()), len(group), chosen.name, q)
cka = pd.read_csv(snakemake.input.cka, sep="\t")
best = group_best_layer(tables, best_tables, GroupOptions.from_config(gcfg),
                        group_stats=group, cka=cka)
for col in ("bootstrap_note", "loso_note"):
    note = best[col].iloc[0] if len(best) else ""
    if isinstance(note, str) and note:
        logger.warning("%s: %s", col.split("_")[0], note)
logger.info("%d of %d ROIs have a reliable group best layer", int(best["reliable"].sum()),
            len(best))
unreliable = best.loc[~best["reliable"].astype(bool), ["roi", "note"]]
for roi, note in zip(unreliable["roi"], unreliable["note"], strict=True):
    logger.info("no reliable best layer for %s: %s", roi, note)
save_tsv(group, snakemake.output.scores)
save_tsv(best, snakemake.output.best)
