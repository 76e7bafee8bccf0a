"""Rule group_report: group ROI statistics (which test ran and what it means), best layers
(whether they may be claimed, bootstrap, independent scores), noise ceiling and the demo's
recovery -> HTML."""

import html

import pandas as pd

from brainalign import report, rois, stats
from brainalign.io import setup_logging
from brainalign.targets import GroupPage, for_kind

setup_logging(snakemake.log[0])
targets = for_kind(snakemake.params.kind).load(snakemake.input.masks[0])
model = snakemake.wildcards.model
gcfg = snakemake.params.group
enc_q, group_q = snakemake.params.fdr_q, gcfg["fdr_q"]
scores = pd.read_csv(snakemake.input.scores, sep="\t")
best = pd.read_csv(snakemake.input.best, sep="\t")
layers = sorted(int(v) for v in scores["layer"].unique())
n_sub = int(scores["n_subjects"].max())
cka = pd.read_csv(snakemake.input.cka, sep="\t")
groups = stats.layer_groups(layers, rois.consecutive_cka(cka))
flat = stats.all_layers_indistinguishable(groups)
flat_html = (f"<p><b>No best layer can be claimed for this model</b>: its fitted layers "
             f"{groups[0][0]} to {groups[0][-1]} are indistinguishable (linear CKA between "
             f"consecutive layers &ge; {stats.CKA_INDISTINGUISHABLE:g}; see the CKA section), so "
             "no ROI has a reliable best layer and no best-layer map is drawn.</p>"
             ) if flat else ""
# the same resolution of group.test as the group_rois rule (same inputs, same answer)
chosen = stats.choose_group_test(gcfg["test"], n_sub, scores["roi"].nunique(),
                                 group_q, gcfg["n_flips"])
reliable = best["reliable"].astype(str).str.lower().eq("true")
boot_note = str(best["bootstrap_note"].fillna("").iloc[0]) if len(best) else ""
loso_note = str(best["loso_note"].fillna("").iloc[0]) if len(best) else ""
truth, recovery_html = None, ""
if snakemake.input.recovery:
    rec = pd.read_csv(snakemake.input.recovery[0], sep="\t")
    truth = dict(zip(rec["roi"], rec["layer"], strict=True))
    first = rec.iloc[0]
    recovery_html = (
        "<h2>Demo: planted truth recovered?</h2>"
        f"<p>Exact best layer for {first['exact_n']}/{first['n']} planted ROIs, within one "
        f"layer for {first['within1_n']}/{first['n']}; share of pure-noise voxels called "
        f"significant: {first['noise_fpr']:.4f} (nominal FDR level {enc_q:g}); share of planted "
        f"voxels called significant: {first.get('signal_power', float('nan')):.3f}.</p>"
        + report.table_html(rec[["roi", "layer", "best_layer", "best_r", "n_signal_voxels"]]
                            .rename(columns={"layer": "planted_layer"})))
best_cols = ["roi", "best_layer", "reliable", "p", "q", "significant_layers",
             "equivalent_layers", "layer_ci_low", "layer_ci_high", "bootstrap_share",
             "loso_stability", "subject_layers", "n_subjects_reliable", "best_r",
             "independent_r", "independent_ci_low", "independent_ci_high", "ceiling",
             "normalised_r", "n_voxels"]
population = ("It tests the population mean (these subjects as a sample of listeners)."
              if chosen.population else
              "<b>It does not generalise to the population</b>: it says that at least one of "
              "these subjects' BOLD follows the stimulus in the ROI, not that listeners in "
              "general would show it.")
test_html = (f"<p><b>Group test</b>: {html.escape(chosen.reason)}. {population}"
             + (" <b>No ROI x layer test can be significant at this q.</b>"
                if not chosen.can_pass else "") + "</p>")
refused = "".join(f"<p><b>{name}</b> {html.escape(note)}.</p>" for name, note in (
    ("Bootstrap interval of the best layer", boot_note),
    ("Leave-one-subject-out statistics", loso_note)) if note)
