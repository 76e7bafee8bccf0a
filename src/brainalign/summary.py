"""Print the demo's one-line planted-truth recovery summary.

Usage: python -m brainalign.summary results/group/demo_recovery.tsv --wall SECONDS
"""

from __future__ import annotations

import argparse

import pandas as pd


def recovery_line(recovery_tsv: str, wall_s: float) -> str:
    """``recovery: exact E/N, within1 W/N, noise-fpr F, wall T s``."""
    rec = pd.read_csv(recovery_tsv, sep="\t").iloc[0]
    return (f"recovery: exact {rec['exact_n']}/{rec['n']}, within1 {rec['within1_n']}/{rec['n']}, "
            f"noise-fpr {rec['noise_fpr']:.4f}, wall {wall_s:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("recovery_tsv")
    parser.add_argument("--wall", type=float, required=True, help="wall time of the run (s)")
    args = parser.parse_args(argv)
    rec = pd.read_csv(args.recovery_tsv, sep="\t").iloc[0]
    if "signal_power" in rec:
        print(f"planted voxels called significant: {rec['signal_power']:.1%} "
              "(Simes over layers, FDR q=0.05 over voxels)")
    print(recovery_line(args.recovery_tsv, args.wall))


if __name__ == "__main__":
    main()
