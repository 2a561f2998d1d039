"""A reader process for the double-reading tests: ``python -m tests.core.double_reader WS NAME ANSWERS.json``.

Reads the workspace's queue as ``NAME`` sees it (cases it has not read yet), labels each with the
class ``ANSWERS.json`` gives for that image id, and prints how many it read. Each label is committed
before the next case is fetched, exactly as a reader at a workstation works.
"""

from __future__ import annotations

import json
import sys


def main(workspace: str, name: str, answers_path: str) -> int:
    from core.workspace import Workspace

    with open(answers_path) as fh:
        answers = json.load(fh)
    done = 0
    with Workspace.open(workspace, timeout=60) as ws:
        while True:
            items = ws.reading_queue(name, 1)
            if not items:
                break
            image_id = items[0].image_id
            ws.add_label(image_id, answers[image_id], name)
            ws.dequeue(image_id)
            done += 1
    print(done)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
