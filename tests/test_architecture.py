"""The layering of shared/DESIGN.md, checked on the code itself."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["detection", "llm_verify", "reviews", "active_learning"]
HEAVY = {"torch", "open_clip", "pytorch_grad_cam", "transformers", "sentence_transformers", "modAL", "faiss", "tritonclient"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_apps_import_only_their_own_and_lower_layers():
    problems = []
    for level, app in enumerate(LAYERS):
        higher = set(LAYERS[level + 1:])
        for path in (ROOT / app).rglob("*.py"):
            bad = imports_of(path) & higher
            if bad:
                problems.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not problems, problems


def test_heavy_libraries_only_in_modules_without_django():
    problems = []
    for app in LAYERS:
        for path in (ROOT / app).rglob("*.py"):
            names = imports_of(path)
            if names & HEAVY and "django" in names:
                problems.append(str(path.relative_to(ROOT)))
            if names & HEAVY and not str(path.relative_to(ROOT)).startswith(("detection/ml/", "llm_verify/", "active_learning/ml")):
                problems.append(f"{path.relative_to(ROOT)} imports a heavy library outside the edge modules")
    assert not problems, problems


def test_the_web_process_starts_without_torch():
    code = (
        "import os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'moderation_portal.settings');"
        "import django; django.setup();"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import moderation_portal.asgi;"
        f"heavy = sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules); print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
