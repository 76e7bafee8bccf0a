"""Rule compare_models: every subject's ROI x layer tables for every model -> paired comparison
of the models' peak r per ROI across subjects (TSV and HTML page)."""

import html

import pandas as pd

from brainalign import report
from brainalign.compare import paired_model_comparison, roi_peak_r
from brainalign.io import save_tsv, setup_logging

setup_logging(snakemake.log[0])
subjects, models = snakemake.params.subjects, snakemake.params.models
paths = iter(snakemake.input.roi_scores)  # subject-major, models in order (expand)
tables = {(s, m): pd.read_csv(next(paths), sep="\t") for s in subjects for m in models}
peaks = roi_peak_r(tables)
comparison = paired_model_comparison(peaks)
save_tsv(comparison, snakemake.output.table)
names = ", ".join(f"<b>{html.escape(m)}</b>" for m in models)
sections = [
    f"<p>Models {names}; {len(subjects)} subjects. For each subject, ROI and model: the peak "
    "over layers of the ROI-mean held-out Pearson r (nested leave-one-run-out CV).</p>",
    "<h2>Peak r per ROI, subject by subject</h2>" + report.figure(
        report.comparison_png(peaks),
        "Each dot is one subject's peak held-out r over layers (unitless) in the ROI under one "
        "model; grey lines join a subject's models (the comparison is paired), bars mark the "
        "mean over subjects. Taking the peak over layers favours models with more layers "
        "equally on every subject; compare models with the same number of layers or read "
        "the per-layer profiles of the group pages."),
    "<h2>Paired statistics across subjects</h2>" + report.table_html(comparison)
    + "<p>mean_diff = mean over subjects of (model_a - model_b) peak r with its 95% "
    "t-confidence interval (ci_low, ci_high); t and p from a two-sided paired t-test over "
    "subjects (uncorrected for the number of ROIs); wins_a = subjects where model_a scores "
    "higher.</p>",
]
report.write_page(snakemake.output.page, report.page("Model comparison", sections))
