#!/bin/sh
# sim_sweep.sh SEEDS EXE CHECK [EXE CHECK ...] — the full sweep of the
# simulation's mutants (meson.build, sim_mutants): every seed 1..SEEDS of
# each mutant, not only up to the first catch, and a Markdown table of how
# many seeds its named check caught, how many another check caught first,
# and the catch rate. A mutant whose check catches fewer than 1% of the
# seeds is a weak catch (tests/mutants/README.md); the sweep then fails.
# Run: meson test -C build --suite simsweep --verbose (about 5 min of CPU
# at 2,000 seeds; not part of scripts/test). Figures: docs/perf/sim-mutants.md.
seeds=$1
shift
weak=0
printf '| mutant | check | caught | other check first | rate |\n| --- | --- | --- | --- | --- |\n'
while [ $# -ge 2 ]; do
	exe=$1 check=$2
	shift 2
	case $exe in */*) ;; *) exe=./$exe ;; esac
	line=$(KEEL_SIM_KEEP_GOING=1 "$exe" --expect-violation --check "$check" \
		--seeds "1:$((seeds + 1))" 2>/dev/null | grep "check '$check'")
	caught=$(echo "$line" | sed -n 's/.*caught in \([0-9]*\) seeds.*/\1/p')
	other=$(echo "$line" | sed -n 's/.*other checks in \([0-9]*\).*/\1/p')
	name=$(basename "$exe" | sed 's/^mutant-sim-//')
	rate=$(awk -v c="${caught:-0}" -v n="$seeds" 'BEGIN { printf "%.1f%%", 100 * c / n }')
	printf '| %s | %s | %s | %s | %s |\n' "$name" "$check" "${caught:-?}" "${other:-?}" "$rate"
	if [ -z "$caught" ] || [ $((caught * 100)) -lt "$seeds" ]; then
		weak=$((weak + 1))
	fi
done
if [ "$weak" -gt 0 ]; then
	echo "sim_sweep.sh: $weak mutant(s) caught in fewer than 1% of the seeds" >&2
	exit 1
fi
