"""`host bench` runs both drivers in the MicroPython unix port on the same frames. Speed figures are
printed, not asserted; what is asserted is that the run compares like with like."""

import json
import subprocess
import sys

import pytest

from host import bench
from host.errors import HostError


def test_bench_json_compares_both_drivers_on_the_same_frames(shared_mlx):
    proc = subprocess.run([sys.executable, "-m", "host", "bench", "--json", "--repeats", "2",
                           "--input", str(shared_mlx / "melexis_example.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["interpreter"] == "micropython"
    assert [row["subpage"] for row in result["subpages"]] == [0, 1]
    for row in result["subpages"]:
        # the same frames through both drivers agree: the timing compares equal work
        assert row["max_abs_diff_c"] < 0.005
        assert row["ours_us"] > 0 and row["adafruit_us"] > 0 and row["pipeline_us"] >= row["ours_us"] * 0.5
        assert row["adafruit_alloc_bytes"] > row["ours_alloc_bytes"]
    assert 0 < result["resident_bytes"]


def test_bench_default_runs_on_an_emulated_unit():
    job = bench.emulator_job(seed=3)
    assert len(job["eeprom"]) == 832
    assert sorted(frame[833] for frame in job["frames"]) == [0, 1]
    assert all(len(frame) == 834 for frame in job["frames"])


@pytest.mark.parametrize("content, needle", [
    ("not json", "cannot read"),
    (json.dumps({"eeprom": [0] * 10, "frames": [[0] * 834]}), "832 words"),
    (json.dumps({"eeprom": [0] * 832, "frames": [[0] * 800]}), "834 words"),
])
def test_bench_input_errors_say_what_is_wrong(tmp_path, content, needle):
    path = tmp_path / "dump.json"
    path.write_text(content)
    with pytest.raises(HostError, match=needle):
        bench.file_job(path)
