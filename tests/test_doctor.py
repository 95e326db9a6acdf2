from __future__ import annotations

import subprocess
import sys

from course_lib import doctor


def test_doctor_cli_prints_only_ok_lines():
    r = subprocess.run([sys.executable, "-m", "course_lib", "doctor"], capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines[-1].startswith("doctor:") and ", 0 FAIL" in lines[-1]
    # WARN lines (e.g. no OS isolation for the grader on this machine) are advice, not failures
    assert all(ln.startswith(("OK  ", "WARN")) for ln in lines[:-1]), [
        ln for ln in lines if ln.startswith("FAIL")
    ]
    assert any("torch" in ln for ln in lines) and any("sha256 verified" in ln for ln in lines)


def test_doctor_reports_a_wrong_version(monkeypatch):
    monkeypatch.setattr(doctor, "pinned_versions", lambda *a: {"torch": "0.0.1"})
    checks = doctor.check_versions()
    assert len(checks) == 1 and not checks[0].ok and "0.0.1" in checks[0].detail


def test_doctor_memory_threshold():
    assert not doctor.check_memory(min_gb=10_000).ok
    assert doctor.check_memory(min_gb=0.001).ok


def test_doctor_main_counts_failures(monkeypatch):
    monkeypatch.setattr(
        doctor, "run_checks", lambda: [doctor.Check(True, "a", "x"), doctor.Check(False, "b", "y")]
    )
    lines = []
    assert doctor.main(lines.append) == 1
    assert lines[1].startswith("FAIL  b: y")
