"""Rule subject_mask: a subject's targets (``Targets.fit``). Volume: the intersection of the
per-run fMRIPrep brain masks. Surface / parcels: the vertices / parcels finite and non-constant
in every run."""

from brainalign.io import setup_logging
from brainalign.targets import for_kind

setup_logging(snakemake.log[0])
targets = for_kind(snakemake.params.kind).fit(
    list(snakemake.params.runs), list(snakemake.input.mask), snakemake.params.space)
targets.save(snakemake.output[0])
