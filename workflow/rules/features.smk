# Features: every layer of each model for each stimulus, computed once and shared by subjects.


rule extract_features:
    input:
        audio=lambda wc: stimulus_file(wc.stimulus),
    output:
        "results/features/{model}/{stimulus}.h5",
    log:
        "logs/features/{model}_{stimulus}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        model=lambda wc: config["models"][wc.model],
        features=config["features"],
    threads: 2
    resources:
        mem_mb=8000,
    script:
        "../scripts/extract_features.py"


rule layer_similarity:
    input:
        expand("results/features/{{model}}/{stimulus}.h5", stimulus=STIMULI),
    output:
        "results/features/{model}/layer_cka.tsv",
    log:
        "logs/features/{model}_layer_cka.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        tr=config["tr"],
    script:
        "../scripts/layer_similarity.py"
