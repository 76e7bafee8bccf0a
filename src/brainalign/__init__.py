"""brainalign: which layer of a self-supervised speech model best explains each cortical
region's fMRI response to audiobooks.

One module per pipeline stage (audio, features, alignment, bold, encoding, ceiling, stats, rois,
compare, simulate, report, bids, surface, parcels, targets, io, config); the Snakemake rules in
``workflow/rules`` wire files to their functions.
"""

__version__ = "0.1.0"
