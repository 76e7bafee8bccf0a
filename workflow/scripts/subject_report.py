"""Rule subject_report: one subject's maps, ROI profiles and diagnostics -> one HTML page."""

import html

import nibabel as nib
import numpy as np
import pandas as pd

from brainalign import report
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
if mask.is_parcels:
    n_sig = int((pd.read_csv(snakemake.input.best_map[0], sep="\t")["value"] >= 0).sum())
else:
    n_sig = int(sum((np.asarray(nib.load(p).darrays[0].data if mask.is_surface
                                else nib.load(p).dataobj) >= 0).sum()
                    for p in snakemake.input.best_map))
maps = "" if mask.img is None else "".join(
    report.img_tag(b, f"layer {layer}") for layer, b in
    zip(layers, report.layer_map_pngs(r_imgs, vmax), strict=True))
sections = [
    f"<p>Model <b>{html.escape(model)}</b>, {len(layers)} layers, "
    f"{mask.n_targets} {mask.noun}, "
    f"held-out scores from leave-one-run-out cross-validation.</p>",
    "<h2>Best layer per ROI</h2>" + report.table_html(best),
    "<h2>r against layer, per ROI</h2>" + report.figure(
        report.profile_png(roi_scores),
        "Mean held-out Pearson r over each ROI's voxels for every layer; the star marks the "
        "best layer. ROIs from the configured atlas, resampled to this subject's BOLD grid."),
    "<h2>Best-layer map</h2>" + (
        f"<p>{n_sig} vertices predicted above chance; best-layer and r maps are GIFTI files "
        "on the input surface (<code>*_hemi-L_*.func.gii</code>, <code>*_hemi-R_*</code>).</p>"
        if mask.is_surface else
        f"<p>{n_sig} parcels predicted above chance; per-parcel r and best layer are in "
        "<code>*_stat-r.tsv</code> and <code>*_desc-bestlayer_map.tsv</code>.</p>"
        if mask.is_parcels else report.figure(
        report.best_layer_png(nib.load(snakemake.input.best_map[0]), int(layers[-1]) + 1),
        f"Layer with the highest held-out r, shown for the {n_sig} voxels predicted above "
        "chance by some layer (circular-shift permutation null refitted per shift, Simes "
        "over layers, FDR q<0.05 over voxels).")),
    "" if mask.img is None else
    "<h2>Held-out r maps per layer</h2><div class='grid'>" + maps + "</div>"
    f"<p>Glass-brain maximum projections of voxelwise held-out r (colour scale 0 to {vmax:.2f}, "
    f"shared across layers), for voxels this layer predicts at uncorrected p &lt; {P_SHOW} "
    "(permutation null); the unthresholded maps are the NIfTI files "
    "<code>encoding/*_stat-r.nii.gz</code>.</p>",
    "<h2>Regularisation</h2>" + report.figure(
        report.alpha_png([s["alpha"].ravel() for s in scores], layers),
        "Ridge penalty chosen per voxel by inner leave-one-run-out CV within each outer "
        "training split (all folds and voxels). Penalties piling up at the grid's upper end "
        "mark voxels the layer cannot predict."),
    report.cka_section(pd.read_csv(snakemake.input.cka, sep="\t"), model),
]
report.write_page(snakemake.output[0], report.page(f"sub-{subject} · {model}", sections))
