"""Rule subject_report: one subject's maps, ROI profiles and diagnostics -> one HTML page."""

import html

import nibabel as nib
import numpy as np
import pandas as pd

from brainalign import report
from brainalign.config import alphas
from brainalign.io import load_npz, setup_logging, unmask

setup_logging(snakemake.log[0])
subject, model = snakemake.wildcards.subject, snakemake.wildcards.model
mask_img = nib.load(snakemake.input.mask)
layers = snakemake.params.layers  # the order of the scores inputs
scores = [load_npz(p) for p in snakemake.input.scores]
P_SHOW = 0.001  # r maps show voxels whose layer predicts them at uncorrected p < P_SHOW
r_imgs = [(layer, unmask(np.where(s["p"] < P_SHOW, s["r"], 0.0), mask_img))
          for layer, s in zip(layers, scores, strict=True)]
vmax = float(max(np.percentile(s["r"], 99.9) for s in scores))
roi_scores = pd.read_csv(snakemake.input.roi_scores, sep="\t")
best = pd.read_csv(snakemake.input.best, sep="\t")
n_sig = int((np.asarray(nib.load(snakemake.input.best_map).dataobj) >= 0).sum())
in_mask = np.asarray(mask_img.dataobj) > 0
significant = np.asarray(nib.load(snakemake.input.significant).dataobj)[in_mask] > 0
peak_r = np.max([s["r"] for s in scores], axis=0)
if significant.any():
    peak_r = np.where(significant, peak_r, 0.0)
    shown = f"at the {n_sig} significant voxels (same test as the best-layer map)"
else:  # nothing survives the test: show the map unthresholded rather than an empty view
    shown = ("unthresholded (no voxel passed the significance test of the best-layer map); "
             "only r above 0.05 coloured")
grid = alphas(snakemake.params.alphas)
alpha_by_layer = [s["alpha"] for s in scores]
maps = "".join(report.img_tag(b, f"layer {layer}") for layer, b in
               zip(layers, report.layer_map_pngs(r_imgs, vmax), strict=True))
sections = [
    f"<p>Model <b>{html.escape(model)}</b>, {len(layers)} layers, "
    f"{int((np.asarray(mask_img.dataobj) > 0).sum())} voxels, "
    f"held-out scores from leave-one-run-out cross-validation.</p>",
    "<h2>Best layer per ROI</h2>" + report.table_html(best),
    "<h2>r against layer, per ROI</h2>" + report.figure(
        report.profile_png(roi_scores),
        "Mean held-out Pearson r over each ROI's voxels for every layer; the star marks the "
        "best layer. ROIs from the configured atlas, resampled to this subject's BOLD grid."),
    "<h2>Best-layer map</h2>" + report.figure(
        report.best_layer_png(nib.load(snakemake.input.best_map), int(layers[-1]) + 1),
        f"Layer with the highest held-out r, shown for the {n_sig} voxels predicted above "
        "chance by some layer (circular-shift permutation null refitted per shift, Simes "
        "over layers, FDR q<0.05 over voxels)."),
    "<h2>Held-out r maps per layer</h2><div class='grid'>" + maps + "</div>"
    f"<p>Glass-brain maximum projections of voxelwise held-out r (colour scale 0 to {vmax:.2f}, "
    f"shared across layers), for voxels this layer predicts at uncorrected p &lt; {P_SHOW} "
    "(permutation null); the unthresholded maps are the NIfTI files "
    "<code>encoding/*_stat-r.nii.gz</code>.</p>",
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
    report.cka_section(pd.read_csv(snakemake.input.cka, sep="\t"), model),
]
report.write_page(snakemake.output[0], report.page(f"sub-{subject} · {model}", sections))
