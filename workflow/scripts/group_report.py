"""Rule group_report: subjects' ROI profiles (mean, 95% CI) and the demo's recovery -> HTML."""

import html

import pandas as pd

from brainalign import report
from brainalign.io import setup_logging

setup_logging(snakemake.log[0])
model = snakemake.wildcards.model
scores = pd.read_csv(snakemake.input.scores, sep="\t")
best = pd.read_csv(snakemake.input.best, sep="\t")
truth, recovery_html = None, ""
if snakemake.input.recovery:
    rec = pd.read_csv(snakemake.input.recovery[0], sep="\t")
    truth = dict(zip(rec["roi"], rec["layer"], strict=True))
    first = rec.iloc[0]
    recovery_html = (
        "<h2>Demo: planted truth recovered?</h2>"
        f"<p>Exact best layer for {first['exact_n']}/{first['n']} planted ROIs, within one "
        f"layer for {first['within1_n']}/{first['n']}; share of pure-noise voxels called "
        f"significant: {first['noise_fpr']:.4f} (nominal FDR level 0.05); share of planted "
        f"voxels called significant: {first.get('signal_power', float('nan')):.3f}.</p>"
        + report.table_html(rec[["roi", "layer", "best_layer", "best_r", "n_signal_voxels"]]
                            .rename(columns={"layer": "planted_layer"})))
sections = [
    f"<p>Model <b>{html.escape(model)}</b>, {int(scores['n_subjects'].max())} subjects.</p>",
    "<h2>Best layer per ROI (group)</h2>" + report.table_html(best),
    "<h2>r against layer, per ROI</h2>" + report.figure(
        report.profile_png(scores, truth),
        "Held-out Pearson r averaged over each ROI's voxels, then over subjects; bands are "
        "95% t-confidence intervals across subjects; stars mark the best layer"
        + ("; dotted lines mark the planted layer of the demo." if truth else ".")),
    recovery_html,
    report.cka_section(pd.read_csv(snakemake.input.cka, sep="\t"), model),
]
report.write_page(snakemake.output[0], report.page(f"Group · {model}", sections))