sections = [
    f"<p>Model <b>{html.escape(model)}</b>, {n_sub} subjects. Every r is a held-out Pearson r "
    "(leave-one-run-out cross-validation within each subject).</p>" + test_html,
    "<h2>Best layer per ROI (group)</h2>" + flat_html
    + report.table_html(report.best_layer_display(best, best_cols))
    + f"<p><b>Can a best layer be claimed?</b> {int(reliable.sum())} of {len(best)} ROIs "
    f"have a reliable group best layer (<code>claim</code>): the {chosen.name} group test "
    "finds some layer above chance (<code>p</code>: Simes over the layers' p-values; "
    f"<code>q</code>: Benjamini-Hochberg over ROIs, at q = {group_q:g}, as within subjects, "
    "so that the share of ROIs falsely claimed is controlled), and the model's layers can be "
    "told apart (<code>equivalent_layers</code>: layers with consecutive linear CKA &ge; "
    f"{stats.CKA_INDISTINGUISHABLE:g} to the best one). Elsewhere <code>best_layer</code> is "
    "only an estimate (in brackets). <code>significant_layers</code> lists the layers whose "
    "own test passes FDR over all ROI x layer tests (the * below); "
    "<code>n_subjects_reliable</code> counts the subjects whose own best layer of the ROI is "
    "reliable.</p>"
    + "<p><b>Selection</b>: <code>best_layer</code> maximises the subject-mean ROI r; "
    "<code>layer_ci_low/high</code> is the 95% percentile interval of that argmax over "
    f"{gcfg['n_bootstrap']} bootstrap resamples of subjects, "
    "<code>bootstrap_share</code> the share of resamples that agree; "
    "<code>loso_stability</code> the share of subjects for which the other subjects' mean picks "
    "the same layer; <code>subject_layers</code> each subject's own choice (the layer chosen "
    "most often over that subject's outer folds, each fold choosing on inner-CV scores of its "
    "training runs). <b>Scores</b>: <code>best_r</code> is the r of the chosen layer on the "
    "same data that chose it (biased upward: on noise it is the maximum of several noisy "
    "means); <code>independent_r</code> is, for each subject, its r at the layer picked by "
    "the <i>other</i> subjects, averaged over subjects with a 95% t-interval: an unbiased "
    "score of the selected layer. <code>normalised_r</code> = independent_r / ceiling (group "
    "ROI noise ceiling; empty where the ceiling is too small or not significant).</p>"
    + refused,
    "<h2>Selection bias</h2>" + report.figure(
        report.selection_bias_png(best),
        "Grey: r of each ROI's best layer on the data used to choose it (naive). Blue: r of "
        "the layer chosen by the other subjects, on each left-out subject (leave-one-subject-"
        "out), with 95% t-intervals across subjects. Where grey is far above blue, the best "
        "layer's score was mostly selection noise."
        + (f" No blue bars: leave-one-subject-out {html.escape(loso_note)}." if loso_note
           else "")),
    "<h2>How certain is the best layer?</h2>" + (
        f"<p>Not computed: the bootstrap over subjects was {html.escape(boot_note)}.</p>"
        if boot_note else report.figure(
            report.layer_distribution_png(best, layers),
            f"Share of {gcfg['n_bootstrap']} bootstrap resamples of subjects in "
            "which each layer has the highest subject-mean r (darker = more often); red stars "
            "mark the layer chosen on all subjects, for ROIs with a reliable best layer.")),
    "<h2>r against layer, per ROI</h2>" + report.figure(
        report.profile_png(scores, truth, best=best),
        "Held-out Pearson r averaged over each ROI's voxels, then over subjects; bands are "
        "95% t-confidence intervals across subjects (none with one subject); stars mark the "
        "group best layer of ROIs with a reliable one; faded dashed lines are ROIs without"
        + ("; dotted lines mark the planted layer of the demo." if truth else ".")),
    "<h2>Is the ROI predicted above chance? (per ROI and layer)</h2>"
    + report.table_html(report.significance_pivot(scores))
    + f"<p>Subject-mean held-out r per ROI and layer; * marks a test significant by the "
    f"{chosen.name} group test ({html.escape(chosen.reason)}) after Benjamini-Hochberg FDR "
    f"q = {group_q:g} over all {len(scores)} ROI x layer tests. The p-values of every test "
    "(<code>p_t</code>, <code>p_signflip</code>, <code>p_fixed</code>), the test "
    "<code>q</code> uses (<code>test</code>), the t-intervals and the ceiling-normalised means "
    "are in <code>group_roi-scores.tsv</code>.</p>",
    # the group maps as the kind draws them (parcels: the tables and profiles above)
    *targets.group_sections(GroupPage(
        layers=snakemake.params.layers, n_subjects=n_sub, fdr_q=enc_q, flat=flat,
        flat_html=flat_html,
        masks=list(snakemake.input.masks), mean_r=list(snakemake.input.mean_r),
        best=list(snakemake.input.best_map), share=list(snakemake.input.share),
        ceiling=list(snakemake.input.ceiling), usable=list(snakemake.input.usable),
        project=snakemake.params.project)),
]
sections += [recovery_html,
             report.cka_section(pd.read_csv(snakemake.input.cka, sep="\t"), model)]
report.write_page(snakemake.output[0], report.page(f"Group · {model}", sections))
