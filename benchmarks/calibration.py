"""Calibration of the encoding p-values on BOLD that never heard the stimulus.

Four 163 s stories of speech-like audio through a speech model (real Whisper tiny.en when
../shared has it, else a tiny random wav2vec2), HRF-aligned at TR 1 s; BOLD of slow noise (lag-1
autocorrelation ~0.97 after cleaning), a run-start response (-0.27 SD for 8 s, +0.11 SD for
20 s, per-voxel amplitude 1 +- 0.5) and drift. Per layer: the share of voxels at p < 0.05,
p < 0.01 and p < 0.001 and the mean held-out r, for the pipeline as it is ("after": features
centred, the onset excluded) and as it was ("before": uncentred features, every volume kept),
each averaged over several sets of circular shifts (every voxel shares one set per fit); with
``--independent``, "after" also with the independent-shift null ("after-iid": every draw its
own shifts, as before the shared shift design).

    python benchmarks/calibration.py              # 4000 voxels, 3 shift sets
    python benchmarks/calibration.py --quick      # 1000 voxels, 1 shift set
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from brainalign import alignment, encoding, features, io, simulate
from brainalign.bold import clean_signals
from brainalign.models import ModelSpec
from brainalign.windows import WindowOptions

WHISPER = Path(__file__).resolve().parents[2] / "shared" / "models" / "whisper-tiny.en"
T_R, RUN_S, N_RUNS = 1.0, 163.0, 4


def speech_layers(tmp: Path) -> tuple[str, list[dict[int, tuple]]]:
    """The model's name and, per story, {layer: (frame_times, activations)}."""
    if WHISPER.is_dir():
        spec, window = ModelSpec("whisper-tiny.en", str(WHISPER)), (20.0, 5.0)
    else:
        spec = ModelSpec("tiny-random-wav2vec2", "random", "wav2vec2", 0, {
            "initializer_range": 0.2, "hidden_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 4, "intermediate_size": 128, "conv_dim": [64] * 7,
            "num_conv_pos_embeddings": 32})
        window = (10.0, 5.0)
    extractor = features.LayerExtractor(spec, device="cpu", precision="float32")
    runs = []
    for i in range(N_RUNS):
        path = tmp / f"story{i}.h5"
        features.extract_features(extractor, simulate.speech_like(RUN_S, seed=200 + i), path,
                                  WindowOptions(*window), dtype="float32")
        times = io.read_frame_times(path)
        runs.append({k: (times, io.read_layer(path, k)) for k in range(extractor.n_layers)})
    return spec.name, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--voxels", type=int, default=4000)
    parser.add_argument("--shift-sets", type=int, default=3)
    parser.add_argument("--exclude-onset-s", type=float, default=20.0)
    parser.add_argument("--independent", action="store_true",
                        help="also 'after' with the independent-shift null (every draw its own "
                             "shifts: the pipeline's null before the shared design)")
    args = parser.parse_args()
    n_vox, n_sets = (1000, 1) if args.quick else (args.voxels, args.shift_sets)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, runs = speech_layers(Path(tmp))
    rng = np.random.default_rng(1)
    n = alignment.n_volumes(RUN_S, T_R)
    start = simulate.run_start_response(n, T_R)
    amplitude = 1.0 + 0.5 * rng.standard_normal(n_vox)
    bold = [simulate.slow_noise(rng, n, n_vox) + start[:, None] * amplitude
            + np.linspace(-1, 1, n)[:, None] * rng.standard_normal(n_vox) for _ in range(N_RUNS)]
    print(f"{model}, {N_RUNS} runs x {n} volumes (TR {T_R:g} s), {n_vox} noise voxels, "
          f"{n_sets} shift set(s) x 50 permutations")
    print(f"{'':8s} layer  p<0.05  p<0.01  p<0.001  mean r")
    for name, center, exclude, design in (
            ("before", False, 0.0, "shared"), ("after", True, args.exclude_onset_s, "shared"),
            ("after-iid", True, args.exclude_onset_s, "independent")):
        if design == "independent" and not args.independent:
            continue
        first = alignment.first_volume(0.0, T_R, exclude)
        ys = [clean_signals(b[first:], T_R).astype(np.float32) for b in bold]
        for layer in sorted(runs[0]):
            xs = [alignment.align(*run[layer], T_R, RUN_S,
                                  alignment.AlignOptions(center=center))[first:]
                  for run in runs]
            fits = [encoding.fit_layer(xs, ys, np.logspace(-1, 7, 9),
                                       encoding.FitOptions(n_permutations=50, seed=seed,
                                                           null_design=design))
                    for seed in range(n_sets)]
            p = np.stack([f.p for f in fits])
            r = np.mean([f.r.mean() for f in fits])
            print(f"{name:8s} {layer:5d}  {(p < .05).mean():6.3f}  {(p < .01).mean():6.4f}  "
                  f"{(p < .001).mean():7.4f}  {r:+.4f}", flush=True)
    print(f"calibration: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
