"""Rule subject_atlas: the configured atlas on the subject's targets (``Targets.write_atlas``).
Volume: resampled (nearest) onto the BOLD grid, with a log line when the grids differ. Surface:
the atlas's vertex labels (refused on another surface density) and their names. Parcels: the
parcels."""

from brainalign.io import setup_logging
from brainalign.targets import for_kind

setup_logging(snakemake.log[0])
targets = for_kind(snakemake.params.kind).load(snakemake.input.mask)
targets.write_atlas(snakemake.params.rois, snakemake.output[0])
