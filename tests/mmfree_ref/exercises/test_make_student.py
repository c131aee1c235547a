"""make_student (mmfree_ref/exercises/make_student.py): the student notebook is the solution with
each solution block replaced by one stub line, and the command line writes, checks and refuses in
the words given here. A lecturer reads these messages; each is compared in full."""
import pytest

from mmfree_ref.exercises.make_student import BEGIN, END, STUB, main, pairs, student_version

SOLUTION = ("# %% [markdown]\n"
            "# Write f.\n"
            "def f(x):\n"
            "    \"\"\"Doc.\"\"\"\n"
            "    # BEGIN SOLUTION\n"
            "    y = x + 1\n"
            "    return y\n"
            "    # END SOLUTION\n"
            "\n"
            "def g():\n"
            "\t\t# BEGIN SOLUTION   \n"
            "\t\treturn 2\n"
            "  # END SOLUTION\n"
            "check(f)\n")


def test_student_version_replaces_each_block_by_a_stub_at_its_indentation():
    assert BEGIN == "# BEGIN SOLUTION" and END == "# END SOLUTION"
    assert STUB == ('raise NotImplementedError("Exercise: write this part, then run the grader '
                    'below")')
    assert student_version(SOLUTION) == ("# %% [markdown]\n"
                                         "# Write f.\n"
                                         "def f(x):\n"
                                         "    \"\"\"Doc.\"\"\"\n"
                                         f"    {STUB}\n"
                                         "\n"
                                         "def g():\n"
                                         f"\t\t{STUB}\n"
                                         "check(f)\n")


def test_student_version_keeps_the_line_endings_and_a_last_line_without_newline():
    text = "a\r\n# BEGIN SOLUTION\r\nb\r\n# END SOLUTION\r\nc"
    assert student_version(text) == f"a\r\n{STUB}\nc"


@pytest.mark.parametrize("text, message", [
    ("x = 1\n",
     "nb.py: no # BEGIN SOLUTION ... # END SOLUTION block: nothing for the student to do"),
    ("x\n# BEGIN SOLUTION\nx\n", "nb.py: a # BEGIN SOLUTION block is never closed"),
    ("x\n\n# END SOLUTION\n", "nb.py:3: # END SOLUTION without a # BEGIN SOLUTION before it"),
    ("# BEGIN SOLUTION\n# END SOLUTION\n# END SOLUTION\n",
     "nb.py:3: # END SOLUTION without a # BEGIN SOLUTION before it"),
    ("# BEGIN SOLUTION\nx\n  # BEGIN SOLUTION\n",
     "nb.py:3: # BEGIN SOLUTION inside another solution block"),
])
def test_student_version_names_the_file_and_line_of_a_broken_marker(text, message):
    with pytest.raises(ValueError) as err:
        student_version(text, "nb.py")
    assert str(err.value) == message


def test_student_version_names_a_solution_by_default():
    with pytest.raises(ValueError) as err:
        student_version("x\n")
    assert str(err.value).startswith("<solution>: no # BEGIN SOLUTION")


def _exercises(tmp_path, names=("01_a.py", "02_b.py")):
    (tmp_path / "solutions").mkdir()
    for name in names:
        (tmp_path / "solutions" / name).write_text(SOLUTION)
    return tmp_path


def test_pairs_lists_the_numbered_solutions_in_order(tmp_path):
    d = _exercises(tmp_path, ("02_b.py", "01_a.py", "notes.py", "03_c.txt"))
    assert pairs(d) == [(d / "solutions" / "01_a.py", d / "01_a.py"),
                        (d / "solutions" / "02_b.py", d / "02_b.py")]
    assert pairs(str(d)) == pairs(d)


def test_pairs_refuses_a_folder_without_solutions(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "notes.py").write_text("")
    with pytest.raises(ValueError) as err:
        pairs(tmp_path)
    assert str(err.value) == f"{tmp_path / 'solutions'}: no solution notebooks (NN_name.py) found"


def test_main_writes_the_stale_student_versions_and_says_which(tmp_path, capsys):
    d = _exercises(tmp_path, ("01_a.py", "02_b.py", "03_c.py"))
    (d / "01_a.py").write_text(student_version(SOLUTION))         # already up to date
    (d / "02_b.py").write_text("an old version\n")
    assert main(["--dir", str(d)]) == 0
    assert capsys.readouterr().out == f"wrote {d / '02_b.py'}\nwrote {d / '03_c.py'}\n"
    for name in ("01_a.py", "02_b.py", "03_c.py"):
        assert (d / name).read_text() == student_version(SOLUTION)
    assert main(["--dir", str(d)]) == 0 and capsys.readouterr().out == ""


def test_main_names_the_solution_with_a_broken_marker(tmp_path):
    d = _exercises(tmp_path)
    (d / "solutions" / "02_b.py").write_text("x\n# END SOLUTION\n")
    with pytest.raises(ValueError) as err:
        main(["--dir", str(d)])
    assert str(err.value) == (f"{d / 'solutions' / '02_b.py'}:2: # END SOLUTION without a "
                              "# BEGIN SOLUTION before it")


def test_main_check_writes_nothing_and_names_every_stale_file(tmp_path, capsys):
    d = _exercises(tmp_path)
    (d / "02_b.py").write_text("an old version\n")
    assert main(["--dir", str(d), "--check"]) == 1
    assert capsys.readouterr().out == (
        "out of date (run python -m mmfree_ref.exercises.make_student): "
        f"{d / '01_a.py'}, {d / '02_b.py'}\n")
    assert not (d / "01_a.py").exists() and (d / "02_b.py").read_text() == "an old version\n"


def test_main_reads_notebooks_exercises_by_default(tmp_path, monkeypatch, capsys):
    (tmp_path / "notebooks" / "exercises").mkdir(parents=True)
    _exercises(tmp_path / "notebooks" / "exercises", ("01_a.py",))
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    assert capsys.readouterr().out == "wrote notebooks/exercises/01_a.py\n"


def test_main_help_says_what_each_option_does(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("Make the student version of each exercise notebook from the lecturer's solution "
            "version.") in out
    assert ("--dir DIR the exercises folder, holding solutions/ (default: notebooks/exercises)"
            in out)
    assert "--check write nothing; exit 1 if a student version is out of date" in out
