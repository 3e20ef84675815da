"""The hooks other benchmarks plug into (`SETUP_SECTIONS`, `EXTRA_SECTIONS`):
each runs once per configuration with the deployment at hand, its dict
lands in the result file, and one that raises is recorded and fails the
configuration without hiding the others' results."""
from __future__ import annotations

import json

from benchmarks import run as bench
from tests.aio import aio_test


@aio_test
async def test_sections_run_per_configuration_and_land_in_the_result(tmp_path):
    from twisted.internet import reactor

    seen = []

    def setup_probe(ctx):
        seen.append(("setup", ctx.name, ctx.config_path.exists(), "daemon_pid" in ctx.result))
        return {"accounts_added": 0}

    async def after(ctx):
        seen.append(("after", ctx.name, ctx.result["invariants_ok"]))
        return {"tps": 1.5, "url_scheme": ctx.deployment.database_url.split(":")[0]}

    def broken(ctx):
        raise RuntimeError("this section fails")
    broken.section_name = "broken_one"

    args = bench.parse_args(["--configs", "sqlite", "--accounts", "3", "--payments", "3", "--rates", "",
                             "--warmup", "0", "--keywords", "0", "--max-run-seconds", "0", "--timeout", "20",
                             "--results-dir", str(tmp_path)])
    result, ok = await bench.run_config("sqlite", args, reactor, sections=[after, broken],
                                        setup_sections=[setup_probe])
    assert "error" not in result, result.get("error")
    assert seen == [("setup", "sqlite", True, False), ("after", "sqlite", True)]
    assert result["setup_sections"] == {"setup_probe": {"accounts_added": 0}}
    assert result["sections"]["after"] == {"tps": 1.5, "url_scheme": "sqlite+aiosqlite"}
    assert result["sections"]["broken_one"]["error"] == "RuntimeError: this section fails"
    assert ok is False and result["invariants_ok"] is True     # the ledger was fine; a section was not
    (path,) = tmp_path.glob("*-sqlite.json")
    assert json.loads(path.read_text(encoding="utf-8"))["sections"]["after"]["tps"] == 1.5
