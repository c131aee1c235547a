"""Make the student version of each exercise notebook from the lecturer's solution version.

The lecturer edits only notebooks/exercises/solutions/NN_name.py (jupytext percent format). In
those files each piece of the answer sits between two marker lines:

        # BEGIN SOLUTION
        scale = 1 / max(np.mean(np.abs(w)), 1e-5)
        ...
        # END SOLUTION

The student version notebooks/exercises/NN_name.py is the same file with every such block
replaced by one line, `raise NotImplementedError("Exercise: ...")`, at the indentation of the
BEGIN marker. Everything else (the text, the stub's signature and docstring, the grader call) is
shared, so the two versions cannot drift; tests/mmfree_ref/exercises/test_graders.py checks that the
committed student files equal what this script makes.

    python -m mmfree_ref.exercises.make_student            # write the student versions
    python -m mmfree_ref.exercises.make_student --check    # exit 1 if any is out of date
"""
import argparse
import sys
from pathlib import Path

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: write this part, then run the grader below")'


def student_version(text, name="<solution>"):
    """The solution notebook's text -> the student notebook's text (solution blocks replaced)."""
    out, inside, found = [], False, False
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{name}:{n}: {BEGIN} inside another solution block")
            inside = found = True
            out.append(line[:len(line) - len(line.lstrip())] + STUB + "\n")
        elif marker == END:
            if not inside:
                raise ValueError(f"{name}:{n}: {END} without a {BEGIN} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{name}: a {BEGIN} block is never closed")
    if not found:
        raise ValueError(f"{name}: no {BEGIN} ... {END} block: nothing for the student to do")
    return "".join(out)


def pairs(exercises_dir):
    """[(solution path, student path)] for every solution notebook in exercises_dir/solutions."""
    exercises_dir = Path(exercises_dir)
    solutions = sorted((exercises_dir / "solutions").glob("[0-9]*.py"))
    if not solutions:
        raise ValueError(f"{exercises_dir / 'solutions'}: no solution notebooks (NN_name.py) found")
    return [(s, exercises_dir / s.name) for s in solutions]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="notebooks/exercises",
                        help="the exercises folder, holding solutions/ (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a student version is out of date")
    args = parser.parse_args(argv)
    stale = []
    for solution, student in pairs(args.dir):
        text = student_version(solution.read_text(), str(solution))
        if student.exists() and student.read_text() == text:
            continue
        stale.append(student)
        if not args.check:
            student.write_text(text)
            print(f"wrote {student}")
    if args.check and stale:
        print("out of date (run python -m mmfree_ref.exercises.make_student): "
              + ", ".join(map(str, stale)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
