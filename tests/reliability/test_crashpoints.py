"""The crash-point switch itself: armed names, hit counts, a real SIGKILL."""
import signal
import subprocess
import sys

import pytest

from telecom_pay import config, crashpoints


def test_spec_names_points_and_hit_counts():
    assert crashpoints.parse("after_ledger_commit") == {"after_ledger_commit": 1}
    assert crashpoints.parse("after_mo_recorded:2, after_0200_sent") == {"after_mo_recorded": 2,
                                                                         "after_0200_sent": 1}
    for bad in ("after_ledger_comit", "after_mo_recorded:0", "after_mo_recorded:x"):
        with pytest.raises(ValueError):
            crashpoints.parse(bad)


def test_an_unknown_point_in_config_refuses_to_start(monkeypatch):
    monkeypatch.delenv(crashpoints.ENV, raising=False)
    with pytest.raises(config.ConfigError):
        crashpoints.arm_from(config.load(None, {"debug.crash_at": "nowhere"}))
    assert crashpoints.armed is None


def test_the_nth_hit_kills_the_process_with_sigkill():
    script = ("import sys; from telecom_pay import crashpoints as c; c.arm('after_mo_recorded:2'); "
              "c.crash_point('after_ledger_commit'); c.crash_point('after_mo_recorded'); print('first', flush=True); "
              "c.crash_point('after_mo_recorded'); print('survived', flush=True)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["first"]
