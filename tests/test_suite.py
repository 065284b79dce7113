"""The suite's own machinery: `make test` spreads the tests over xdist workers with `--dist loadgroup`, and the
slow fixtures (a tiny reproduce, a quick classifier) are built once because the tests that take them share an
`xdist_group`.  pytest 9.2 silently stopped honouring the groups (pytest-dev/pytest-xdist#1386), which cost
minutes without failing anything: this test fails instead."""

import subprocess
import sys


def test_tests_of_one_xdist_group_run_in_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(
        "import os\nimport pytest\n\n"
        + "".join(f"@pytest.mark.xdist_group('g')\ndef test_{i}():\n"
                  f"    open('{tmp_path}/w{i}', 'w').write(os.environ['PYTEST_XDIST_WORKER'])\n\n" for i in range(4)))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p",
                           "no:cacheprovider", str(tmp_path / "test_grouped.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {(tmp_path / f"w{i}").read_text() for i in range(4)}
    assert len(workers) == 1, f"one xdist group ran in workers {sorted(workers)}: pin a pytest that keeps groups"
