# The embedded demo: Piper audiobook + simulated fMRIPrep-style BOLD with planted truth.
if DEMO["enabled"]:

    rule demo_audiobook:
        input:
            text=DEMO["text"],
        output:
            [config["stimuli"][s] for s in STIMULI],
        log:
            "logs/demo/audiobook.log",
        conda:
            "../envs/brainalign.yaml"
        params:
            max_words=DEMO["max_words"],
        script:
            "../scripts/demo_audiobook.py"

    rule demo_bold:
        input:
            features=expand(
                "results/aligned/{model}/{stimulus}.h5",
                model=DEMO["model"],
                stimulus=run_stimuli(),
            ),
        output:
            bold=[bold_path("{subject}", r) for r in RUNS],
            mask=[mask_path("{subject}", r) for r in RUNS],
            confounds=[confounds_path("{subject}", r) for r in RUNS],
            truth=TRUTH,
            signal_layer=SIGNAL_LAYER,
        log:
            "logs/demo/bold_sub-{subject}.log",
        conda:
            "../envs/brainalign.yaml"
        params:
            demo=DEMO,
            rois=config["rois"],
            tr=config["tr"],
            seed=lambda wc: 1000 + SUBJECTS.index(wc.subject),
        script:
            "../scripts/demo_bold.py"

    rule demo_recovery:
        input:
            best=expand(
                "results/group/{model}/group_best-layer.tsv", model=DEMO["model"]
            ),
            truth=expand(TRUTH, subject=SUBJECTS),
            signal_layer=expand(SIGNAL_LAYER, subject=SUBJECTS),
            significant=expand(
                "results/sub-{subject}/rois/{model}/sub-{subject}_desc-significant_mask.nii.gz",
                subject=SUBJECTS,
                model=DEMO["model"],
            ),
        output:
            "results/group/demo_recovery.tsv",
        log:
            "logs/demo/recovery.log",
        conda:
            "../envs/brainalign.yaml"
        script:
            "../scripts/demo_recovery.py"
