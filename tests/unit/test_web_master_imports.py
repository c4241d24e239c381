"""What gunicorn's master imports before it forks gevent workers.

psycopg chooses how it waits on the network when it is first imported: imported
in the master, before a gevent worker patches sockets, it would block the whole
worker on every query, and one slow /api call would hold every delivery in that
process. The master imports ``receiver.gunicorn_conf`` (and so the ``receiver``
package); nothing it imports may import psycopg.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT


def test_the_web_master_does_not_import_psycopg():
    probe = "import sys, receiver.gunicorn_conf; print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'gevent')))"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    found = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stdout
