"""Running `loupe` in-process in tests."""

from app.cli import main


def run(capsys, *argv):
    """Run one `loupe` command; returns (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
