# Shared by the pipeline wrappers (source it): run numbered steps, go on past exit 1 (some records failed),
# stop at exit 2 or more (a fatal input), and end with a summary of the steps and the worst exit code.
WORST=0
SUMMARY=()

step() {  # step NAME COMMAND...
  local name="$1" code=0
  shift
  echo "== $name"
  "$@" || code=$?
  SUMMARY+=("$name: exit $code")
  if [ "$code" -gt "$WORST" ]; then WORST=$code; fi
  if [ "$code" -ge 2 ]; then
    echo "stopped at $name (exit $code): fix the input it names, then rerun (finished steps resume)" >&2
    finish
  fi
}

finish() {
  echo "== summary"
  printf '  %s\n' "${SUMMARY[@]}"
  exit "$WORST"
}
