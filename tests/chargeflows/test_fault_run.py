"""bench/chaos.py in its smoke mode: the fault run of issue 17's "Done when", small and fast,
so the harness cannot rot and the run's promise is checked on every `make test`.

The script starts everything itself (its own database chaos_<pid> on DATABASE_URL's server,
its own Redis database beside CELERY_BROKER_URL's, its own localstripe, cuttable proxies, two
real workers and a beat, every task published twice) and exits 0 only when every collection
settled within its bound with no level waiting out its lease, and the money invariants hold.
Its figures are read back from the JSON it writes.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The smoke bound is 200 s; setup (migrate, workers) and teardown come on top.
TIMEOUT = 600


def test_the_smoke_fault_run_settles_every_collection_and_keeps_the_ledger(tmp_path):
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, "bench/chaos.py", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.exists(), f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    figures = json.loads(out.read_text())

    # The faults really happened: every task went to the broker twice, a worker was killed,
    # and each cut reset live connections of its service.
    assert figures["logs"]["delivered"].get("2", 0) > 0, figures["logs"]
    faults = [fault["what"] for fault in figures["faults"]]
    assert len(faults) == 4 and "killed" in faults[0], faults
    assert [f.split()[0] for f in faults[1:]] == ["provider", "broker", "database"], faults

    money = figures["money"]
    assert money["doubled_issues"] == [] and money["doubled_owners"] == [], money
    assert money["ledger_equal"], money
    assert money["succeeded_intents"] == money["succeeded_attempts"], money
    assert money["succeeded_intents_sum"] == money["succeeded_attempts_sum"], money
    assert money["cases_inconsistent"] == [], money

    report = proc.stdout[-4000:]
    assert figures["settled"] == figures["collections"], report
    assert figures["lease_waits"] == 0, report
    assert proc.returncode == 0, report
