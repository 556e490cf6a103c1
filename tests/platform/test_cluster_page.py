"""The cluster page: members and their health, alarms, membership changes, backups and restore.

Read against the session's real 3-member core; the backup-destroy-restore
test runs its own 1-member core, since destroying the shared one is not an
option: a flag is created through the REST API, the cluster page takes a
backup, the member and its data dir are destroyed, ``flagstaff snapshot
restore`` (the documented command) writes a new data dir from the file, and
the restarted member serves the same flag at the same revision.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from platform_support import boolean_flag
from rest_framework.test import APIClient

from flags.core import core, reset_core
from flags.tasks import backup_core
from tests.cluster.harness import ROOT, Cluster, ProcessRegistry, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def admin(db: Any, core_cluster: Cluster) -> Client:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", password="root-password")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff(db: Any, core_cluster: Cluster) -> Client:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("operator", password="x", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def backup_dir(tmp_path: Path) -> Iterator[Path]:
    saved = settings.FLAGSTAFF_BACKUP_DIR
    settings.FLAGSTAFF_BACKUP_DIR = tmp_path / "backups"
    yield settings.FLAGSTAFF_BACKUP_DIR
    settings.FLAGSTAFF_BACKUP_DIR = saved


def test_the_cluster_page_shows_members_leader_term_and_health(admin: Client,
                                                               core_cluster: Cluster) -> None:
    page = admin.get("/cluster/").content.decode()
    leader = core_cluster.wait_for_leader()
    status = leader.require_status()
    for node in core_cluster.nodes:
        assert f"<td>{node.name} <code>" in page
    assert page.count('data-healthy="true"') == 3
    assert f'<strong id="leader">{leader.name}</strong>' in page
    assert f'<strong id="term">{status["term"]}</strong>' in page
    assert "No alarms." in page
    assert "leader</td>" in page and page.count("follower</td>") == 2


def test_a_member_that_is_down_shows_as_unhealthy(admin: Client, core_cluster: Cluster) -> None:
    leader = core_cluster.wait_for_leader()
    down = next(n for n in core_cluster.nodes if n is not leader)
    down.kill9()
    try:
        page = admin.get("/cluster/").content.decode()
        row = page.split(f"<td>{down.name} <code>", 1)[0].rsplit("<tr", 1)[1]
        assert 'data-healthy="false"' in row
        assert page.count('data-healthy="true"') == 2
        assert f'<strong id="leader">{leader.name}</strong>' in page
    finally:
        down.proc = None
        down.start(core_cluster.initial_cluster)
        core_cluster.wait_for_leader(timeout=30)
    wait_until(lambda: admin.get("/cluster/").content.decode().count('data-healthy="true"') == 3,
               30, "the restarted member to be healthy again")


def test_only_staff_see_it_and_only_superusers_change_it(staff: Client, user: Any,
                                                         core_cluster: Cluster,
                                                         backup_dir: Path) -> None:
    page = staff.get("/cluster/")
    assert page.status_code == 200 and "Take a backup now" not in page.content.decode()
    assert staff.post("/cluster/backups/").status_code == 403
    assert staff.post("/cluster/members/", {"peer_urls": "http://127.0.0.1:1",
                                            "confirm": "yes"}).status_code == 403
    assert not backup_dir.exists() or not list(backup_dir.iterdir())
    nobody = Client()
    nobody.force_login(user)  # alice: neither staff nor superuser
    assert nobody.get("/cluster/").status_code == 302


def _member_names(cluster: Cluster) -> list[str]:
    async def names() -> list[str]:
        members = await core().client().member_list()
        return sorted(m.peerURLs[0] for m in members.members)
    return core().run(names())


def test_adding_and_removing_a_member_needs_the_confirmation(admin: Client,
                                                             core_cluster: Cluster) -> None:
    before = _member_names(core_cluster)
    url = "http://127.0.0.1:9"  # a learner that never starts: no effect on the quorum
    assert admin.post("/cluster/members/", {"peer_urls": url, "learner": "yes"}).status_code == 302
    assert _member_names(core_cluster) == before
    response = admin.post("/cluster/members/", {"peer_urls": url, "learner": "yes", "confirm": "yes"},
                          follow=True)
    assert "Added member" in response.content.decode()
    assert _member_names(core_cluster) == sorted([*before, url])
    page = admin.get("/cluster/").content.decode()
    assert "learner</td>" in page and "(unstarted)" in page

    async def learner_id() -> str:
        members = await core().client().member_list()
        return next(f"{m.ID:016x}" for m in members.members if url in m.peerURLs)

    member = core().run(learner_id())
    assert admin.post(f"/cluster/members/{member}/remove/").status_code == 302
    assert _member_names(core_cluster) == sorted([*before, url])
    admin.post(f"/cluster/members/{member}/remove/", {"confirm": "yes"})
    assert _member_names(core_cluster) == before
    for action, detail in (("cluster.member_add", url), ("cluster.member_remove", member)):
        records = admin.get(f"/api/v1/audit/?action={action}").json()["results"]
        assert any(r["actor"] == "user:root" and detail in json.dumps(r) for r in records), records


def test_scheduled_backups_are_written_and_pruned(core_cluster: Cluster, backup_dir: Path) -> None:
    saved = settings.FLAGSTAFF_BACKUP_KEEP
    settings.FLAGSTAFF_BACKUP_KEEP = 2
    try:
        taken = [backup_core() for _ in range(3)]
    finally:
        settings.FLAGSTAFF_BACKUP_KEEP = saved
    files = sorted(p.name for p in backup_dir.iterdir())
    assert files == sorted(Path(t["path"]).name for t in taken[1:])
    assert taken[2]["pruned"] == [taken[0]["path"]]
    assert all(t["revision"] > 0 for t in taken)


def test_back_up_destroy_restore_and_the_data_is_intact(
    admin: Client, api: APIClient, backup_dir: Path, tmp_path: Path, new_key: Any,
) -> None:
    registry = ProcessRegistry()
    lone = Cluster(tmp_path / "lone", registry, 1, [])
    saved = settings.FLAGSTAFF_ENDPOINTS
    try:
        (tmp_path / "lone").mkdir()
        lone.start()
        lone.wait_for_leader(timeout=30)
        settings.FLAGSTAFF_ENDPOINTS = [lone.nodes[0].endpoint]
        reset_core()
        project = new_key("p")
        assert api.post("/api/v1/projects/", {"key": project, "name": "Restore me",
                                              "environments": [{"key": "prod"}]},
                        format="json").status_code == 201
        assert api.post(f"/api/v1/projects/{project}/flags/",
                        {"document": boolean_flag("survivor", on=True)}, format="json").status_code == 201
        flag_url = f"/api/v1/projects/{project}/environments/prod/flags/survivor/"
        before = api.get(flag_url).json()

        response = admin.post("/cluster/backups/", follow=True)
        assert "Backup flagstaff-" in response.content.decode()
        [backup] = list(backup_dir.glob("flagstaff-*.db"))
        assert backup.name.endswith(f"-r{before['revision']}.db")
        assert f"<code>{backup.name}</code>" in admin.get("/cluster/").content.decode()

        node = lone.nodes[0]
        node.kill9()
        shutil.rmtree(node.data_dir)
        reset_core()
        restore = subprocess.run(
            [sys.executable, "-m", "consensus.cli", "snapshot", "restore", str(backup),
             "--name", node.name, "--initial-cluster", lone.initial_cluster,
             "--initial-cluster-token", "restored", "--initial-advertise-peer-urls", node.peer_url,
             "--data-dir", str(node.data_dir)],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert restore.returncode == 0, restore.stderr
        node.proc = None
        node.start(lone.initial_cluster)
        lone.wait_for_leader(timeout=30)
        after = wait_until(lambda: api.get(flag_url).json() if api.get(flag_url).status_code == 200
                           else None, 30, "the restored flag to be served")
        assert after == before
        assert [p["key"] for p in api.get("/api/v1/projects/").json()] == [project]
    finally:
        settings.FLAGSTAFF_ENDPOINTS = saved
        reset_core()
        registry.kill_all()
