# Noise ceiling: inter-subject correlation of the subjects' cleaned BOLD (story by story, among
# the subjects who heard it; configured confounds regressed out run by run), or the split-half
# reliability of a stimulus heard twice (`ceiling.method`) -> per-voxel ceiling for each
# subject, and group maps.


rule noise_ceiling:
    input:
        masks=expand(
            MASK,
            subject=SUBJECTS,
        ),
        # subject-major: all runs of the first subject, then the next subject's
        bold=ceiling_bold(),
        # each run's confounds, cleaned like its BOLD, regressed out before the ISC
        confounds=ceiling_bold("confounds"),
        # each run's cross-validation blocks: runs are compared on the volumes all kept
        blocks=ceiling_bold("blocks"),
    output:
        subjects=expand(
            "results/group/ceiling/sub-{subject}_desc-ceiling.npz", subject=SUBJECTS
        ),
        # NIfTI maps, a GIFTI pair per map on surfaces, or parcel TSVs
        isc=stat_maps("results/group/ceiling/group_desc-isc_stat-r"),
        ceiling=stat_maps("results/group/ceiling/group_desc-ceiling_stat-r"),
        usable=stat_maps("results/group/ceiling/group_desc-ceiling_mask"),
    log:
        "logs/ceiling/noise_ceiling.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        tr=config["tr"],
        ceiling=CEILING,
        match_labels=ceiling_match_labels(),
        run_stimuli=run_stimuli(),
        stimuli=[[r.stimulus for r in subject_runs(s)] for s in SUBJECTS],
        kind=KIND,
    threads: 2
    resources:
        mem_mb=8000,
    script:
        "../scripts/noise_ceiling.py"
