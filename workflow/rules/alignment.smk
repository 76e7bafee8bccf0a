# Alignment: frame-rate activations -> one row per fMRI volume (HRF-convolved, FIR-delayed,
# or Lanczos-resampled and FIR-delayed), shifted by the stimulus onset of its runs.


rule align_features:
    input:
        features="results/features/{model}/{stimulus}.h5",
        audio=lambda wc: stimulus_file(wc.stimulus),
    output:
        "results/aligned/{model}/{stimulus}.h5",
    log:
        "logs/alignment/{model}_{stimulus}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        tr=config["tr"],
        alignment=config["alignment"],
        # seconds from the first kept volume to stimulus onset (the same in all its runs)
        onset_s=lambda wc: DATASET.stimulus_onset(wc.stimulus),
    script:
        "../scripts/align_features.py"
