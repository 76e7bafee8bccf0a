"""Rule demo_bold: the demo model's aligned features -> simulated BOLD runs + truth, one subject."""

import numpy as np

from brainalign import rois, simulate
from brainalign.io import read_layer, save_img, save_tsv, setup_logging, unmask

setup_logging(snakemake.log[0])
demo, rcfg = snakemake.params.demo, snakemake.params.rois
mask_img = simulate.template_mask(demo["resolution_mm"])
atlas, names = rois.load_atlas(rcfg["atlas"], rcfg["threshold"],
                               rcfg["labels_file"])
labels = np.asarray(rois.resample_labels(atlas, mask_img).dataobj)
mask_img = simulate.restrict_mask(mask_img, labels, names, rcfg["groups"],
                                  demo["noise_voxels"], seed=0)
in_mask = np.asarray(mask_img.dataobj) > 0
roi_voxels = rois.roi_masks(labels[in_mask], names, rcfg["groups"])
planted = {roi: int(layer) for roi, layer in demo["planted"].items()}
features = {layer: [read_layer(f, layer) for f in snakemake.input.features]
            for layer in set(planted.values())}
runs, signal_layer, confounds = simulate.simulate_subject(
    features, mask_img, roi_voxels, planted, demo["snr"], snakemake.params.seed,
    simulate.SimulationOptions.from_config(demo, snakemake.params.tr))
for img, table, bold_out, mask_out in zip(runs, confounds, snakemake.output.bold,
                                          snakemake.output.mask, strict=True):
    simulate.write_bold(img, bold_out, snakemake.params.tr)
    simulate.write_confounds(table, bold_out)  # fMRIPrep's desc-confounds_timeseries.tsv
    save_img(mask_img, mask_out)
save_tsv(simulate.truth_table(planted, signal_layer, roi_voxels), snakemake.output.truth)
# -1: noise voxel, -2: outside the simulated brain
save_img(unmask(signal_layer, mask_img, fill=-2, dtype=np.int16), snakemake.output.signal_layer)
