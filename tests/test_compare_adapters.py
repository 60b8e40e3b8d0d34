"""scripts/compare_adapters.py: the paired counts and McNemar's exact test."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_adapters.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("compare_adapters", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_counts_and_p_value(script):
    a = [True] * 59 + [False] * 82 + [True] * 100 + [False] * 9
    b = [False] * 59 + [True] * 82 + [True] * 100 + [False] * 9
    line = script.paired_line("set", a, b)
    assert "n=250" in line and "A 0.636  B 0.728" in line
    assert "only A right 59  only B right 82  McNemar p=0.064" in line


def test_no_discordant_rows_is_p_one(script):
    assert script.paired_line("same", [True, False], [True, False]).endswith("McNemar p=1.000")


def test_data_b_must_hold_the_same_messages(tmp_path):
    import subprocess
    import sys

    from shoprouter.rows import Row, write_rows

    write_rows([Row("where is my order", "order"), Row("hi", "clarify")], tmp_path / "a.jsonl")
    write_rows([Row("where is my order", "shipping"), Row("hello", "clarify")], tmp_path / "b.jsonl")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--a", str(tmp_path), "--b", str(tmp_path),
                           "--data", str(tmp_path / "a.jsonl"), "--data-b", str(tmp_path / "b.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "does not hold the same messages" in proc.stderr
