"""An annotator's loop at the keyboard (issue #16): N / number / Enter labels the queued cases in rank order.

Outside queue mode and in queue mode, twenty labels land on twenty distinct queued
cases, highest rank first; after each commit the counters, the queue panel and the
worklist show the change; no dialog opens. The queue is the workspace's: a label
written by another process takes its case out of the window's queue too.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialog

from app.main_window import MainWindow
from app.settings import Settings
from core.types import QueueItem

N_IMAGES, N_QUEUED, N_LABELS = 40, 30, 20


@pytest.fixture
def queued_workspace(tmp_path):
    """40 unlabelled 32-px images, a tiny untrained model, and 30 of them queued in a shuffled rank order."""
    from core.importer import import_paths
    from core.models.versions import create_version
    from core.workspace import Workspace

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / f"case_{i:03d}.png")
    ws = Workspace.open(tmp_path / "ws.sqlite")
    import_paths(ws, [folder])
    create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
    ws.set_setting("retrain_after_labels", 100)  # the automatic retrain is not what this test is about
    ids = [r.id for r in ws.images()]
    picked = random.Random(1).sample(ids, N_QUEUED)  # rank order unrelated to the worklist order
    ws.replace_queue([QueueItem(image_id=i, score=1.0 - k / 100, rank=k + 1, strategy="default",
                                why={"reason": "uncertain / costly", "entropy": 0.9 - k / 100})
                      for k, i in enumerate(picked)])
    yield ws, picked
    ws.close()


@pytest.fixture
def window(qtbot, queued_workspace, tmp_path):
    ws, picked = queued_workspace
    settings = Settings(path=str(tmp_path / "settings.ini"))
    win = MainWindow(ws, settings, reader="annotator one")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: len(win.rows) == N_IMAGES and len(win.queue.items) == N_QUEUED, timeout=30000)
    yield win, ws, picked
    win.session.shutdown(5)


def _open_dialogs() -> list:
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible()]


@pytest.mark.parametrize("queue_mode", [False, True], ids=["worklist-mode", "queue-mode"])
def test_n_number_enter_labels_distinct_queued_cases_in_rank_order(qtbot, window, queue_mode):
    win, ws, picked = window
    assert "0 labelled · 30 queued · 0 disagreement · 0 labels since the last training (retrain at 100)" \
        == win.banner.counters.text()
    if queue_mode:
        win.toggle_queue_mode()  # opens the top case
    for k in range(N_LABELS):
        if not queue_mode:
            qtbot.keyClick(win, Qt.Key_N)
        qtbot.waitUntil(lambda: win.labels.image_id == picked[k], timeout=20000)
        # while the case is open, the reading panel says why it was queued and where it stands
        assert win.banner.position.text() == f"Queued #{k + 1} · 1 of {N_QUEUED - k} in the queue"
        assert win.banner.why.text().startswith("Uncertain or costly to miss.")
        qtbot.keyClick(win, Qt.Key_1 if k % 2 else Qt.Key_2)
        qtbot.keyClick(win, Qt.Key_Return)
        # after the commit: counters, queue panel, worklist status and the workspace all agree
        qtbot.waitUntil(lambda: win.banner.counters.text().startswith(f"{k + 1} labelled · {N_QUEUED - k - 1} queued"),
                        timeout=20000)
        assert win.labels.state.text().startswith("saved") or win.labels.image_id != picked[k]
        assert len(win.queue.items) == win.queue.list.count() == N_QUEUED - k - 1
        assert picked[k] not in [i.image_id for i in win.queue.items]
        assert win.rows[picked[k]].status == "labelled"
        assert f"{k + 1} label{'s' if k else ''} since the last training (retrain at 100)" in win.banner.counters.text()
        assert f"{k + 1} labelled" in win.worklist.summary.text()
        assert [i.image_id for i in ws.queue()] == picked[k + 1:]  # what `loupe queue next` reads
        assert not _open_dialogs()
    labels = ws.current_labels()
    assert [i for i in picked if i in labels] == picked[:N_LABELS]
    assert len(labels) == N_LABELS and {lab.annotator for lab in labels.values()} == {"annotator one"}
    if queue_mode:  # Enter of the last label already opened the next case in rank order
        qtbot.waitUntil(lambda: win.labels.image_id == picked[N_LABELS], timeout=20000)


def test_keys_typed_faster_than_the_commits_still_label_distinct_cases(qtbot, window):
    """N, number, Enter sent back to back (no waiting for saves): a case being saved is never opened again."""
    win, ws, picked = window
    for k in range(10):
        qtbot.keyClick(win, Qt.Key_N)
        qtbot.keyClick(win, Qt.Key_2)
        qtbot.keyClick(win, Qt.Key_Return)
    qtbot.waitUntil(lambda: len(ws.current_labels()) == 10 and not win.session.pending, timeout=30000)
    labels = ws.current_labels()
    assert sorted(labels, key=picked.index) == picked[:10]
    qtbot.waitUntil(lambda: len(win.queue.items) == N_QUEUED - 10, timeout=20000)
    assert not _open_dialogs()


def test_a_label_written_by_another_process_takes_the_case_out_of_the_queue(qtbot, window):
    from core.workspace import Workspace

    win, ws, picked = window
    with Workspace.open(ws.path) as other:  # e.g. `loupe label` in a terminal
        other.add_label(picked[0], ["neg"], "cli")
    win.session._poll_queue()
    qtbot.waitUntil(lambda: picked[0] not in [i.image_id for i in win.queue.items], timeout=20000)
    qtbot.waitUntil(lambda: win.banner.counters.text().startswith("1 labelled · 29 queued"), timeout=20000)
    qtbot.keyClick(win, Qt.Key_N)
    qtbot.waitUntil(lambda: win.labels.image_id == picked[1], timeout=20000)


def test_the_queue_tops_itself_up_when_it_runs_low(qtbot, window, monkeypatch):
    from app import jobs
    from app.session import QUEUE_LOW_WATER

    win, ws, picked = window
    rebuilt = []

    def fake_refresh(workspace, strategy="default", n=50, progress=None, cancel=None):
        rebuilt.append((strategy, n))  # stands in for the model: queue every unlabelled case still out
        labelled = set(workspace.current_labels())
        free = [r.id for r in workspace.images() if r.id not in labelled]
        items = [QueueItem(image_id=i, score=0.5, rank=k + 1, strategy=strategy, why={"reason": "refill"})
                 for k, i in enumerate(free[:n])]
        workspace.replace_queue(items)
        return items

    monkeypatch.setattr(jobs, "refresh_queue", fake_refresh)
    ws.replace_queue([QueueItem(image_id=i, score=0.5, rank=k + 1, strategy="default", why={})
                      for k, i in enumerate(picked[:QUEUE_LOW_WATER + 1])])
    win.reload()
    qtbot.waitUntil(lambda: len(win.queue.items) == QUEUE_LOW_WATER + 1, timeout=20000)
    qtbot.keyClick(win, Qt.Key_N)
    qtbot.waitUntil(lambda: win.labels.image_id == picked[0], timeout=20000)
    qtbot.keyClick(win, Qt.Key_1)
    qtbot.keyClick(win, Qt.Key_Return)
    qtbot.waitUntil(lambda: len(win.queue.items) == N_IMAGES - 1, timeout=30000)
    assert rebuilt == [("default", 50)]


def test_the_reader_comes_from_the_environment_without_a_dialog(qtbot, queued_workspace, tmp_path, monkeypatch):
    ws, _ = queued_workspace
    monkeypatch.setenv("LOUPE_READER", "dr env")
    win = MainWindow(ws, Settings(path=str(tmp_path / "s.ini")))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: len(win.rows) == N_IMAGES, timeout=30000)
    qtbot.waitUntil(lambda: win.device.text() != "device: …", timeout=60000)
    assert win.session.reader.name == "dr env" and "dr env" in win.reader_label.text()
    assert not _open_dialogs()
    win.session.shutdown(5)


def test_unexpected_errors_reach_the_window_and_the_log(qtbot, window, caplog):
    import sys

    win, _, _ = window
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        info = sys.exc_info()
    with qtbot.waitSignal(win.session.error, timeout=5000) as sig:
        win.session.report_unexpected(*info, where="a test")
    assert "RuntimeError: boom" in sig.args[0]
    assert "RuntimeError: boom" in win.notice.text()
    assert any("Traceback" in r.getMessage() for r in caplog.records)


def _fake_top_up(calls: list):
    """A queue rebuild that stands in for the model: every unlabelled case, in a new (reversed) order."""
    def refresh(workspace, strategy="default", n=50, progress=None, cancel=None):
        labelled = set(workspace.current_labels())
        free = [r.id for r in workspace.images() if r.id not in labelled][::-1]
        items = [QueueItem(image_id=i, score=0.5, rank=k + 1, strategy=strategy, why={"reason": "refill"})
                 for k, i in enumerate(free[:n])]
        workspace.replace_queue(items)
        # recorded once the new order is in the workspace: a test waiting on ``calls`` and then comparing the
        # window's queue with the workspace's must not see the old order on both sides and go on early
        calls.append((strategy, n))
        return items
    return refresh


def test_a_reload_or_a_top_up_in_the_middle_of_the_loop_loses_no_key(qtbot, window, monkeypatch):
    """N / number / Enter while the worklist is re-read and the queue rebuilt under the keys (issue #16).

    Reloads land at every point of the loop: between N and the number key, between the number key and
    Enter, right after Enter (then the save returns before N), and while a case is still opening; a queue
    top-up re-ranks every case mid-way.
    Every number key chooses a finding on the case on screen, every Enter commits it, every label lands on
    a distinct case that was queued when N opened it, and no case the reader did not ask for is opened.
    """
    from app import jobs

    win, ws, picked = window
    calls = []
    monkeypatch.setattr(jobs, "refresh_queue", _fake_top_up(calls))
    win.worklist.step(0)
    qtbot.waitUntil(lambda: win.labels.image_id is not None, timeout=20000)
    moves = []  # every case the window moved to from here on, with the top of the queue at that moment

    def moved(image_id: str) -> None:
        if not moves or moves[-1][0] != image_id:  # a reload selecting the same case again is no move
            moves.append((image_id, win.session.next_queued()))

    win.worklist.image_selected.connect(moved)
    labelled = []

    def reload_now():
        with qtbot.waitSignal(win.worklist_loaded, timeout=20000):
            win.reload()

    for k in range(N_LABELS):
        if k == 8:  # the queue rebuilt (a top-up): every waiting case gets a new rank
            win.session.refresh_queue()
            qtbot.waitUntil(lambda: bool(calls) and [i.image_id for i in win.session.queue]
                            == [i.image_id for i in ws.queue()], timeout=20000)
        if k % 4 == 3:
            win.reload()  # a reload in flight while N opens the case
        waiting = [i.image_id for i in ws.queue() if i.image_id not in labelled]  # (a commit may be in flight)
        qtbot.keyClick(win, Qt.Key_N)
        image = win.labels.image_id
        assert image not in labelled, f"N reopened a case labelled {len(labelled) - labelled.index(image)} label(s) ago"
        assert image == waiting[0], (f"N opened rank {waiting.index(image) + 1 if image in waiting else None} of the "
                                     f"workspace's queue, the window's queue being "
                                     f"{[i.image_id for i in win.session.waiting()][:3]} (label {k})")
        if k % 4 == 0:
            reload_now()  # lands between N and the number key
        qtbot.keyClick(win, Qt.Key_1 if k % 2 else Qt.Key_2)
        assert win.labels.chosen() == (["neg"] if k % 2 else ["pos"]), "the number key was lost"
        if k % 4 == 1:
            reload_now()  # lands between the number key and Enter: the choice stays
            assert win.labels.image_id == image and win.labels.chosen() == (["neg"] if k % 2 else ["pos"])
        qtbot.keyClick(win, Qt.Key_Return)
        assert image in win.session.pending or win.workspace.current_label(image) is not None, "Enter was lost"
        labelled.append(image)
        if k % 4 == 2:
            win.reload()  # right after Enter, with the commit in flight
            qtbot.waitUntil(lambda: not win.session.pending, timeout=20000)  # and the save back before N
    qtbot.waitUntil(lambda: not win.session.pending and len(ws.current_labels()) == N_LABELS, timeout=30000)
    labels = ws.current_labels()
    assert set(labels) == set(labelled) and len(set(labelled)) == N_LABELS
    assert all(labels[i].classes == (("neg",) if k % 2 else ("pos",)) for k, i in enumerate(labelled))
    assert calls, "the top-up ran"
    assert labelled[:8] == picked[:8]  # rank order before the top-up
    # the window only ever moved to the top queued case: no other case flashed by between Enter and N
    assert len(moves) >= N_LABELS and all(image_id == top for image_id, top in moves)


def test_enter_on_a_case_opened_with_n_moves_on_in_the_queue_whatever_the_save_speed(qtbot, window):
    """Outside queue mode, Enter on a case N opened opens the next queued case at once (not the next worklist
    row once the save returns), so Enter then N lead to the same case whether or not the save came back first."""
    win, ws, picked = window
    qtbot.keyClick(win, Qt.Key_N)
    assert win.labels.image_id == picked[0]
    qtbot.keyClick(win, Qt.Key_2)
    qtbot.keyClick(win, Qt.Key_Return)
    assert win.labels.image_id == picked[1]  # at once, while the first commit is still in flight
    qtbot.waitUntil(lambda: not win.session.pending, timeout=20000)  # the save came back before N
    assert win.labels.image_id == picked[1]
    qtbot.keyClick(win, Qt.Key_1)
    qtbot.keyClick(win, Qt.Key_N)  # N on the case already open keeps it, and the choice being made
    assert win.labels.image_id == picked[1] and win.labels.chosen() == ["neg"]
    qtbot.keyClick(win, Qt.Key_Return)
    qtbot.waitUntil(lambda: len(ws.current_labels()) == 2 and not win.session.pending, timeout=20000)
    assert set(ws.current_labels()) == set(picked[:2])
    # a case reached by walking the worklist (not from the queue) still moves on down the worklist once saved
    other = next(i for i in win.worklist.visible_ids() if i not in picked)
    win.worklist.select(other)
    qtbot.keyClick(win, Qt.Key_1)
    qtbot.keyClick(win, Qt.Key_Return)
    qtbot.waitUntil(lambda: win.labels.image_id != other, timeout=20000)
    assert ws.current_label(other) is not None
    assert win.labels.image_id == win.worklist.visible_ids()[win.worklist.visible_ids().index(other) + 1]


def test_when_the_queue_runs_dry_the_next_case_opens_once_it_is_refilled(qtbot, window, monkeypatch):
    """Enter on the last queued case while the top-up is still running: nothing to open yet, no key lost;
    the top case opens by itself as soon as the refilled queue is read (the reader pressed Enter for it)."""
    import threading

    from app import jobs

    win, ws, picked = window
    calls, release = [], threading.Event()
    refill = _fake_top_up(calls)

    def slow_refill(*args, **kwargs):
        release.wait(20)  # the test says when the refill lands
        return refill(*args, **kwargs)

    monkeypatch.setattr(jobs, "refresh_queue", slow_refill)
    ws.replace_queue([QueueItem(image_id=i, score=0.5, rank=k + 1, strategy="default", why={})
                      for k, i in enumerate(picked[:2])])
    win.reload()
    qtbot.waitUntil(lambda: len(win.queue.items) == 2, timeout=20000)
    qtbot.keyClick(win, Qt.Key_N)
    assert win.labels.image_id == picked[0]
    qtbot.keyClick(win, Qt.Key_1)
    qtbot.keyClick(win, Qt.Key_Return)
    assert win.labels.image_id == picked[1]
    qtbot.waitUntil(lambda: not win.session.pending and win.session.background.busy("queue"), timeout=20000)
    qtbot.keyClick(win, Qt.Key_2)
    qtbot.keyClick(win, Qt.Key_Return)  # the last queued case: the top-up is still running
    qtbot.waitUntil(lambda: not win.session.pending, timeout=20000)
    assert win.labels.image_id == picked[1] and "refilling" in win.notice.text()
    release.set()
    qtbot.waitUntil(lambda: win.labels.image_id not in (picked[0], picked[1]), timeout=30000)
    top = [i.image_id for i in ws.queue()][0]
    assert win.labels.image_id == top and calls == [("default", 50)]
    assert set(ws.current_labels()) == {picked[0], picked[1]}
    assert not _open_dialogs()
