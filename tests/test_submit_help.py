"""``steerboard submit check --help`` says what it takes: a run folder or a method name."""

from __future__ import annotations

import pytest

from steerboard.cli import main


def test_submit_check_help_names_folder_and_method(capsys) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["submit", "check", "--help"])
    assert ex.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "DIR|METHOD" in out
    assert "a run folder, or a method's run under logs/" in out
    assert "the name of an installed method: its one run under logs/ is checked" in out


def test_submit_group_help_lists_both(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a run folder, or a method's run under logs/" in out
