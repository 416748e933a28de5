"""Study folders are their owner's alone: the study root and the study folder that hpo makes
are 0700 (a journal, best.yaml, Ray's state and the lock's pid inside)."""

from __future__ import annotations

import stat

from hpo.study.lock import StudyLock, private_folder


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_study_root_and_folder_hpo_makes_are_0700(tmp_path):
    folder = tmp_path / "runs" / "deeper" / "digits"
    with StudyLock(folder) as lock:
        assert mode(folder) == mode(folder.parent) == mode(tmp_path / "runs") == 0o700
        assert mode(lock.path) == 0o600


def test_a_folder_already_there_keeps_its_mode(tmp_path):
    root = tmp_path / "runs"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    private_folder(root / "study")
    assert mode(root) == 0o755 and mode(root / "study") == 0o700


def test_two_makers_of_one_folder_do_not_collide(tmp_path):
    private_folder(tmp_path / "a" / "b")
    private_folder(tmp_path / "a" / "b")  # there already: no error
    assert mode(tmp_path / "a" / "b") == 0o700
