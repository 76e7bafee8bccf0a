# Alignment: frame-rate activations -> one row per fMRI volume (HRF-convolved or FIR-delayed).


rule align_features:
    input:
        features="results/features/{model}/{stimulus}.h5",
        audio=lambda wc: config["stimuli"][wc.stimulus],
    output:
        "results/aligned/{model}/{stimulus}.h5",
    log:
        "logs/alignment/{model}_{stimulus}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        tr=config["tr"],
        alignment=config["alignment"],
    script:
        "../scripts/align_features.py"
