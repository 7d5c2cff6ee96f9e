# Shared by the shell wrappers (source it before anything runs): their command-line behaviour.
#   wrapper_args MIN MAX "$@"   -h/--help: print the usage (the wrapper's header comment and its settings), exit 0;
#                               an unknown option or a wrong number of arguments: the usage and exit 2
#   require_dir DIR WHAT        DIR must be a folder, else one line, the usage and exit 2

wrapper_usage() {
  local script="$0"
  sed -n '2,/^[^#]/{/^#SBATCH/d;/^#/s/^# \{0,1\}//p}' "$script"
  echo
  echo "Settings (environment variables, defaults in brackets):"
  sed -n 's/^\([A-Z_][A-Z_0-9]*\)=\${[A-Z_0-9]*:-\(.*\)} *# *\(.*\)$/  \1 [\2]: \3/p' "$script" | sed 's/\[""\]/[]/; s/\["\(.*\)"\]/[\1]/'
}

wrapper_args() {
  local min="$1" max="$2" arg
  shift 2
  for arg in "$@"; do
    case "$arg" in
      -h|--help) wrapper_usage; exit 0 ;;
      -*) echo "error: unknown option $arg" >&2; wrapper_usage >&2; exit 2 ;;
    esac
  done
  if [ "$#" -lt "$min" ] || [ "$#" -gt "$max" ]; then
    echo "error: expected $min to $max arguments, got $#" >&2
    wrapper_usage >&2
    exit 2
  fi
}

require_dir() {
  if [ ! -d "$1" ]; then
    echo "error: $2 $1: folder not found" >&2
    wrapper_usage >&2
    exit 2
  fi
}
