"""Which modules may import which: the loop's pieces stay apart."""

from __future__ import annotations

import json
import subprocess
import sys

# Module -> the cl_bayes modules it must not import, directly or through others.
FORBIDDEN = {
    "cl_bayes.training": ["cl_bayes.methods", "cl_bayes.run"],
    "cl_bayes.report": ["cl_bayes.run", "cl_bayes.training", "cl_bayes.methods"],
    "cl_bayes.scenario": ["cl_bayes.methods", "cl_bayes.run"],
    "cl_bayes.data": ["cl_bayes.methods", "cl_bayes.run", "cl_bayes.scenario"],
}

# In one fresh interpreter: each module imported with no cl_bayes module loaded before it
# (third-party packages stay loaded, which changes nothing here and saves the time).
SCRIPT = """
import importlib, json, sys
loaded = {}
for module in json.loads(sys.argv[1]):
    for name in [m for m in sys.modules if m == "cl_bayes" or m.startswith("cl_bayes.")]:
        del sys.modules[name]
    importlib.import_module(module)
    loaded[module] = sorted(m for m in sys.modules if m.startswith("cl_bayes."))
print(json.dumps(loaded))
"""


def test_no_module_imports_the_layers_above_it():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(list(FORBIDDEN))],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(proc.stdout)
    for module, forbidden in FORBIDDEN.items():
        imported = [m for m in loaded[module] if m.startswith(tuple(forbidden))]
        assert imported == [], f"{module} imports {', '.join(imported)}"
    assert "cl_bayes.record" in loaded["cl_bayes.report"]  # the check sees real imports


def test_the_command_line_and_the_report_start_without_torchvision():
    # torchvision imports torch._dynamo (about 2 s); only reading a data set needs it.
    script = (
        "import sys, cl_bayes.__main__, cl_bayes.report, cl_bayes.run, cl_bayes.data;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"
