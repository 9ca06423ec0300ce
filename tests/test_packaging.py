"""`pip install .` gives `import effattn` and nothing else at the top level of site-packages."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_pip_install_gives_effattn_outside_the_repo_and_no_generic_names(tmp_path):
    # a copy of the whole tree (without .git and the venv), because setuptools leaves build/ and
    # *.egg-info beside the source it builds, and the checkout must stay clean
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "data", "__pycache__"))
    target = tmp_path / "site"
    # --no-deps: the venv running the tests already has torch and transformers; what is checked
    # here is what the project itself installs. --no-build-isolation: setuptools from this venv,
    # so the test needs no registry.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, cwd=tmp_path)
    top_level = {path.name for path in target.iterdir() if not path.name.endswith((".dist-info", ".egg-info"))}
    assert top_level == {"effattn"}
    probe = ("import effattn, torch; "
             "a = torch.softmax(torch.randn(1, 2, 40, 40, dtype=torch.float64), -1); "
             "v = torch.randn(1, 2, 40, 8, dtype=torch.float64); "
             "e = effattn.effective_attention(a, v); "
             "assert torch.allclose(e @ v, a @ v); print(effattn.__file__)")
    # cwd outside the repo and the repo off sys.path: the import can only come from the install
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, check=True)
    assert Path(result.stdout.strip()).is_relative_to(target)
