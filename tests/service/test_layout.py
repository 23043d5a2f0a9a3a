"""Architecture rules that keep the parts deployable apart."""

from __future__ import annotations

import subprocess
import sys

from tests.service.conftest import ROOT


def test_api_and_worker_entry_points_import_no_torch():
    code = ("import sys; import api.main, api.routes.jobs, worker.app, worker.tasks; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_production_refuses_the_embedded_secret():
    code = "from core.settings import Settings; Settings(mode='production')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "LORABAKE_SECRET_KEY" in out.stderr
