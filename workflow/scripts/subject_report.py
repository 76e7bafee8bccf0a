"""Rule subject_report: one subject's maps, ROI profiles and diagnostics -> one HTML page."""

import html

import nibabel as nib
import numpy as np
import pandas as pd

from brainalign import report, rois, stats
from brainalign.config import alphas
from brainalign.io import load_npz, setup_logging, unmask
from brainalign.targets import load_mask

setup_logging(snakemake.log[0])
subject, model = snakemake.wildcards.subject, snakemake.wildcards.model
mask = load_mask(snakemake.input.mask)  # volume, or vertices of a surface (GIFTI maps)
mask_img = mask.img
layers = snakemake.params.layers  # the order of the scores inputs
scores = [load_npz(p) for p in snakemake.input.scores]
P_SHOW = 0.001  # r maps show voxels whose layer predicts them at uncorrected p < P_SHOW
r_imgs = [] if mask.img is None else [
    (layer, unmask(np.where(s["p"] < P_SHOW, s["r"], 0.0), mask_img))
    for layer, s in zip(layers, scores, strict=True)]
vmax = float(max(np.percentile(s["r"], 99.9) for s in scores))
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
if mask.is_parcels:
    roi_origin = "ROIs are the parcels of the input time series and the configured groups of them."
elif mask.is_surface:
    roi_origin = "ROIs from the configured surface atlas, on the input surface."
else:
    roi_origin = "ROIs from the configured atlas, resampled to this subject's BOLD grid."
best_img = None if mask.img is None else nib.load(snakemake.input.best_map[0])
# counted on the significance mask: the best-layer map is empty when no layer can be told apart
if mask.is_parcels:
    n_sig = int((pd.read_csv(snakemake.input.significant[0], sep="\t")["value"] > 0).sum())
elif mask.is_surface:
    n_sig = int(sum((np.asarray(nib.load(p).darrays[0].data) > 0).sum()
                    for p in snakemake.input.significant))
else:
    n_sig = int((np.asarray(nib.load(snakemake.input.significant[0]).dataobj) > 0).sum())
maps = "" if mask.img is None else "".join(
    report.img_tag(b, f"layer {layer}") for layer, b in
    zip(layers, report.layer_map_pngs(r_imgs, vmax), strict=True))
# the best-layer map on the inflated cortex: surface inputs, and volumes sampled on fsaverage5
n_colours = int(layers[-1]) + 1  # the colours of the volume maps: one per layer number
drawn_on = ("Colours: one per layer, as in the volume maps; grey: sulcal depth, where no "
            "layer is significant or the vertex is not analysed (medial wall).")
cortex_html = ""
if flat:
    pass  # no best layer is claimed anywhere: nothing to draw
elif mask.is_surface:
    cortex_html = report.surface_best_layer_figure(
        snakemake.input.best_map, n_colours,
        "Best layer per vertex on the inflated cortex (fsaverage5; left and right hemispheres, "
        "lateral and medial views), at the vertices predicted above chance by some layer "
        "(circular-shift permutation null refitted per shift, Simes over layers, FDR q &le; "
        f"{fdr_q:g} over vertices): the layer chosen most often over the outer folds, each fold "
        f"choosing on inner-CV scores of its training data. {drawn_on}")
elif snakemake.input.projected:
    cortex_html = "<h2>Best-layer map on the cortex</h2>" + report.surface_best_layer_figure(
        snakemake.input.projected, n_colours,
        "The best-layer map above sampled on fsaverage5 (<code>project_to_fsaverage</code>: the "
        "most frequent label between the white and pial surfaces, nilearn "
        "<code>vol_to_surf</code>; meaningful for MNI-space data only) and drawn on the "
        f"inflated cortex (lateral and medial views). {drawn_on} The GIFTI files are "
        "<code>rois/*_space-fsaverage5_desc-bestlayer_hemi-L_map.func.gii</code> (and "
        "<code>hemi-R</code>).")
grid = alphas(snakemake.params.alphas)
alpha_by_layer = [s["alpha"] for s in scores]
if mask.img is not None:  # volume: interactive views of the peak r
    significant = np.asarray(nib.load(snakemake.input.significant[0]).dataobj)[
        np.asarray(mask_img.dataobj) > 0] > 0
    peak_r = np.max([s["r"] for s in scores], axis=0)
    if significant.any():
        peak_r = np.where(significant, peak_r, 0.0)
        shown = f"at the {n_sig} significant voxels (same test as the best-layer map)"
    else:  # nothing survives the test: show the map unthresholded rather than an empty view
        shown = ("unthresholded (no voxel passed the significance test of the best-layer map); "
                 "only r above 0.05 coloured")
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
        "without one. " + roi_origin),
    *(["<h2>Best-layer map</h2>" + flat_html + (
        f"<p>{n_sig} vertices predicted above chance; best-layer and r maps are GIFTI files "
        "on the input surface (<code>*_hemi-L_*.func.gii</code>, <code>*_hemi-R_*</code>).</p>"
        + cortex_html
        if mask.is_surface else
        f"<p>{n_sig} parcels predicted above chance; per-parcel r and best layer are in "
        "<code>*_stat-r.tsv</code> and <code>*_desc-bestlayer_map.tsv</code>.</p>")]
      if mask.img is None else [
        "<h2>Best-layer map</h2>" + flat_html + report.figure(
        report.best_layer_png(best_img, int(layers[-1]) + 1),
        f"Best layer per voxel, shown for the {n_sig} voxels predicted above chance by some "
        "layer (circular-shift permutation null refitted per shift, Simes over layers, FDR "
        f"q &le; {fdr_q:g} over voxels): the layer chosen most often over the outer folds, "
        "each fold "
        "choosing on inner-CV scores of its training runs. The share of folds that agree and "
        "the chosen layers' held-out r are the NIfTI maps "
        "<code>rois/*_desc-bestlayerstability_map.nii.gz</code> and "
        "<code>rois/*_desc-bestlayer_stat-r.nii.gz</code>.") + cortex_html,
        "<h2>Best layer's independent held-out r</h2>" + report.figure(
        report.stat_map_png(nib.load(snakemake.input.best_r[0]), "independent r of best layer"),
        "Held-out r of each fold's chosen layer on that fold's held-out run, averaged over "
        "folds (all voxels, unthresholded): unlike the maximum over layers of the same "
        "scores, it is not inflated by the choice (about 0 on noise)."),
    ]),
    "" if mask.img is None else
    "<h2>Held-out r maps per layer</h2><div class='grid'>" + maps + "</div>"
    f"<p>Glass-brain maximum projections of voxelwise held-out r (colour scale 0 to {vmax:.2f}, "
    f"shared across layers), for voxels this layer predicts at uncorrected p &lt; {P_SHOW} "
    "(permutation null); the unthresholded maps are the NIfTI files "
    "<code>encoding/*_stat-r.nii.gz</code>.</p>",
    "" if mask.img is None else
    "<h2>Interactive views</h2>" + report.interactive_views(
        unmask(peak_r, mask_img), "peak held-out r", vmax,
        threshold=1e-3 if significant.any() else 0.05)
    + f"<p>Peak held-out Pearson r over layers (unitless), {shown}; drag to rotate, scroll to "
    "zoom. Top: slices of the "
    "volume on MNI152. Bottom: the volume sampled between the white and pial surfaces of "
    "fsaverage5 (nilearn <code>vol_to_surf</code>, valid for MNI-space data) and shown on the "
    "inflated surface.</p>",
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
