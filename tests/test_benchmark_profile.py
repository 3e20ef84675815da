"""The profile summary's breakdown by area (what `--profile` puts in the
results JSON): each sample goes to the innermost frame that names an area."""
from benchmarks.profile_summary import breakdown, summarise


def test_samples_go_to_the_innermost_area(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text(
        "thread (1): MainThread;run (twisted/internet/asyncioreactor.py:257);"
        "_answer (channels/smpp/app.py:200);handle (telecom_pay/commands/conversation.py:90) 3\n"
        "thread (1): MainThread;run (twisted/internet/asyncioreactor.py:257);"
        "execute (psycopg/cursor.py:10);wait (psycopg/waiting.py:5) 1\n"
        "thread (1): MainThread;mystery (elsewhere.py:1) 1\n"
        "not a sample line\n")
    assert breakdown(path) == {"conversation": 60.0, "psycopg": 20.0, "other": 20.0}
    assert "by area" in summarise(path) and "5 samples" in summarise(path)
