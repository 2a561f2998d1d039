"""Concurrent writers: threads sharing one Workspace, and separate processes on one file."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

from core.types import ImageRecord
from core.workspace import Workspace

PER_WRITER = 25


def records(n: int) -> list[ImageRecord]:
    return [ImageRecord(key=f"1.9.{i}", path=f"/data/{i}.dcm", kind="dicom", modality="CR", rows=4, columns=4)
            for i in range(n)]


def _write_labels(ws: Workspace, image_ids: list[str], annotator: str) -> None:
    for i in range(PER_WRITER):
        ws.add_label(image_ids[i % len(image_ids)], [f"class{i % 3}"], annotator)


def test_threads_sharing_a_workspace_lose_no_label(workspace):
    ids, _ = workspace.add_images(records(4))
    start = threading.Barrier(4)
    errors: list[BaseException] = []
    connections: list = []  # keep the objects alive so their ids stay distinct

    def worker(name: str) -> None:
        try:
            start.wait()
            connections.append(workspace._pool.get())
            _write_labels(workspace, ids, name)
            workspace.set_setting(f"seen.{name}", True)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            workspace.release_thread()

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len({id(db) for db in connections}) == 4  # one connection per thread
    assert workspace.label_count() == 4 * PER_WRITER
    history = [label for image_id in ids for label in workspace.label_history(image_id)]
    assert Counter(label.annotator for label in history) == {f"t{n}": PER_WRITER for n in range(4)}
    assert len({label.id for label in history}) == 4 * PER_WRITER
    assert all(workspace.get_setting(f"seen.t{n}") for n in range(4))
    assert workspace.verify_audit() == (True, None)


def _process_writer(path: str, image_ids: list[str], annotator: str, start) -> None:
    with Workspace.open(path) as ws:
        start.wait()
        _write_labels(ws, image_ids, annotator)


def test_processes_sharing_a_file_lose_no_label(workspace):
    ids, _ = workspace.add_images(records(3))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_process_writer, args=(str(workspace.path), ids, f"p{n}", start)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert workspace.label_count() == 3 * PER_WRITER
    labels = [label for image_id in ids for label in workspace.label_history(image_id)]
    assert Counter(label.annotator for label in labels) == {f"p{n}": PER_WRITER for n in range(3)}
    assert workspace.verify_audit() == (True, None)  # the hash chain stayed linear across processes
    assert workspace.integrity_check()
