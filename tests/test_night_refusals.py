"""What the night does when one input file is refused (issue 10, "Refusals and the night").

The other files load and the night scores on them; the refusal stays visible: the leaf task
`inbox_refusals` fails, so the DAG run ends failed however many retries happen, and the refused
file's rejects are in `load_rejects`. The DAG runs as in tests/test_dags.py (tests/dag_support.py):
`dag.test()` in a child process with its own AIRFLOW_HOME, the campaign database reached as `recsys_db`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dag_support import airflow_metadata, campaign_db, nightly_command, nightly_env, run_dag, shop_inbox  # noqa: F401

from recsys.config.settings import Settings, load_settings
from recsys.db import Connection, connect, fetch_all, fetch_value
from recsys.errors import RecsysError
from recsys.orchestration import pipeline

EVENT_HEADER = "event_id,user_id,session_id,timestamp,action,product_category,channel,amount"


def _backfill(path: Path, night: dt.date, retention_days: int, rows: int = 40) -> Path:
    """An events file whose rows are all older than the event retention window: refused."""
    old = dt.datetime.combine(night, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=retention_days + 10)
    lines = [f"old{i},{i + 1},s{i},{(old + dt.timedelta(minutes=i)).isoformat()},purchase,,,5.00" for i in range(rows)]
    path.write_text("\n".join([EVENT_HEADER, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_refused_file_fails_the_night_but_the_night_scores_on_the_others(
    airflow_metadata: str,  # noqa: F811
    campaign_db: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    night = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)
    shop, inbox = shop_inbox(tmp_path, night, users=300, seed=5)
    retention = load_settings(env={}).event_retention_days
    _backfill(inbox / "events_backfill.csv", night, retention)
    # the other tasks may retry; the refusal check never does
    env = nightly_env(tmp_path, campaign_db, inbox, retries=2)
    run = run_dag(
        nightly_command(tmp_path, airflow_metadata, night, {"total_timesteps": 2048, "shards": 1, "mode": "auto"}), env
    )

    states = {t["task_id"]: t["state"] for t in run["tasks"]}
    assert run["state"] == "failed", run
    assert states.pop("inbox_refusals") == "failed"
    assert set(states.values()) == {"success"}, states  # extract, score, publish and report went on

    with connect(campaign_db) as conn:
        # the good files are in, the night scored and published on them
        log = {r["file_name"]: r for r in fetch_all(conn, "select * from recsys.load_log")}
        good = sorted(f.name for f in shop.glob("*.csv"))
        assert all(log[name]["status"] == "loaded" for name in good), log
        events = fetch_value(conn, "select count(*) from recsys.behavior_events")
        assert events > 0 and events == sum(log[n]["rows_loaded"] for n in good if n.startswith("events"))
        assert fetch_value(conn, "select count(*) from recsys.behavior_events where event_id like 'old%%'") == 0
        published = fetch_all(conn, "select state, counts from recsys.campaign_runs where campaign_date = %s", (night,))
        assert [r["state"] for r in published] == ["published"]
        offers = fetch_value(conn, "select count(*) from recsys.campaign_offers where campaign_date = %s", (night,))
        assert offers > 0 and offers == published[0]["counts"]["offers"]
        # the refused file: recorded, its rejects kept for the user to read
        refused = log["events_backfill.csv"]
        assert (refused["status"], refused["rows_read"], refused["rows_loaded"]) == ("refused", 40, 0)
        assert "raise RECSYS_EVENT_RETENTION_DAYS to load this backfill" in refused["message"]
        assert (
            fetch_value(conn, "select count(*) from recsys.load_rejects where load_id = %s", (refused["load_id"],))
            == 40
        )
        report = fetch_value(conn, "select report from recsys.campaign_runs where campaign_date = %s", (night,))
        assert [r["file"] for r in report["extract"]["refused"]] == ["events_backfill.csv"]
    assert (inbox / "refused" / "events_backfill.csv").exists()

    # a retry of the check (or of the whole night: the inbox is empty now) still fails
    settings = load_settings(
        env={}, database_url=campaign_db, data_dir=tmp_path / "data", inbox=inbox, inbox_settle_seconds=0
    )
    assert pipeline.extract(settings, night)["files"] == []
    with pytest.raises(RecsysError, match=r"1 input file\(s\) refused for the night of .*events_backfill.csv \(load"):
        pipeline.check_refusals(settings, night)
    # the corrected file dropped again under the same name and the night re-run: made good
    fixed = inbox / "events_backfill.csv"
    fixed.write_text(EVENT_HEADER + f"\nnew1,1,s1,{night - dt.timedelta(days=1)}T10:00:00Z,view,,,\n", encoding="utf-8")
    assert pipeline.extract(settings, night)["refused"] == []
    assert pipeline.check_refusals(settings, night)["refused"] == 0


def test_refused_feedback_fails_the_check_and_does_not_stop_the_task(
    cdb: Connection, settings: Settings, tmp_path: Path
) -> None:
    night = dt.date(2026, 11, 25)
    settings.inbox.mkdir(parents=True)
    (settings.inbox / "feedback_1.csv").write_text(
        "offer_id,event,event_at\n999001,opened,2026-11-24T10:00:00Z\n999002,opened,2026-11-24T10:00:00Z\n",
        encoding="utf-8",
    )
    result = pipeline.ingest_feedback(settings, night)
    assert [r["file"] for r in result["refused"]] == ["feedback_1.csv"]
    assert "all 2 rows rejected; 2 of them with offer_id: unknown offer_id" in result["refused"][0]["message"]
    assert fetch_value(cdb, "select count(*) from recsys.load_rejects") == 2
    with pytest.raises(RecsysError, match=r"feedback_1\.csv"):
        pipeline.check_refusals(settings, night)
    # another night is not failed by it
    assert pipeline.check_refusals(settings, night + dt.timedelta(days=1))["refused"] == 0


def _unreadable(path: Path) -> Path:
    """An inbox file that no process can read, root included: a link to this process's own memory,
    whose first page is never mapped (reading it fails with EIO), as a lost disk or a share gone
    away fails. chmod 000 would not do: the tests may run as root, who reads any file."""
    mem = Path("/proc/self/mem")
    if not mem.exists():
        pytest.skip("needs Linux /proc to make a file that root cannot read")
    path.symlink_to(mem)
    return path


def test_an_unreadable_inbox_file_fails_the_check_and_a_readable_redrop_loads(
    cdb: Connection, settings: Settings
) -> None:
    night = dt.date(2026, 11, 26)
    settings.inbox.mkdir(parents=True)
    _unreadable(settings.inbox / "events_lost.csv")
    result = pipeline.extract(settings, night)
    assert [r["file"] for r in result["refused"]] == ["events_lost.csv"]
    assert (
        "events_lost.csv: refused, nothing loaded: cannot read the file: Input/output error"
        in (result["refused"][0]["message"])
    )
    assert (settings.inbox / "refused" / "events_lost.csv").is_symlink()
    row = fetch_all(cdb, "select status, file_sha256, message from recsys.load_log")[0]
    assert (row["status"], row["message"]) == ("refused", "events_lost.csv: cannot read the file: Input/output error")
    assert len(row["file_sha256"]) != 64  # a placeholder no file's checksum can equal
    with pytest.raises(RecsysError, match=r"1 input file\(s\) refused for the night of .*events_lost\.csv \(load"):
        pipeline.check_refusals(settings, night)
    # the file dropped again, readable this time: it loads, and the night is made good
    (settings.inbox / "events_lost.csv").write_text(
        EVENT_HEADER + f"\nlost1,1,s1,{night - dt.timedelta(days=1)}T10:00:00Z,view,,,\n", encoding="utf-8"
    )
    assert pipeline.extract(settings, night)["refused"] == []
    assert fetch_value(cdb, "select count(*) from recsys.behavior_events where event_id = 'lost1'") == 1
    assert pipeline.check_refusals(settings, night)["refused"] == 0
