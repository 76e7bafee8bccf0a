"""Rule subject_report: one subject's maps, ROI profiles and diagnostics -> one HTML page."""

import html

import pandas as pd

from brainalign import report, rois, stats
from brainalign.config import alphas
from brainalign.io import load_npz, setup_logging
from brainalign.targets import SubjectPage, for_kind

setup_logging(snakemake.log[0])
subject, model = snakemake.wildcards.subject, snakemake.wildcards.model
mask = for_kind(snakemake.params.kind).load(snakemake.input.mask)
layers = snakemake.params.layers  # the order of the scores inputs
scores = [load_npz(p) for p in snakemake.input.scores]
roi_scores = pd.read_csv(snakemake.input.roi_scores, sep="\t")
best = pd.read_csv(snakemake.input.best, sep="\t")
fdr_q = snakemake.params.fdr_q
cka = pd.read_csv(snakemake.input.cka, sep="\t")
groups = stats.layer_groups([int(v) for v in layers], rois.consecutive_cka(cka))
flat = stats.all_layers_indistinguishable(groups)
flat_html = (f"<p><b>No best layer can be claimed for this model</b>: its fitted layers "
             f"{groups[0][0]} to {groups[0][-1]} are indistinguishable (linear CKA between "
             f"consecutive layers &ge; {stats.CKA_INDISTINGUISHABLE:g}; see the CKA section), so "
             "every ROI is listed without a reliable best layer and the best-layer map is "
             "empty.</p>") if flat else ""
n_reliable = int(best["reliable"].astype(str).str.lower().eq("true").sum())
# counted on the significance mask: the best-layer map is empty when no layer can be told apart
n_sig = int((mask.read_map(snakemake.input.significant) > 0).sum())
map_sections = mask.subject_sections(SubjectPage(
    layers=layers, scores=scores, fdr_q=fdr_q, n_sig=n_sig, flat=flat, flat_html=flat_html,
    best_map=list(snakemake.input.best_map), best_r=list(snakemake.input.best_r),
    significant=list(snakemake.input.significant), projected=list(snakemake.input.projected)))
grid = alphas(snakemake.params.alphas)
alpha_by_layer = [s["alpha"] for s in scores]
sections = [
    f"<p>Model <b>{html.escape(model)}</b>, {len(layers)} layers, "
    f"{mask.n_targets} {mask.noun}, "
    f"held-out scores from {html.escape(snakemake.params.cv)}.</p>",
    "<h2>Best layer per ROI</h2>" + flat_html + report.table_html(report.best_layer_display(
        best, ["roi", "best_layer", "reliable", "p", "q", "significant_layers",
               "equivalent_layers", "stability", "fold_layers", "independent_r", "naive_layer",
               "best_r", "ceiling", "normalised_r", "n_voxels"]))
    + f"<p><b>Can a best layer be claimed?</b> {n_reliable} of {len(best)} ROIs have a "
    "reliable best layer (<code>claim</code>). Per ROI and layer, the ROI-mean held-out r is "
    "tested against the ROI means of the circular-shift permutation null (each draw is one "
    "set of shifts for all voxels, so their dependence is kept); <code>p</code> combines the "
    f"layers with Simes' test and <code>q</code> is Benjamini-Hochberg over ROIs, at q = "
    f"{fdr_q:g} (<code>encoding.fdr_q</code>). Without a significant layer the ROI has <i>no "
    "reliable best layer</i>: <code>best_layer</code> is then only the estimate (in "
    "brackets). <code>significant_layers</code> lists the layers whose own test passes FDR "
    "over all ROI x layer cells; <code>equivalent_layers</code> the layers that cannot be told "
    "apart from the best one (consecutive linear CKA &ge; "
    f"{stats.CKA_INDISTINGUISHABLE:g}); when that holds for all layers, no ROI gets one.</p>"
    + "<p><b>Selection without double dipping</b>: in each outer fold (held-out run) the layer "
    "is chosen on the inner-CV validation R² of that fold's training runs only (ROI-mean); "
    "<code>fold_layers</code> lists the choices, <code>best_layer</code> is the most frequent, "
    "<code>stability</code> the share of folds that agree. "
    "<code>independent_r</code> is the held-out r of each fold's choice on its held-out run, "
    "averaged over folds: selection and score never share a run. <code>best_r</code> is the "
    "naive maximum over layers of the fold-averaged r (<code>naive_layer</code>), chosen and "
    "scored on the same data and so biased upward. <code>ceiling</code> is the ROI's mean "
    "inter-subject-correlation noise ceiling and <code>normalised_r</code> = independent_r / "
    "ceiling (empty where the ceiling is below <code>ceiling.min_ceiling</code> or fewer than "
    "half its voxels have a significant ceiling). All columns are in "
    "<code>rois/*_best-layer.tsv</code>.</p>",
    "<h2>r against layer, per ROI</h2>" + report.figure(
        report.profile_png(roi_scores, best=best),
        "Mean held-out Pearson r over each ROI's voxels for every layer. The star marks the "
        "table's best layer (chosen across folds on training-run scores, not the maximum of "
        "this curve) and only for ROIs with a reliable best layer; faded dashed lines are ROIs "
        "without one. " + mask.roi_origin),
    *map_sections,
    "<h2>Regularisation</h2>" + report.figure(
        report.alpha_png(alpha_by_layer, layers, grid),
        "Share of voxels choosing each ridge penalty of the searched grid (inner "
        "leave-one-run-out CV within each outer training split; all folds and voxels of this "
        "subject), per layer. Choices piling up at the upper end mark voxels the layer cannot "
        "predict (the model shrinks to zero); at the lower end, a grid that should extend "
        "further down.")
    + report.table_html(report.alpha_table(alpha_by_layer, layers, grid)),
    report.cka_section(cka, model),
]
report.write_page(snakemake.output[0], report.page(f"sub-{subject} · {model}", sections))
