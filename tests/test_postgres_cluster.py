"""The throwaway-cluster helper of the tests and the benchmark (tests/support/postgres.py)."""

from __future__ import annotations

from tests.support.postgres import _version_key, running_cluster


def test_newest_server_binaries_are_chosen_by_version_number_not_by_text():
    paths = ["/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin",
             "/usr/lib/postgresql/10/bin"]
    assert sorted(paths, key=_version_key, reverse=True)[0] == "/usr/lib/postgresql/15/bin"
    assert sorted(paths, key=_version_key)[0] == "/usr/lib/postgresql/9.6/bin"


def test_a_cluster_runs_with_its_own_settings_and_keeps_its_data_across_a_restart():
    with running_cluster(settings={"work_mem": "7MB", "fsync": "off"}) as cluster:
        assert cluster.psql("SHOW work_mem").strip() == "7MB"
        url = cluster.create_database("kept")
        assert url.endswith("/kept")
        cluster.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (42)", "kept")
        cluster.stop()
        cluster.start()
        assert cluster.psql("SELECT v FROM t", "kept").strip() == "42"
        assert cluster.postmaster_pid() > 0
    assert not cluster.root.exists()
