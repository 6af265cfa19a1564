# Runs in the jobs workspace: its folder, its secret.
test "$CH_PASSWORD" = "jobs-only-password" || { echo "not the owner's secret" >&2; exit 3; }
test -f scripts/recalc.sh || { echo "not in the owner's folder" >&2; exit 4; }
echo "OUTPUT: {\"recalculated\": \"$DATASET/$PERIOD\"}"
