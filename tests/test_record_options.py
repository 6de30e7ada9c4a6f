"""``gradviz record SCRIPT ARGS -o X --values summaries``: options after the script are the
script's, and gradviz says where its own go (issue 19, item 10)."""
from gradviz import cli


def test_gradviz_options_after_the_script_are_explained(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    out = tmp_path / "x.gvz"
    code = cli.main(["record", str(script), "--epochs", "2", "-o", str(out), "--values", "summaries"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "gradviz's options go before the script" in err
    assert f"gradviz record -o {out} --values summaries {script} --epochs 2" in err


def test_no_output_at_all_still_asks_for_one(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    assert cli.main(["record", str(script), "--epochs", "2"]) == 2
    assert "give the trace file with -o TRACE.gvz" in capsys.readouterr().err
