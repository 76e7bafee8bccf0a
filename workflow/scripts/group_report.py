"""Rule group_report: subjects' ROI profiles (mean, 95% CI) and the demo's recovery -> HTML."""

import html

import nibabel as nib
import numpy as np
import pandas as pd

from brainalign import report
from brainalign.compare import group_layer_maps
from brainalign.io import setup_logging


def group_maps_section(layers: list[str]) -> str:
    """Mean r maps per layer over subjects, the group best-layer map and interactive views."""
    masks = [nib.load(f) for f in snakemake.input.masks]
    ref = masks[0]
    if any(m.shape != ref.shape or not np.allclose(m.affine, ref.affine) for m in masks):
        return ("<h2>Group maps</h2><p>Not shown: the subjects' BOLD grids differ (group maps "
                "need data in one template space, e.g. fMRIPrep's MNI152 outputs).</p>")
    common = np.all([np.asarray(m.dataobj) > 0 for m in masks], axis=0)
    n_layers = len(layers)
    r_files = snakemake.input.r_maps  # subject-major, layers in order
    layer_r = np.stack([[np.asarray(nib.load(r_files[i * n_layers + j]).dataobj)[common]
                         for j in range(n_layers)] for i in range(len(masks))])
    significant = np.stack([np.asarray(nib.load(f).dataobj)[common] > 0
                            for f in snakemake.input.significant])
    mean_r, best, share = group_layer_maps(layer_r, significant, layers)

    def volume(values, fill=0.0, dtype=np.float32):
        vol = np.full(ref.shape, fill, dtype=dtype)
        vol[common] = values
        return nib.Nifti1Image(vol, ref.affine)

    vmax = float(max(np.percentile(mean_r, 99.9), 1e-3))
    consistent = share > 0.5
    # maps show the voxels significant in most subjects; all voxels when there are none
    shown = consistent if consistent.any() else np.ones_like(consistent)
    where = ("at the voxels significant in most subjects" if consistent.any() else
             "unthresholded (no voxel significant in most subjects)")
    maps = "".join(report.img_tag(b, f"layer {layer}") for layer, b in zip(
        layers, report.layer_map_pngs(
            [(layer, volume(np.where(shown, mean_r[j], 0.0)))
             for j, layer in enumerate(layers)], vmax), strict=True))
    n_subj = len(masks)
    return (
        "<h2>Group best-layer map</h2>" + report.figure(
            report.best_layer_png(volume(best, -1, np.int16), int(layers[-1]) + 1),
            f"Layer with the highest subject-averaged held-out r, at the {int(consistent.sum())}"
            f" voxels called significant (Simes over layers, FDR q&lt;0.05) in more than half "
            f"of the {n_subj} subjects; {int(common.sum())} voxels inside every subject's "
            "brain mask.")
        + "<h2>Group r maps per layer</h2><div class='grid'>" + maps + "</div>"
        f"<p>Glass-brain maximum projections of the held-out Pearson r (unitless) averaged "
        f"over {n_subj} subjects, per layer, on one colour scale (0 to {vmax:.2f}), {where}."
        "</p>"
        + "<h2>Interactive views</h2>" + report.interactive_views(
            volume(np.where(shown, mean_r.max(0), 0.0)), "group peak r", vmax,
            threshold=1e-3 if consistent.any() else 0.05)
        + "<p>Peak over layers of the subject-averaged held-out r (unitless), "
        + where + (", only r above 0.05 coloured" if not consistent.any() else "")
        + "; slices on MNI152 (top) and the volume sampled between the white and pial "
        "surfaces of fsaverage5, shown inflated (bottom).</p>")


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
    group_maps_section(snakemake.params.layers),
    recovery_html,
    report.cka_section(pd.read_csv(snakemake.input.cka, sep="\t"), model),
]
report.write_page(snakemake.output[0], report.page(f"Group · {model}", sections))
