"""The demo's last line keeps its documented, comparable form."""

import re

import pandas as pd

from brainalign.summary import main, recovery_line


def _recovery(tmp_path, exact=4, within1=5, fpr=0.0125):
    path = tmp_path / "demo_recovery.tsv"
    pd.DataFrame({"roi": ["HG", "PT"], "layer": [0, 3], "best_layer": [0, 4],
                  "exact_n": exact, "within1_n": within1, "n": 5, "noise_fpr": fpr,
                  "signal_power": 0.25}).to_csv(path, sep="\t", index=False)
    return path


def test_recovery_line_form(tmp_path):
    line = recovery_line(str(_recovery(tmp_path)), 421.4)
    assert line == "recovery: exact 4/5, within1 5/5, noise-fpr 0.0125, wall 421 s"
    assert re.fullmatch(r"recovery: exact \d+/\d+, within1 \d+/\d+, noise-fpr [0-9.]+, "
                        r"wall \d+ s", line)


def test_cli_prints_recovery_last(tmp_path, capsys):
    main([str(_recovery(tmp_path)), "--wall", "12"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("recovery: exact 4/5")
    assert "25.0%" in lines[0]
