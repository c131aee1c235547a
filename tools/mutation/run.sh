#!/usr/bin/env bash
# Mutation testing of the CPU packages with mutmut 3, one module group at a time.
#
#   tools/mutation/run.sh GROUP            fresh scratch copy, then `mutmut run` (one worker)
#   tools/mutation/run.sh GROUP retest     the mutants the last run did not kill, again, on a
#                                          fresh copy (after adding tests: shows they die now)
#   tools/mutation/run.sh GROUP ARGS...    any other mutmut command in that group's scratch copy,
#                                          e.g. `results`, `show NAME`, `run NAME...` (re-run
#                                          some), `run --max-children 1` (resume a stopped run)
#
# GROUP is one of the files tools/mutation/GROUP.cfg (oracle, config, sampling, graders, formats,
# fpga; fpga's parts: fpga_cycles, fpga_datapath, fpga_engine, fpga_memory, fpga_rest).
# The scratch copy lives in ${MUTATION_DIR:-/tmp/mmfree-mutation}/GROUP, so mutmut's mutants/
# folder and its result files never enter the working tree. See docs/mutation.md.
set -euo pipefail

group=${1:?usage: tools/mutation/run.sh GROUP [mutmut args...]}
shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
cfg="$repo/tools/mutation/$group.cfg"
[[ -f $cfg ]] || { echo "no such group: $group (no $cfg)" >&2; exit 2; }
command -v mutmut >/dev/null || { echo "mutmut not found: pip install 'mutmut==3.8.1' into the venv" >&2; exit 2; }
work=${MUTATION_DIR:-/tmp/mmfree-mutation}/$group

retest=()
if [[ ${1-} == retest ]]; then
    # adding tests cannot revive a killed mutant, so only the others need running again
    # (and the ones a previous retest left unchecked are the ones it did not need to run)
    (cd "$work" && mutmut results --all true) > "$work.before-retest.txt"
    retest=($(awk -F: '!/: (killed|not checked)$/ {gsub(/ /, "", $1); print $1}' \
              "$work.before-retest.txt"))
    [[ ${#retest[@]} -gt 0 ]] || { echo "nothing to retest in $work" >&2; exit 2; }
    shift
fi
if [[ $# -eq 0 ]]; then
    # a fresh copy each full run: mutmut keeps a mutated file whose copy already exists, so a
    # source edited since the last run would otherwise be tested as it was
    rm -rf "$work"
    mkdir -p "$work/notebooks"
    cp -r "$repo/mmfree_ref" "$repo/fpga_model" "$repo/tests" "$repo/pyproject.toml" "$work/"
    # the graders' tests read the exercise solutions from notebooks/exercises
    cp -r "$repo/notebooks/exercises" "$work/notebooks/"
    find "$work" -name __pycache__ -prune -exec rm -rf {} +
    cp "$cfg" "$work/setup.cfg"
    set -- run --max-children "${MUTATION_JOBS:-1}" "${retest[@]}"
fi
cd "$work"
# the examples of the fast "ci" profile of tests/conftest.py, without shrinking (see
# hypothesis_profile.py), and a tqdm lock that is not shared by the forked children (see
# fork_safe_tqdm.py); PYTEST_PLUGINS leaves mutmut's own pytest arguments alone; -n 0: the
# tests in mutmut's own process (pyproject.toml's addopts spread them over xdist workers,
# where mutmut would not see which tests call a mutated function)
export PYTHONPATH="$repo/tools/mutation${PYTHONPATH:+:$PYTHONPATH}"
export PYTEST_ADDOPTS="-n 0${PYTEST_ADDOPTS:+ $PYTEST_ADDOPTS}"
export PYTEST_PLUGINS=hypothesis_profile,fork_safe_tqdm
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-mutation}
exec mutmut "$@"
