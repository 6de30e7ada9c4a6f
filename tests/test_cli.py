import subprocess
import sys

from gradviz import cli


def test_gradviz_without_arguments_runs_the_seed_example(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    steps = [line.split()[1] for line in out.splitlines() if line.strip()[:2] in {f"{i}." for i in range(1, 7)}]
    assert steps == ["SubBackward0", "PowBackward0", "AccumulateGrad(b)", "MulBackward0", "PowBackward0",
                     "AccumulateGrad(a)"]
    assert "a.grad = tensor([36., 81.])" in out
    assert "b.grad = tensor([-12., -8.])" in out


def test_gradviz_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "gradviz.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("gradviz ")
