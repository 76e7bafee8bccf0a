"""Rule demo_audiobook: the demo story text -> one wav per run (Piper TTS, offline)."""

from pathlib import Path

from brainalign.io import setup_logging
from brainalign.simulate import synthesize_audiobook

setup_logging(snakemake.log[0])
text = Path(snakemake.input.text).read_text(encoding="utf-8")
durations = synthesize_audiobook(text, list(snakemake.output), snakemake.params.max_words)
print(f"synthesised {sum(durations):.1f} s of speech in {len(durations)} runs: "
      + ", ".join(f"{d:.1f} s" for d in durations))
