"""Graders for the classroom exercises in notebooks/exercises/.

Each `check_...(fn)` runs a student's function against the oracle (mmfree_ref) on fixed awkward
cases and on cases drawn by hypothesis, prints in plain words which case failed and how (or that
all passed), and returns True when every case passed:

    from mmfree_ref.exercises import check_absmean_ternary
    check_absmean_ternary(my_absmean_ternary)

The student versions of the notebooks are generated from the lecturer's solutions by
`python -m mmfree_ref.exercises.make_student` (see make_student.py).
"""
from . import _grading  # noqa: F401  (first: it says clearly when hypothesis is missing)
from mmfree_ref.exercises.bitlinear import check_bitlinear_backward, check_ternary_accumulate
from mmfree_ref.exercises.mlgru import check_mlgru_scan_parallel, check_mlgru_step
from mmfree_ref.exercises.packing import check_pack_ternary
from mmfree_ref.exercises.quantizers import check_absmax_int8, check_absmean_ternary

__all__ = ["check_absmax_int8", "check_absmean_ternary", "check_bitlinear_backward",
           "check_mlgru_scan_parallel", "check_mlgru_step", "check_pack_ternary",
           "check_ternary_accumulate"]
