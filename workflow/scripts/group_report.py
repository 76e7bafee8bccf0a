"""Rule group_report: group ROI statistics (which test ran and what it means), best layers
(whether they may be claimed, bootstrap, independent scores), noise ceiling and the demo's
recovery -> HTML."""

import html

import nibabel as nib
import numpy as np
import pandas as pd

from brainalign import report, rois, stats, surface
from brainalign.bold import same_grid
from brainalign.compare import group_layer_maps
from brainalign.io import setup_logging


def group_maps_section(layers: list[str]) -> str:
    """Mean r maps per layer over subjects, the group best-layer map and interactive views."""
    masks = [nib.load(f) for f in snakemake.input.masks]
    ref = masks[0]
    if not all(same_grid(m, ref) for m in masks):
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
    map_html = ("<h2>Group best-layer map</h2>" + flat_html) if flat else (
        "<h2>Group best-layer map</h2>" + report.figure(
            report.best_layer_png(volume(best, -1, np.int16), int(layers[-1]) + 1),
            f"Layer with the highest subject-averaged held-out r, at the {int(consistent.sum())}"
            f" voxels called significant (Simes over layers, FDR q &le; {enc_q:g} within each "
            f"subject) in more than half of the {n_subj} subjects; {int(common.sum())} voxels "
            "inside every subject's brain mask.")
        + (report.figure(report.surface_best_layer_png(
            *(v.astype(int) for v in surface.project_volume(
                volume(best, -1, np.int16), "fsaverage5",
                interpolation="nearest_most_frequent")), int(layers[-1]) + 1),
            "The group best-layer map sampled on fsaverage5 (<code>project_to_fsaverage</code>: "
            "the most frequent label between the white and pial surfaces, nilearn "
            "<code>vol_to_surf</code>; meaningful for MNI-space data only), on the inflated "
            "cortex (lateral and medial views); grey: sulcal depth, where no layer is shown.")
           if snakemake.params.project else ""))
    return (
        map_html
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


def surface_maps_section(layers: list[int]) -> str:
    """The group best-layer map of surface data (rule group_surface_maps) on the inflated
    cortex."""
    if flat:
        return "<h2>Group best-layer map</h2>" + flat_html
    return "<h2>Group best-layer map</h2>" + report.surface_best_layer_figure(
        snakemake.input.surface_best, int(layers[-1]) + 1,
        "Layer with the highest subject-averaged held-out r per vertex, at the vertices called "
        f"significant (Simes over layers, FDR q &le; {enc_q:g} within each subject) in more "
        f"than half of the {n_sub} subjects and analysed in all of them, on the inflated cortex "
        "(fsaverage5; left and right hemispheres, lateral and medial views). Colours: one per "
        "layer, as in the subject maps; grey: sulcal depth, where no layer is shown. On the "
        "subjects' surface: <code>group_desc-bestlayer_hemi-L_map.func.gii</code> (and "
        "<code>hemi-R</code>; -1 where none), the subject-mean r of every layer "
        "<code>group_desc-layers_hemi-L_stat-r.func.gii</code> (one data array per layer) and "
        "the share of subjects in which each vertex is significant "
        "<code>group_desc-significantshare_hemi-L_map.func.gii</code>.")


setup_logging(snakemake.log[0])
model = snakemake.wildcards.model
gcfg = snakemake.params.group
enc_q, group_q = snakemake.params.fdr_q, gcfg.get("fdr_q", 0.05)
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
chosen = stats.choose_group_test(gcfg.get("test", "auto"), n_sub, scores["roi"].nunique(),
                                 group_q, gcfg.get("n_flips", 10000))
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
    f"{gcfg.get('n_bootstrap', 2000)} bootstrap resamples of subjects, "
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
            f"Share of {gcfg.get('n_bootstrap', 2000)} bootstrap resamples of subjects in "
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
    # group maps of volume and surface data (parcels: the tables and profiles above)
    group_maps_section(snakemake.params.layers) if snakemake.input.masks else
    surface_maps_section(layers) if snakemake.input.surface_best else "",
]
if snakemake.input.ceiling:
    ceiling_img, usable_img = (nib.load(p) for p in snakemake.input.ceiling)
    usable = np.asarray(usable_img.dataobj) > 0
    shown = nib.Nifti1Image(np.where(usable, np.asarray(ceiling_img.dataobj), 0.0),
                            ceiling_img.affine)
    sections.append(
        "<h2>Noise ceiling</h2>" + report.figure(
            report.stat_map_png(shown, f"noise ceiling ({int(usable.sum())} usable voxels)"),
            "Highest r a stimulus model could reach per voxel, estimated from the "
            "leave-one-subject-out inter-subject correlation of the same cleaned BOLD the "
            "models are scored on (each run, then averaged over runs and subjects), corrected "
            "for the noise left in the other subjects' mean (shared-signal model, Spearman-"
            "Brown). It only counts responses shared across subjects: idiosyncratic but "
            "stimulus-driven responses lower it (normalised scores above 1 are possible), and "
            "so does anatomical misalignment. Shown only where it is usable: significant "
            "(circular shifts of the subjects against each other, FDR over voxels) and at "
            "least <code>ceiling.min_ceiling</code>; the unthresholded map is "
            "<code>group/ceiling/group_desc-ceiling_stat-r.nii.gz</code>."))
sections += [recovery_html,
             report.cka_section(pd.read_csv(snakemake.input.cka, sep="\t"), model)]
report.write_page(snakemake.output[0], report.page(f"Group · {model}", sections))
