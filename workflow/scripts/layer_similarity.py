"""Rule layer_similarity: linear CKA between consecutive layers, over all stimuli."""

from brainalign.io import save_tsv, setup_logging
from brainalign.similarity import layer_similarity

setup_logging(snakemake.log[0])
save_tsv(layer_similarity(list(snakemake.input), t_r=snakemake.params.tr), snakemake.output[0])
